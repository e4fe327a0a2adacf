"""What the user sees while a run goes and when it ends (hooks into the Runner).

Three modes, picked from where stderr goes:

- a terminal: a `rich` live display (bar, done / total, %, req/s, tok/s, in flight,
  retries, 429s, failures, cost so far, ETA);
- anything else (CI, nohup, a log file): one plain line every
  ``--progress-interval`` seconds with the same figures;
- ``--quiet``: nothing but errors.

The hot path pays nothing per request: figures are *read* from the run's state
(``counts``, ``tally``, ``live``, ``pacer.stats``, ``cost_so_far``) at a fixed rate,
never pushed. The live display is redrawn by rich's own refresh thread (4 per
second). Plain lines are due by the clock; `on_written` (once per write batch, not
per request) checks it, and a watchdog thread checks it too, so a run that is
stalled on 429s or slow requests still logs that it is alive. Reading ints written
by the event loop from another thread is safe in CPython; a render that trips on a
half-updated structure shows the previous frame.

At the end the report of batchrun._report.text is printed (counts, usage, cost per model,
throughput, latency percentiles, retry and error breakdown, files written).

    >>> hooks = make_hooks(cfg)                     # doctest: +SKIP
    >>> Runner(cfg, hooks=hooks)                    # doctest: +SKIP
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from batchrun._engine.hooks import RunHooks, RunState
from batchrun._redact import scrub_text
from batchrun._report.tables import format_usd
from batchrun._report.text import format_duration, format_status, run_report
from batchrun._settings import Settings

Clock = Callable[[], float]
REFRESH_PER_SECOND = 4
RATE_WINDOW_S = 30.0


# ---------------------------------------------------------------- figures (pure)


@dataclass(frozen=True)
class Snapshot:
    """The figures shown at one moment. Built by `ProgressState.snapshot`.

    ``done`` = succeeded + failed, resumed rows included. Rates and ``elapsed_s``
    are this process's (summary.json's ``elapsed_s`` adds earlier processes).
    """

    done: int
    total: int
    succeeded: int
    failed: int
    in_flight: int
    retries: int
    rate_limited: int
    tokens: int
    requests_per_s: float
    tokens_per_s: float
    elapsed_s: float
    cost_usd: float | None
    stopping: str | None = None
    concurrency_limit: int | None = None
    """The pacer's current cap on requests in flight (lowered after 429s)."""

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done)

    @property
    def percent(self) -> float:
        return 100.0 * self.done / self.total if self.total else 100.0

    @property
    def eta_s(self) -> float | None:
        """Seconds left at the recent rate; None while nothing has finished yet."""
        if self.pending == 0:
            return 0.0
        if self.requests_per_s <= 0:
            return None
        return self.pending / self.requests_per_s


class RateMeter:
    """Requests and tokens per second over the last ``window`` seconds.

    Fed one sample per display refresh (a few a second), not per request.

        >>> m = RateMeter()
        >>> m.add(0.0, 0, 0)
        (0.0, 0.0)
        >>> m.add(2.0, 10, 500)
        (5.0, 250.0)
    """

    def __init__(self, window: float = RATE_WINDOW_S) -> None:
        self.window = window
        self.samples: deque[tuple[float, int, int]] = deque()

    def add(self, now: float, done: int, tokens: int) -> tuple[float, float]:
        self.samples.append((now, done, tokens))
        # keep the newest sample that is at least `window` old as the base
        while len(self.samples) > 2 and now - self.samples[1][0] >= self.window:
            self.samples.popleft()
        t0, done0, tokens0 = self.samples[0]
        span = now - t0
        if span <= 0:
            return 0.0, 0.0
        return (done - done0) / span, (tokens - tokens0) / span


class ProgressState:
    """Reads a run's live figures into Snapshots; counts retries as they happen.

    The run's tally counts retries and 429s of *written* requests; a storm of
    429s on requests still retrying would show late. So retries are counted in
    `on_retry` and 429s read from the pacer, both added to what earlier processes
    of this run had written.
    """

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.started = 0.0
        self.retries_before = 0
        self.rate_limited_before = 0
        self.retries_seen = 0
        self.meter = RateMeter()
        self._lock = threading.Lock()
        self._last: Snapshot | None = None

    def start(self, state: RunState) -> None:
        self.started = self.clock()
        self.retries_before = state.tally.retries
        self.rate_limited_before = state.tally.rate_limited
        counts = state.counts
        self.meter.add(
            self.started, counts.succeeded + counts.failed, state.tally.usage.total.total_tokens
        )

    def snapshot(self, state: RunState) -> Snapshot:
        """Current figures (thread-safe). Falls back to the last good one on a race."""
        with self._lock:
            try:
                snap = self._read(state)
            except (RuntimeError, AttributeError, TypeError, ValueError):
                if self._last is None:
                    raise
                return self._last
            self._last = snap
            return snap

    def _read(self, state: RunState) -> Snapshot:
        now = self.clock()
        counts = state.counts
        done = counts.succeeded + counts.failed
        tokens = state.tally.usage.total.total_tokens
        req_rate, tok_rate = self.meter.add(now, done, tokens)
        cost = state.figures.get("cost_usd")
        return Snapshot(
            done=done,
            total=counts.total,
            succeeded=counts.succeeded,
            failed=counts.failed,
            in_flight=state.in_flight,
            retries=self.retries_before + self.retries_seen,
            rate_limited=self.rate_limited_before + state.rate_limited,
            tokens=tokens,
            requests_per_s=req_rate,
            tokens_per_s=tok_rate,
            elapsed_s=now - self.started,
            cost_usd=None if cost is None else float(cost),
            stopping=state.stop_reason,
            concurrency_limit=state.concurrency_limit,
        )


def _cost(value: float | None) -> str:
    return "n/a" if value is None else format_usd(value)


def _in_flight(snap: Snapshot) -> str:
    if snap.concurrency_limit is None:
        return f"{snap.in_flight:,}"
    return f"{snap.in_flight:,}/{snap.concurrency_limit:,}"


def _eta(snap: Snapshot) -> str:
    eta = snap.eta_s
    return "-" if eta is None else format_duration(eta)


def format_line(snap: Snapshot) -> str:
    """One plain progress line (logs, CI).

    >>> snap = Snapshot(50, 200, 48, 2, 8, 3, 1, 9000, 2.5, 450.0, 20.0, None)
    >>> print(format_line(snap))  # doctest: +NORMALIZE_WHITESPACE
    batchrun: 50/200 (25.0%) | 2.50 req/s, 450 tok/s | in flight 8 | retries 3, 429s 1 |
    failed 2 | cost n/a | elapsed 20.0 s | ETA 0:01:00
    """
    line = (
        f"batchrun: {snap.done:,}/{snap.total:,} ({snap.percent:.1f}%) | "
        f"{snap.requests_per_s:,.2f} req/s, {snap.tokens_per_s:,.0f} tok/s | "
        f"in flight {_in_flight(snap)} | retries {snap.retries:,}, 429s {snap.rate_limited:,} | "
        f"failed {snap.failed:,} | cost {_cost(snap.cost_usd)} | "
        f"elapsed {format_duration(snap.elapsed_s)} | ETA {_eta(snap)}"
    )
    if snap.stopping:
        line += f" | stopping ({snap.stopping})"
    return line


def render_snapshot(snap: Snapshot) -> RenderableType:
    """The live display for one snapshot: a bar line and a figures line."""
    bar = Table.grid(padding=(0, 1))
    bar.add_column(width=40)
    bar.add_column()
    head = Text.assemble(
        (f"{snap.done:,}/{snap.total:,}", "bold"),
        f"  {snap.percent:5.1f}%  ETA {_eta(snap)}  elapsed {format_duration(snap.elapsed_s)}",
    )
    if snap.stopping:
        head.append(f"  stopping ({snap.stopping}): waiting for in-flight requests", "yellow")
    bar.add_row(ProgressBar(total=max(snap.total, 1), completed=snap.done, width=40), head)
    figures = Text.assemble(
        (f"{snap.requests_per_s:,.2f}", "cyan"),
        " req/s  ",
        (f"{snap.tokens_per_s:,.0f}", "cyan"),
        " tok/s  in flight ",
        (_in_flight(snap), "cyan"),
        "  retries ",
        (f"{snap.retries:,}", "yellow" if snap.retries else ""),
        "  429s ",
        (f"{snap.rate_limited:,}", "yellow" if snap.rate_limited else ""),
        "  failed ",
        (f"{snap.failed:,}", "red" if snap.failed else ""),
        "  cost ",
        (_cost(snap.cost_usd), "green"),
    )
    return Group(bar, figures)


class LiveView:
    """A renderable that reads the run each time rich draws it (its own thread)."""

    def __init__(self, progress: ProgressState, state: RunState) -> None:
        self.progress = progress
        self.state = state

    def __rich__(self) -> RenderableType:
        try:
            return render_snapshot(self.progress.snapshot(self.state))
        except Exception:  # a display must never kill rich's refresh thread
            return Text("")


# ------------------------------------------------------------------- the hooks


class ProgressHooks(RunHooks):
    """Live display or plain lines while running; the run report at the end.

    ``mode``: "live", "plain" or "quiet" (`make_hooks` picks it). ``clock`` times the
    rates and the plain-line interval; ``watchdog`` starts the thread that logs
    plain lines when no write comes for a whole interval; ``wait`` is that
    thread's sleep (``Event.wait``: True means stop), injectable for tests.
    """

    def __init__(
        self,
        cfg: Settings,
        *,
        mode: str,
        stream: TextIO | None = None,
        console: Console | None = None,
        clock: Clock = time.monotonic,
        watchdog: bool = True,
        wait: Callable[[float], bool] | None = None,
    ) -> None:
        self.cfg = cfg
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.console = console or Console(file=self.stream)
        self.progress = ProgressState(clock)
        self.interval = cfg.progress_interval
        self.watchdog = watchdog
        self.lines_written = 0
        self._state: RunState | None = None
        self._live: Live | None = None
        self._next_due = 0.0
        self._emit_lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wait = wait or self._stop.wait
        self._warned: set[tuple[str, str]] = set()

    # -- output ---------------------------------------------------------------------
    def _say(self, text: str) -> None:
        text = scrub_text(text)
        with self._emit_lock:  # the watchdog thread writes too: whole lines only
            if self.mode == "live":
                # through the console: while the display is up, rich prints above it
                self.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                self.stream.write(text + "\n")
                self.stream.flush()

    def maybe_emit(self, *, force: bool = False) -> bool:
        """Write a plain line if one is due (or ``force``). Cheap when not due."""
        run = self._run
        if run is None or self.mode != "plain":
            return False
        with self._emit_lock:
            now = self.progress.clock()
            if not force and now < self._next_due:
                return False
            self._next_due = now + self.interval
            self._say(format_line(self.progress.snapshot(run)))
            self.lines_written += 1
            return True

    def _watch(self) -> None:
        while not self._wait(self.interval):
            try:
                self.maybe_emit()
            except Exception:  # a log line must never kill the run
                pass

    # -- hooks ----------------------------------------------------------------------
    def on_start(self, state: RunState) -> None:
        if self._live is not None or self._thread is not None:
            self._close()  # a second part of one run (a deadline's online part)
        self._stop.clear()
        self._run = state
        self.progress.start(state)
        if self.mode != "quiet":
            for warning in getattr(state, "warnings", ()):
                self._say(f"batchrun: warning: {warning}")
        if self.mode == "live":
            self._live = Live(
                LiveView(self.progress, state),
                console=self.console,
                refresh_per_second=REFRESH_PER_SECOND,
                auto_refresh=True,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        elif self.mode == "plain":
            counts = state.counts
            before = counts.succeeded + counts.failed
            resumed = f" ({before:,} done before)" if before else ""
            self._say(
                f"batchrun: {counts.total:,} requests{resumed} -> {self.cfg.out_dir}; "
                f"progress every {self.interval:g} s"
            )
            self._next_due = self.progress.started + self.interval
            if self.watchdog:
                self._thread = threading.Thread(
                    target=self._watch, name="batchrun-progress", daemon=True
                )
                self._thread.start()

    def on_retry(self, state: RunState, exc: BaseException | None) -> None:
        self.progress.retries_seen += 1

    def on_written(self, state: RunState, batch: list[Any]) -> str | None:
        if self.mode == "plain":
            self.maybe_emit()
        if self.mode != "quiet":
            self._warn_about_answers(state)
        return None

    def _warn_about_answers(self, state: RunState) -> None:
        """Say once, as soon as it shows, that a share of answers is unusable."""
        from batchrun._output.quality import quality_warnings

        alerts = quality_warnings(state.tally.quality, max_tokens=state.max_tokens or None)
        for alert in alerts:
            key = (alert.model, alert.category)
            if key not in self._warned:
                self._warned.add(key)
                self._say(f"batchrun: warning: {alert.message}")

    def on_stop(self, state: RunState, reason: str) -> None:
        if reason in ("SIGINT", "SIGTERM"):
            # shown even with --quiet: the user acted and must know why nothing exits yet
            text = (
                f"batchrun: {reason}: no new requests; waiting up to "
                f"{self.cfg.drain_timeout:g} s for those in flight (Ctrl-C again to quit now)"
            )
            if self.mode == "quiet":
                self.stream.write(text + "\n")
                self.stream.flush()
            else:
                self._say(text)

    def on_abort(self, state: RunState) -> None:
        self._close()  # os._exit follows: give the terminal its cursor back

    def _close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()

    def on_end(self, state: RunState, summary: dict[str, Any]) -> list[str] | None:
        self._close()
        if self.mode == "quiet":
            return None
        if self.mode == "plain" and self._run is not None:
            self.maybe_emit(force=True)
        try:
            # the evaluation table was printed just before, by the dataset output hook
            report = run_report(state.run_dir, summary=summary)
            self._say(format_status({**report, "eval": None, "variants": None}))
        except Exception as exc:  # the run is over and its files are fine: say so, go on
            self._say(f"batchrun: could not build the run report ({exc})")
        req = summary["requests"]
        usage = summary["usage"]
        self._say(
            f"batchrun: {summary['status']}: {req['succeeded']} succeeded, {req['failed']} "
            f"failed, {req['pending']} pending of {req['total']}; "
            f"{usage['total_tokens']} tokens; results in {state.run_dir}"
        )
        note = summary.get("stop_note")
        if note:
            # why it stopped (the endpoint, the budget), for Python callers too
            self._say(f"batchrun: {note}")
        hint = _next_step(summary["status"], req["pending"], state.settings)
        if hint and not (note and summary["status"] == "endpoint_down"):  # the note says it
            self._say(f"batchrun: {hint}")
        return None


def _next_step(status: str, pending: int, settings: Settings | None = None) -> str | None:
    """What the user can do next, for each way a run can end unfinished."""
    if status == "partial":
        option = "--limit" if settings is not None and settings.limit else "--sample"
        return f"a pilot: rerun without {option} to send the other {pending:,} requests"
    if status == "budget_exceeded":
        return "only a higher --max-cost continues this run (finished rows are kept)"
    if status == "endpoint_down":
        return (
            "fix the endpoint, key or model, then rerun the same command "
            "(with --retry-failed for the rows that failed)"
        )
    if status == "disk_error":
        return "make the run directory writable again (space, permissions), then rerun"
    if status == "bad_answers":
        return "change the setting named above, then rerun with --retry-bad-answers"
    if status != "complete" and pending:
        return "rerun the same command to resume"
    return None


def pick_mode(cfg: Settings, console: Console) -> str:
    """ "quiet" with --quiet, "live" on an interactive terminal, else "plain".

    The stream itself must be a TTY: FORCE_COLOR (set by many CI systems) makes
    rich treat a pipe as a terminal, and a live display's cursor moves would litter
    the log. ``TTY_INTERACTIVE=1`` / ``=0`` (rich's convention) forces either way.
    """
    if cfg.quiet:
        return "quiet"
    if cfg.mode == "batch":
        return "plain"  # a batch's progress is a few lines a minute, not a live bar
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return "live" if forced == "1" else "plain"
    isatty = getattr(console.file, "isatty", None)
    try:
        tty = bool(isatty()) if isatty is not None else False
    except (OSError, ValueError):
        tty = False
    if tty and console.is_terminal and not console.is_dumb_terminal:
        return "live"
    return "plain"


def make_hooks(cfg: Settings) -> RunHooks:
    """The progress hooks for a CLI run: progress to stderr, mode picked from it."""
    stream = sys.stderr
    console = Console(file=stream)
    return ProgressHooks(cfg, mode=pick_mode(cfg, console), stream=stream, console=console)


__all__ = [
    "LiveView",
    "ProgressHooks",
    "ProgressState",
    "RateMeter",
    "Snapshot",
    "format_line",
    "make_hooks",
    "pick_mode",
    "render_snapshot",
]
