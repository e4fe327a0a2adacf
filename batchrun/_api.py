"""The rules of a run, for every way in: the Python API, the command line, job files.

The CLI only parses arguments; everything a run needs beyond its settings is decided
here, once: where the key comes from, what ``base_url = "sim"`` means, how a job file
and given settings merge, which hooks a run gets, where the run directory is when
none is given, how rows held in memory become a file the run can read twice, and
how a blocking call runs inside a notebook's event loop.

    run = batchrun.run(rows, "runs/labels", model="gpt-4o-mini", prompt="Label: {text}")
    run.status, run.results().num_rows
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from batchrun._endpoint import SIM
from batchrun._settings import Settings
from batchrun._values import DEFAULT_ENDPOINT
from batchrun.errors import ConfigError, MissingInput, RunDirError

if TYPE_CHECKING:
    import pyarrow as pa

    from batchrun._batch.driver import BatchDriver
    from batchrun._cost.estimate import EstimateReport
    from batchrun._engine.hooks import RunHooks
    from batchrun._engine.runner import Runner
    from batchrun._engine.stops import RunResult
    from batchrun._input.memory import Placed
    from batchrun._jobs.cascade_run import CascadeRunner
    from batchrun._jobs.jobfile import Job
    from batchrun._models import Outcome
    from batchrun._output.rundir import RunDir
    from batchrun._runfiles import RunDirLock
    from batchrun._scale.driver import RayDriver

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")
RUNS_HOME = "batchrun-runs"
"""Where run directories go when none is given (``BATCHRUN_RUNS`` overrides it)."""


# -- settings ---------------------------------------------------------------------------
def settings_for(
    input: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    job: str | os.PathLike[str] | Job | None = None,
    given: Mapping[str, Any] | None = None,
    **keywords: Any,
) -> Settings:
    """The settings of a run: defaults < job file < ``given`` (checked values: the
    command line's options) < ``keywords`` (Python keywords, checked here). The rules
    between settings are checked too (`Settings.problems`), each setting named the way
    whoever gave it spells it (``--deadline``, ``batch.deadline`` in the job file,
    ``deadline=``); every problem is a ConfigError before anything is sent."""
    from batchrun._jobs.jobfile import load_job, merge
    from batchrun._settings import SpelledAsGiven

    loaded = load_job(job) if isinstance(job, str | os.PathLike) else job
    values: dict[str, Any] = dict(loaded.values) if loaded is not None else {}
    origins = dict.fromkeys(values, "job")
    caller = "cli" if given is not None else "python"
    values = merge(values, dict(given or {}))
    origins.update((k, "cli") for k, v in (given or {}).items() if v is not None)
    if keywords:
        built = Settings.build(**keywords)
        picked = {
            name: getattr(built, name)
            for name in {Settings.keyword_names().get(k, "request") for k in keywords}
        }
        values = merge(values, picked)
        origins.update((k, "python") for k, v in picked.items() if v is not None)
    if input is not None:
        values["input"] = input if not isinstance(input, os.PathLike) else os.fspath(input)
        origins["input"] = caller
    if out_dir is not None:
        values["out_dir"] = os.fspath(out_dir)
        origins["out_dir"] = caller
    if values.get("response_format") is not None:  # a schema without a title: the job's name
        job_name = values.get("name") or (loaded.name if loaded is not None else None)
        values["response_format"] = values["response_format"].named(job_name)
    unplaced = [
        name
        for name, table in (values.get("endpoints") or {}).items()
        if isinstance(table, Mapping) and "base_url" not in table
    ]
    if unplaced:  # only the command line can give an endpoint a key but no URL
        raise ConfigError(
            f"--endpoint-key-env {unplaced[0]}=...: no endpoint {unplaced[0]} to give it to "
            f"(declare it: --endpoint {unplaced[0]}=URL, or [endpoints.{unplaced[0]}] in the "
            "job file)"
        )
    settings = Settings(**values)
    if settings.input is None:
        where = f" or as [input] path in {loaded.path}" if loaded is not None else ""
        raise MissingInput(
            f"no INPUT given: name the input file (batchrun run data.jsonl ...){where}"
            " (Python: a file or rows)"
        )
    spelling = SpelledAsGiven(origins, caller)
    problems = settings.problems(spelling)
    if problems:
        where = f"{loaded.path}: " if loaded is not None and spelling.from_file else ""
        raise ConfigError(where + "; ".join(problems))
    return settings


def api_key(settings: Settings) -> str | None:
    """The key: from ``api_key_file`` when set, else the environment variable named by
    ``api_key_env``. Required unless auth is none, the endpoint is the simulator or a
    loopback server. Never read from anywhere else, never written anywhere."""
    if settings.endpoints:  # a pool: each endpoint's own (`endpoint_keys`)
        return endpoint_keys(settings).get(DEFAULT_ENDPOINT)
    return _read_key(
        settings.api_key_env,
        settings.api_key_file,
        auth=settings.auth,
        base_url=settings.base_url,
        unset_hint="name another with --api-key-env, or use --auth none",
    )


def endpoint_keys(settings: Settings) -> dict[str, str | None]:
    """Each endpoint's key, by its name in the pool (`Settings.pool`), read by the
    rules of `api_key` from the endpoint's own ``api_key_env``/``api_key_file`` (or
    the ``[endpoint]`` table's, which it takes unless it names either); each key is
    registered to be scrubbed from everything written (`batchrun._redact`). A
    problem names the endpoint and where its key was looked for, never a key.

        keys = endpoint_keys(settings)      # {"default": "sk-..."} without a pool
    """
    from batchrun._redact import register_secret

    keys: dict[str, str | None] = {}
    for member in settings.pool():
        if not settings.endpoints:  # a pool of one: the messages of a single endpoint
            key = api_key(settings)
        else:
            key = _read_key(
                member.api_key_env,
                member.api_key_file,
                auth=member.auth or "bearer",
                base_url=SIM if member.is_sim else member.base_url,
                who=f"endpoint {member.name}: ",
                unset_hint=f"name another with endpoints.{member.name}.api_key_env or "
                f'--endpoint-key-env {member.name}=VARIABLE, or give it auth = "none"',
            )
        register_secret(key)
        keys[member.name] = key
    return keys


def _read_key(
    env: str | None,
    file: str | None,
    *,
    auth: str,
    base_url: str,
    unset_hint: str,
    who: str = "",
) -> str | None:
    """One key, by the rules of `api_key`; ``who`` starts every message."""
    key = (os.environ.get(env) or None) if env else None
    if file:
        try:
            with builtins.open(os.path.expanduser(file), encoding="utf-8") as f:
                key = f.read().strip() or None
        except OSError as exc:
            raise ConfigError(
                f"{who}{file}: cannot read the API key file ({exc.strerror})"
            ) from exc
    if key is not None and (not key.isascii() or not key.isprintable()):
        # a stray quote or CR/LF would fail every request with a traceback; name the
        # source of the key, never its value
        source = file or f"environment variable {env}"
        raise ConfigError(
            f"{who}{source}: the API key holds a non-ASCII or control character "
            "(a stray quote or line end?)"
        )
    if key is None and auth != "none" and base_url != SIM:
        host = base_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if host not in LOOPBACK_HOSTS and file:
            raise ConfigError(f"{who}{file}: the API key file is empty")
        if host not in LOOPBACK_HOSTS:
            raise ConfigError(f"{who}environment variable {env} is not set (set it, {unset_hint})")
    return key


@contextlib.contextmanager
def endpoint(settings: Settings) -> Iterator[Settings]:
    """Start the built-in simulator for ``base_url = "sim"``, and one for each
    endpoint of the pool whose ``base_url`` is "sim" (its own quotas and faults:
    ``sim_rpm``, ``sim_tpm``, ``sim_fault``); otherwise pass through.

    A simulator keeps its files and batches in the run directory (``DIR/batch/sim``,
    a pool's endpoint NAME's in ``DIR/batch/sim-NAME``, `batchrun.sim.persist`):
    like a provider's, a rehearsal's batches go on when the process that made them
    dies, and a rerun or `cancel_run` finds them."""
    pooled = [e for e in settings.endpoints.values() if e.base_url == SIM and not e.simulated]
    if settings.base_url != SIM and not pooled:
        yield settings
        return
    from batchrun._batch.workdir import sim_state_path
    from batchrun.sim import SimConfig, SimThread

    state = sim_state_path(os.fspath(settings.out_dir)) if settings.out_dir else None
    with contextlib.ExitStack() as started:
        live = settings
        if settings.base_url == SIM:
            sim = started.enter_context(
                SimThread(SimConfig(latency_ms=20.0, jitter_ms=10.0), state_dir=state)
            )
            # requests go to its loopback port; the run and its answers name it "sim"
            live = replace(live, base_url=sim.base_url, simulated=True)
        members = dict(live.endpoints)
        for seed, member in enumerate(pooled, start=1):
            config = SimConfig(
                seed=seed,  # each its own draws of faults and latency
                latency_ms=20.0,
                jitter_ms=10.0,
                rpm=member.sim_rpm,
                tpm=member.sim_tpm,
                error_rates=dict(member.sim_fault),
            )
            own_state = f"{state}-{member.name}" if state else None
            sim = started.enter_context(SimThread(config, state_dir=own_state))
            members[member.name] = replace(member, base_url=sim.base_url, simulated=True)
        yield replace(live, endpoints=members) if pooled else live


def _recorded_endpoint(settings: Settings) -> Settings:
    """The settings a run directory recorded, with ``base_url = "sim"`` again when the
    run rehearsed against the built-in simulator (run.json names the loopback address
    it had then; its batches are in ``DIR/batch/sim``)."""
    from batchrun._batch.workdir import sim_state_path

    if settings.base_url == "sim" or not settings.out_dir:
        return settings
    host = settings.base_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
    if host in LOOPBACK_HOSTS and os.path.isdir(sim_state_path(os.fspath(settings.out_dir))):
        return replace(settings, base_url="sim")
    return settings


@contextlib.contextmanager
def surroundings(settings: Settings) -> Iterator[Settings]:
    """What a run needs around it: the simulator (`endpoint`) and, with ``serve``, the
    live report page on 127.0.0.1 for as long as the run goes (its URL on stderr)."""
    with endpoint(settings) as live, object_storage_run(live) as local:
        if local.serve is None:
            yield local
            return
        from batchrun._report.html.server import serve_run_dir

        with serve_run_dir(str(local.out_dir), "127.0.0.1", local.serve) as url:
            print(f"batchrun: live report at {url}", file=sys.stderr, flush=True)
            yield local


@contextlib.contextmanager
def object_storage_run(settings: Settings) -> Iterator[Settings]:
    """A run directory on object storage (``-o s3://bucket/prefix``): the run goes on a
    local copy (`batchrun._output.mirror.RunMirror`: the lease held, the journals
    rebuilt from the committed segments and committed again as segments every
    ``commit_interval`` seconds or ``commit_rows`` rows); the settings given back name
    that copy. Any other run directory: the settings as they are."""
    from batchrun._output.store import is_object_storage

    location = settings.out_dir
    if not is_object_storage(location):
        yield settings
        return
    assert location is not None
    from batchrun._output.mirror import RunMirror
    from batchrun._output.segments import CommitInterval

    sharded = settings.ray is not None
    mirror = RunMirror(
        location,
        interval=CommitInterval(rows=settings.commit_rows, seconds=settings.commit_interval),
        # on a cluster the shards' tasks write their own keys
        excluded=("shards/", "results.parquet/") if sharded else (),
        rebuild=("",) if sharded else None,
    )
    with mirror as local:
        yield replace(settings, out_dir=local)


def shown_run_dir(settings: Settings, result: RunResult) -> str:
    """Where a finished run's directory is for the caller: the object-storage location
    it was given, or the local directory the run wrote."""
    from batchrun._output.store import is_object_storage

    return str(settings.out_dir) if is_object_storage(settings.out_dir) else result.run_dir


def hooks_for(settings: Settings, extra: Sequence[RunHooks] = ()) -> RunHooks:
    """What every run gets around it: cost and budget, results.parquet and the
    evaluation (before the report, which lists the files), the caller's own hooks
    (``extra``), progress and the report (``quiet`` prints nothing but errors)."""
    from batchrun._cost.budget import cost_hooks
    from batchrun._engine.hooks import CompositeHooks
    from batchrun._jobs.outputs import DatasetOutputHooks
    from batchrun._report.progress import make_hooks

    return CompositeHooks(
        *cost_hooks(settings, model_lister(settings)),
        DatasetOutputHooks(settings),
        *extra,
        make_hooks(settings),
    )


def model_lister(settings: Settings) -> Callable[[], list[str] | None]:
    """Asks the run's endpoint which models it serves, the way the run's requests are
    sent (its key and headers); called only for a model without a price
    (`batchrun._cost.modelnames`)."""

    def listed() -> list[str] | None:
        from batchrun._transport.client import auth_headers
        from batchrun._transport.models import served_models

        headers = dict(settings.headers)
        headers.update(auth_headers(api_key(settings), settings.auth, settings.auth_header))
        return served_models(settings.base_url, headers=headers)

    return listed


# -- where the run lives -------------------------------------------------------------------
def default_run_dir(settings: Settings, input_fingerprint: str) -> str:
    """``batchrun-runs/<name>-<12 hex>``: the same input, settings and endpoint give the
    same directory (re-running a notebook cell resumes it), another prompt or another
    endpoint another one: the simulator's answers never sit where a real run resumes.
    The default endpoint adds nothing to the name, so directories made before the
    endpoint was part of it keep theirs."""
    import orjson

    from batchrun._endpoint import endpoint_identity
    from batchrun._settings import DEFAULT_BASE_URL

    shaping = settings.fingerprint()
    endpoint = shaping.pop("base_url")
    digest = hashlib.blake2b(digest_size=6)
    digest.update(input_fingerprint.encode())
    digest.update(orjson.dumps(shaping, option=orjson.OPT_SORT_KEYS))
    if endpoint != endpoint_identity(DEFAULT_BASE_URL):
        digest.update(b"\nendpoint " + endpoint.encode())
    name = settings.name
    if name is None:
        from batchrun._input.locations import display_stem

        name = display_stem(settings.input) if isinstance(settings.input, str) else "rows"
    home = os.environ.get("BATCHRUN_RUNS") or RUNS_HOME
    return os.path.join(home, f"{name}-{digest.hexdigest()}")


def prepare(settings: Settings) -> tuple[Settings, Placed | None]:
    """Settings a runner can take: rows held in memory are written to a file (streamed
    batch by batch, never copied whole), and the run directory is chosen. With them,
    what was made for rows in memory (None for a file): the run goes under `undone`,
    so a run refused before it starts leaves neither a directory nor a copy."""
    from batchrun._input.memory import in_memory, spill

    if not in_memory(settings.input):
        if not settings.out_dir:
            from batchrun._input.sources import Source

            fingerprint = Source(settings.input_path).fingerprint()
            settings = replace(settings, out_dir=default_run_dir(settings, fingerprint))
        return settings, None
    from batchrun._output.store import is_object_storage

    if is_object_storage(settings.out_dir):
        raise ConfigError(
            f"{settings.out_dir}: rows held in memory need a local run directory; write "
            "them to a file (or to object storage) first and give its path"
        )
    staged = spill(settings.input)
    out_dir = settings.out_dir or default_run_dir(settings, staged.fingerprint)
    where = staged.place(out_dir, force=settings.force)
    return replace(settings, input=where.path, out_dir=out_dir), where


def undone(settings: Settings, where: Placed | None) -> contextlib.AbstractContextManager[None]:
    """Around a run: what `prepare` made for it is removed again when the run fails
    before it starts (`batchrun._runfiles.undone_unless_started`)."""
    from batchrun._runfiles import undone_unless_started

    if where is None:
        return contextlib.nullcontext()
    return undone_unless_started(
        str(settings.out_dir),
        made_dir=where.made_dir,
        made_file=where.path if where.made_file else None,
    )


# -- running ----------------------------------------------------------------------------
def make_runner(
    settings: Settings,
    key: str | None,
    *,
    hooks: RunHooks | None = None,
    handle_signals: bool = False,
    extra_hooks: Sequence[RunHooks] = (),
    **injected: Any,
) -> Runner | BatchDriver | RayDriver | CascadeRunner:
    """The runner of a run: online (`batchrun._engine.runner.Runner`), through the Batch
    API (``mode="batch"``: `batchrun._batch.BatchDriver`, which hands the rows left at a
    ``deadline`` to an online runner made here with the same hooks), or on a Ray cluster
    (``ray``: `batchrun._scale.driver.RayDriver`, each shard an online runner).

    An online run in a directory where an earlier ``--batch-api`` process left batches
    open first takes in the ones that ended (a `BatchDriver` with ``settle_only``,
    handing the rows left to the online runner); while any still runs, it is refused
    (`batchrun._batch.state.open_batches_refusal`): their rows are never paid twice."""
    settings.validate()
    if settings.cascade is not None:
        from batchrun._jobs.cascade_run import CascadeRunner

        def stage(cfg: Settings) -> Runner | BatchDriver | RayDriver | CascadeRunner:
            around = hooks_for(cfg, extra_hooks)
            return make_runner(cfg, key, hooks=around, handle_signals=handle_signals, **injected)

        def report(summary: Mapping[str, Any]) -> None:
            if not settings.quiet:
                from batchrun._report.cascade import format_cascade

                print(format_cascade(summary), file=sys.stderr, flush=True)

        return CascadeRunner(settings, make_stage=stage, on_end=report)
    if settings.ray is not None:
        from batchrun._scale.driver import RayDriver

        if injected:
            raise ConfigError(f"ray=: cannot inject {', '.join(sorted(injected))}")
        return RayDriver(
            settings,
            key,
            handle_signals=handle_signals,
            served=model_lister(settings),
            api_keys=endpoint_keys(settings) if settings.endpoints else None,
        )
    from batchrun._engine.runner import Runner

    around = hooks if hooks is not None else hooks_for(settings)
    if settings.endpoints and "api_keys" not in injected:
        injected["api_keys"] = endpoint_keys(settings)
    if settings.mode != "batch":
        if not _has_open_batches(settings):
            return Runner(
                settings, api_key=key, hooks=around, handle_signals=handle_signals, **injected
            )
    from batchrun._batch.driver import BatchDriver

    shared = {k: v for k, v in injected.items() if k in _SHARED_INJECTIONS}

    if "api_keys" in injected:  # a pool's fallback goes online over the whole pool
        shared["api_keys"] = injected["api_keys"]

    def online(lock: RunDirLock) -> Runner:
        return Runner(
            settings,
            api_key=key,
            hooks=around,
            handle_signals=handle_signals,
            held_lock=lock,
            **shared,
        )

    return BatchDriver(
        settings,
        api_key=key,
        hooks=around,
        handle_signals=handle_signals,
        online=online,
        settle_only=settings.mode != "batch",
        **injected,
    )


def _has_open_batches(settings: Settings) -> bool:
    """Whether the run directory's step journal has a shard open (read, nothing sent)."""
    from batchrun._batch.state import iter_open_batches

    return settings.out_dir is not None and any(iter_open_batches(str(settings.out_dir)))


_SHARED_INJECTIONS = ("transport", "source", "clock", "sleep", "wall_clock")
"""What a batch run passes on to the online run of its deadline fallback."""


def cancel_run(run_dir: str | os.PathLike[str], **injected: Any) -> RunResult:
    """Cancel the batches a batch run left running at the provider (`batchrun cancel`).

    Waits until each is cancelled and keeps the rows they finished (written to the run
    directory like any answer); the rows left stay pending for a rerun. Refused while
    a batchrun process holds the directory (stop it first: its batches go on). Prints
    nothing: the result's ``notes`` say what was cancelled, kept and left pending (the
    run's own report is ``batchrun status``).

        batchrun.open("runs/a").cancel().notes
    """
    import anyio

    from batchrun._batch.driver import BatchDriver
    from batchrun._engine.runinfo import settings_of

    recorded = settings_of(os.fspath(run_dir))
    settings = _recorded_endpoint(replace(recorded, mode="batch", quiet=True))
    with endpoint(settings) as live:
        key = api_key(live)
        if live.endpoints and "api_keys" not in injected:
            injected["api_keys"] = endpoint_keys(live)
        driver = BatchDriver(live, api_key=key, hooks=hooks_for(live), cancel_only=True, **injected)
        result: RunResult = anyio.run(driver.run)
    return result


async def arun(
    input: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    job: str | os.PathLike[str] | Job | None = None,
    hooks: RunHooks | Sequence[RunHooks] = (),
    **settings: Any,
) -> Run:
    """Run a batch and return its `Run` (the async twin of `run`).

    Cancelling the task that awaits it (``asyncio.run``'s Ctrl-C, a timeout,
    ``task.cancel()``) stops the run as a Ctrl-C does: nothing more is sent, what is in
    flight is written (up to ``drain_timeout``), and then the cancellation goes on; the
    run directory holds what was answered (`batchrun.open`).

    run = await batchrun.arun("requests.jsonl", "runs/a", model="gpt-4o-mini")
    """
    chosen, where = prepare(settings_for(input, out_dir, job=job, **settings))
    with undone(chosen, where):
        _no_hooks_on_ray(chosen, hooks)
        with _caller_rows(input, chosen), surroundings(chosen) as live:
            runner = make_runner(
                live,
                api_key(live),
                hooks=hooks_for(live, _listed(hooks)),
                extra_hooks=_listed(hooks),
            )
            result = await _drained_if_cancelled(runner)
    return Run(shown_run_dir(chosen, result), result=result)


async def _drained_if_cancelled(
    runner: Runner | BatchDriver | RayDriver | CascadeRunner,
) -> RunResult:
    """``runner.run()``; when the caller is cancelled meanwhile, the run is interrupted
    (a Ctrl-C: it drains and writes) and the cancellation is raised once it has ended.
    A cancelled run would otherwise drop the answers in flight, which were paid for,
    and a rerun would pay for them again."""
    import anyio

    outcome: list[RunResult] = []
    failure: list[BaseException] = []
    ended = anyio.Event()

    async def go() -> None:
        try:
            with anyio.CancelScope(shield=True):
                outcome.append(await runner.run())
        except BaseException as exc:  # raised below, as itself
            failure.append(exc)
        finally:
            ended.set()

    async with anyio.create_task_group() as group:
        group.start_soon(go)
        try:
            await ended.wait()
        except anyio.get_cancelled_exc_class():
            runner.interrupt()
            with anyio.CancelScope(shield=True):
                await ended.wait()
            raise
    if failure:
        raise failure[0]
    return outcome[0]


def run(
    input: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    job: str | os.PathLike[str] | Job | None = None,
    hooks: RunHooks | Sequence[RunHooks] = (),
    **settings: Any,
) -> Run:
    """Run a batch to the end and return its `Run`. Works from plain scripts, inside an
    event loop that is already running (Jupyter, IPython: the run gets a thread and a
    loop of its own) and from any thread.

    Ctrl-C (or a notebook's interrupt) drains the run: nothing more is sent, what is in
    flight is written; then KeyboardInterrupt is raised with the `Run` as ``.run``, so
    the script or the next cell does not go on with part of the rows. SIGTERM raises
    ``SystemExit(143)`` the same way (`batchrun.errors.interrupted`). Calling it again
    resumes.

        run = batchrun.run(df, "runs/reviews", model="gpt-4o-mini",
                           prompt="Review: {text}", response_format=Sentiment)
        run.to_pandas()
    """
    chosen, where = prepare(settings_for(input, out_dir, job=job, **settings))
    with undone(chosen, where):
        _no_hooks_on_ray(chosen, hooks)
        with _caller_rows(input, chosen), surroundings(chosen) as live:
            key = api_key(live)
            around = hooks_for(live, _listed(hooks))
            main = threading.current_thread() is threading.main_thread()
            if main and not _loop_running():
                import anyio

                runner = make_runner(
                    live, key, hooks=around, handle_signals=True, extra_hooks=_listed(hooks)
                )
                runner.second_signal = "cancel"  # a library never kills its process
                result = anyio.run(runner.run)
            else:
                runner = make_runner(live, key, hooks=around, extra_hooks=_listed(hooks))
                result = _run_in_own_loop(runner)
        return _unless_signalled(Run(shown_run_dir(chosen, result), result=result))


def _unless_signalled(run: Run) -> Run:
    """``run``, or, when a signal stopped it (exit 130 or 143, as the command line),
    the exception that stops the caller too, carrying it."""
    from batchrun._engine.stops import EXIT_SIGINT, EXIT_SIGTERM
    from batchrun.errors import interrupted

    if run.exit_code in (EXIT_SIGINT, EXIT_SIGTERM):
        raise interrupted(run, terminated=run.exit_code == EXIT_SIGTERM)
    return run


@contextlib.contextmanager
def _caller_rows(given: Any, chosen: Settings) -> Iterator[None]:
    """A bad row of input the caller held in memory is named as the caller's row
    (`batchrun._input.memory.caller_row_error`), not as a line of the file it was
    written to."""
    from batchrun._input.memory import caller_row_error, in_memory
    from batchrun.errors import InputError

    try:
        yield
    except InputError as exc:
        if not in_memory(given) or exc.path != chosen.input_path:
            raise
        raise caller_row_error(exc, type(given).__name__) from exc


def _no_hooks_on_ray(settings: Settings, hooks: RunHooks | Sequence[RunHooks]) -> None:
    if settings.ray is not None and _listed(hooks):
        raise ConfigError(
            "hooks= cannot be used with ray=: each shard runs in its own worker process"
        )


def _listed(hooks: RunHooks | Sequence[RunHooks]) -> tuple[RunHooks, ...]:
    from batchrun._engine.hooks import RunHooks

    return (hooks,) if isinstance(hooks, RunHooks) else tuple(hooks)


def _loop_running() -> bool:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _run_in_own_loop(runner: Runner | BatchDriver | RayDriver | CascadeRunner) -> RunResult:
    """Run in a thread with its own event loop; a KeyboardInterrupt while waiting
    stops the run like a Ctrl-C (a second one leaves the requests in flight), and the
    result says so (`_unless_signalled` raises it again once the run has ended)."""
    from anyio.from_thread import start_blocking_portal

    with start_blocking_portal() as portal:
        future = portal.start_task_soon(runner.run)
        interrupts = 0
        while True:
            try:
                return future.result(timeout=0.2)
            except TimeoutError:
                continue
            except KeyboardInterrupt:
                interrupts += 1
                portal.call(runner.interrupt, interrupts)


def run_job(job: str | os.PathLike[str] | Job, **overrides: Any) -> Run:
    """Run a job file (or a loaded `Job`), with keyword settings overriding it.

    run = batchrun.run_job("jobs/sentiment.toml", concurrency=8)
    """
    return run(job=job, **overrides)


def stream(
    input: Any = None,
    out_dir: str | os.PathLike[str] | None = None,
    *,
    job: str | os.PathLike[str] | Job | None = None,
    hooks: RunHooks | Sequence[RunHooks] = (),
    **settings: Any,
) -> RunStream:
    """Outcomes as they are written (each line is on disk before it is yielded).

    async for outcome in batchrun.stream(rows, "runs/a", model="gpt-4o-mini"):
        use(outcome.custom_id, outcome.body)
    """
    chosen, where = prepare(settings_for(input, out_dir, job=job, **settings))
    with undone(chosen, where):
        if chosen.ray is not None:
            raise ConfigError("stream() cannot run with ray=: read the run's results instead")
        if chosen.cascade is not None:
            raise ConfigError(
                "stream() cannot run a cascade=: a row's answer is decided only when its "
                "stages have run; use run() and read its results"
            )
    return RunStream(chosen, _listed(hooks), given=input, placed=where)


class RunStream:
    """An async iterator of `batchrun._models.Outcome`s from a run in its own thread.

    The run has its own loop, so a slow consumer never stalls it for long (outcomes
    wait in a queue) and an early stop (``aclose``, or leaving ``async for``) stops it
    like a Ctrl-C. `run` is the finished `Run`, once the iteration is over.
    """

    def __init__(
        self,
        settings: Settings,
        hooks: Sequence[RunHooks] = (),
        *,
        given: Any = None,
        placed: Placed | None = None,
    ) -> None:
        self.settings = settings
        self.hooks = tuple(hooks)
        self._given = given
        """What the caller passed as input (rows in memory: errors name their rows)."""
        self._placed = placed
        """What was made for rows in memory (removed again if the run never starts)."""
        self.run: Run | None = None
        self._queue: queue.SimpleQueue[list[Outcome] | BaseException | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._runner: Any = None
        self._portal: Any = None
        self._started = threading.Event()
        self._pending: list[Outcome] = []

    def __aiter__(self) -> RunStream:
        return self

    def _start(self) -> None:
        from batchrun._engine.hooks import RunHooks

        outbox = self._queue

        class Forward(RunHooks):
            def on_written(self, state: Any, batch: list[Outcome]) -> None:
                outbox.put(list(batch))

        def main() -> None:
            from anyio.from_thread import start_blocking_portal

            try:
                with undone(self.settings, self._placed), surroundings(self.settings) as live:
                    hooks = hooks_for(live, (*self.hooks, Forward()))
                    self._runner = make_runner(live, api_key(live), hooks=hooks)
                    with start_blocking_portal() as portal:
                        self._portal = portal
                        self._started.set()
                        result = portal.call(self._runner.run)
                self.run = Run(shown_run_dir(self.settings, result), result=result)
                outbox.put(None)
            except BaseException as exc:  # handed to the consumer
                self._started.set()
                outbox.put(exc)

        self._thread = threading.Thread(target=main, name="batchrun-stream", daemon=True)
        self._thread.start()

    async def __anext__(self) -> Outcome:
        import anyio.to_thread

        if self._thread is None:
            self._start()
        while True:
            if self._pending:
                return self._pending.pop(0)
            item = await anyio.to_thread.run_sync(self._queue.get)
            if item is None:
                raise StopAsyncIteration
            if isinstance(item, BaseException):
                with _caller_rows(self._given, self.settings):
                    raise item
            self._pending = item

    async def aclose(self) -> None:
        """Stop the run (what is in flight is written) and wait for it to end."""
        import anyio.to_thread

        if self._thread is None:
            return
        await anyio.to_thread.run_sync(self._started.wait)
        if self._portal is not None and self._runner is not None and self.run is None:
            with contextlib.suppress(Exception):
                self._portal.call(self._runner.interrupt, 1)
        await anyio.to_thread.run_sync(self._thread.join)


def estimate(
    input: Any = None, *, job: str | os.PathLike[str] | Job | None = None, **settings: Any
) -> EstimateReport:
    """Tokens and cost of a job before anything is sent (bad rows are reported as a
    run would). With ``out_dir`` of an earlier run, typical answer lengths come from it.

        report = batchrun.estimate("requests.jsonl", model="gpt-4o-mini")
        report.low_usd, report.high_usd
    """
    from batchrun._cost.estimate import estimate_settings

    chosen = settings_for(input, job=job, **settings)
    if chosen.input is None or isinstance(chosen.input, str):
        return estimate_settings(chosen)
    from batchrun._input.memory import spill

    chosen = replace(chosen, input=spill(chosen.input).path)
    try:
        with _caller_rows(input, chosen):
            return estimate_settings(chosen)
    finally:  # a temporary copy of the caller's rows: never left behind
        with contextlib.suppress(OSError):
            os.unlink(chosen.input_path)


def open(run_dir: str | os.PathLike[str]) -> Run:  # noqa: A001 - batchrun.open, like io.open
    """An existing run directory, to look at (nothing is sent).

    run = batchrun.open("runs/reviews"); run.status, run.summary["cost_usd"]
    """
    from batchrun._output.rundir import RunDir
    from batchrun._output.store import is_object_storage

    if is_object_storage(os.fspath(run_dir)):
        run = Run(os.fspath(run_dir))
        _ = run.run_dir  # the snapshot, now: RunDirError when nothing is there
        return run
    return Run(RunDir.open(run_dir).path)


class Run:
    """A run directory: its status, summary, results and errors.

    Returned by `run`/`arun`/`run_job` (then ``exit_code`` and ``notes`` say how this
    process's part ended) and by `open`. Everything is read from the directory's files
    when asked, so a Run of a directory another process is writing stays current.
    """

    def __init__(self, run_dir: str, *, result: RunResult | None = None) -> None:
        self.location = run_dir
        """Where the run is: its directory, or its prefix on object storage."""
        self._local: str | None = None
        self._result = result

    @property
    def run_dir(self) -> str:
        """The run's directory; for a run on object storage, a local snapshot of the
        prefix, taken when first asked for (`batchrun._output.mirror.snapshot`; call
        `batchrun.open` again for a newer one)."""
        if self._local is None:
            from batchrun._output.rundir import RunDir
            from batchrun._output.store import is_object_storage

            remote = is_object_storage(self.location)
            self._local = RunDir.open(self.location).path if remote else self.location
        return self._local

    def _writable(self, what: str) -> None:
        """Refuse what would write into a snapshot, where it would be lost."""
        from batchrun._output.store import is_object_storage

        if is_object_storage(self.location):
            raise ConfigError(
                f"{self.location}: {what}() writes into the run directory, and a run on "
                "object storage is read through a snapshot; not supported there yet"
            )

    @property
    def _dir(self) -> RunDir:
        from batchrun._output.rundir import RunDir

        return RunDir(self.run_dir)

    def __repr__(self) -> str:
        req = self.summary.get("requests") or {}
        return (
            f"<Run {self.location!r} {self.status}: {req.get('succeeded', 0)} succeeded, "
            f"{req.get('failed', 0)} failed, {req.get('pending', 0)} pending>"
        )

    @property
    def exit_code(self) -> int | None:
        """What ``batchrun run`` would have exited with (None for `open`)."""
        return self._result.exit_code if self._result is not None else None

    @property
    def notes(self) -> list[str]:
        return list(self._result.notes) if self._result is not None else []

    @property
    def summary(self) -> dict[str, Any]:
        """summary.json (this process's own summary before the run wrote one)."""
        found = self._dir.summary()
        if not found and self._result is not None:
            return dict(self._result.summary)
        return found

    @property
    def status(self) -> str:
        """complete, incomplete, interrupted, budget_exceeded, ... (as `batchrun status`);
        ``running`` while a process writes the directory, ``stopped`` for a run killed
        before it could say how it ended."""
        return "running" if self._dir.holder() else self._dir.status()

    @property
    def eval(self) -> dict[str, Any] | None:
        value = self.summary.get("eval")
        return value if isinstance(value, dict) else None

    @property
    def variants(self) -> list[dict[str, Any]] | None:
        """The comparison of a job's variants, one flat dict each (best marked)."""
        value = self.summary.get("variants")
        return value if isinstance(value, list) else None

    def evaluate(
        self,
        evaluation: Any = None,
        *,
        variants: Sequence[str] = (),
        target_accuracy: float | None = None,
    ) -> dict[str, Any]:
        """Score the run again, sending nothing (as ``batchrun eval``): with the recorded
        [eval] or ``evaluation`` (an `Evaluation` or a dict like the [eval] table),
        every variant or only ``variants``; labels imported with `import_labels` are
        the reference of their rows. With ``target_accuracy``, the evaluation's
        ``calibration`` gets the suggested confidence ``threshold``. Recorded in
        summary.json.

            run.evaluate({"reference_column": "label", "compare": "exact"})
            run.evaluate(target_accuracy=0.95)["eval"]["calibration"]["threshold"]
        """
        from batchrun._checks import Invalid, Where
        from batchrun._checks import evaluation as checked_evaluation
        from batchrun._jobs.outputs import rescore

        try:
            chosen = checked_evaluation(evaluation, Where("evaluation")) if evaluation else None
        except Invalid as exc:
            raise ConfigError(str(exc)) from exc
        self._writable("evaluate")
        return rescore(self.run_dir, chosen, variants=variants, target_accuracy=target_accuracy)

    def review(
        self,
        out: str | None = None,
        *,
        below: float | None = None,
        limit: int | None = None,
        format: str = "jsonl",
        text_column: str | None = None,
    ) -> Any:
        """Write the doubtful rows for people (as ``batchrun review``): least confident
        first, in Label Studio's, Argilla's or plain JSONL format
        (`batchrun._jobs.review.write_review`). Returns the report.

            run.review("review.json", below=0.7, limit=500, format="label-studio")
        """
        from batchrun._jobs.review import write_review

        report, _ = write_review(
            self.run_dir, out, below=below, limit=limit, format=format, text_column=text_column
        )
        return report

    def import_labels(self, path: str) -> Any:
        """People's labels (a Label Studio or Argilla export, or JSONL of custom_id and
        label) into the run's gold.jsonl, the reference of `evaluate` from then on
        (`batchrun._jobs.review.import_labels`). Returns the report."""
        from batchrun._jobs.review import import_labels

        self._writable("import_labels")
        return import_labels(self.run_dir, path)

    @property
    def cost(self) -> dict[str, Any] | None:
        value = self.summary.get("cost_usd")
        return value if isinstance(value, dict) else None

    def results(self) -> pa.Table:
        """One row per input row, in input order (the results.parquet columns); built
        from the run's files if the run wrote no results.parquet."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = os.path.join(self.run_dir, "results.parquet")
        if not os.path.exists(path):
            from batchrun._output.parquet import write_results_parquet

            settings = self._settings()
            if settings.cascade is not None:
                from batchrun._jobs.cascade_run import rebuild_cascade

                rebuild_cascade(settings)
            else:
                write_results_parquet(settings, path)
        try:
            return pq.read_table(path)
        except (OSError, pa.ArrowException) as exc:
            raise RunDirError(f"{path}: cannot read the results ({exc})") from exc

    def to_pandas(self) -> Any:
        """`results` as a pandas DataFrame (an embeddings job's ``embedding`` column:
        a numpy float32 array per row, None for a row without a vector)."""
        return self.results().to_pandas()

    def embeddings(self) -> Any:
        """An embeddings job's vectors as one numpy float32 array, a row per input row
        in input order (``rows x dim``); a row without a vector (failed, pending,
        invalid) is NaN. Read from results.parquet's ``embedding`` column without
        copying when the file is one row group and every row has its vector.

            vectors = batchrun.run(df, api="embeddings", model="text-embedding-3-small",
                                   prompt="{text}").embeddings()
        """
        import numpy as np
        import pyarrow as pa
        import pyarrow.parquet as pq

        from batchrun._output.parquet import EMBEDDING_COLUMN

        self.results()  # written from the run's files when missing
        path = os.path.join(self.run_dir, "results.parquet")  # a directory on a cluster
        if EMBEDDING_COLUMN not in pq.ParquetDataset(path).schema.names:
            raise RunDirError(f"{self.run_dir}: not an embeddings run (no embedding column)")
        column = pq.read_table(path, columns=[EMBEDDING_COLUMN]).column(EMBEDDING_COLUMN)
        dim = column.type.list_size
        chunks = column.chunks
        array = chunks[0] if len(chunks) == 1 else pa.concat_arrays(chunks)
        rows = len(array)
        flat = array.values.slice(array.offset * dim, rows * dim)
        matrix = flat.to_numpy(zero_copy_only=False).reshape(rows, dim)
        if array.null_count:
            matrix = matrix.copy()
            matrix[array.is_null().to_numpy(zero_copy_only=False)] = np.nan
        return matrix

    def errors(self) -> pa.Table:
        """One row per request that failed for good: id, row, HTTP status, code, message."""
        import pyarrow as pa

        rows = []
        for failure in self._dir.outcomes(answers=False):  # each shard's, on a cluster
            error = failure.error or {}
            rows.append(
                {
                    "custom_id": failure.custom_id,
                    "row": failure.row,
                    "status_code": failure.status_code,
                    "code": error.get("code"),
                    "message": error.get("message"),
                    "attempts": len(failure.attempts),
                }
            )
        schema = pa.schema(
            [
                ("custom_id", pa.string()),
                ("row", pa.int64()),
                ("status_code", pa.int32()),
                ("code", pa.string()),
                ("message", pa.string()),
                ("attempts", pa.int32()),
            ]
        )
        return pa.Table.from_pylist(rows, schema=schema)

    def report(self) -> str:
        """The text report `batchrun status` prints."""
        from batchrun._report.text import format_status, status_report

        return format_status(status_report(self.run_dir))

    def cancel(self) -> Run:
        """Cancel this run's batches at the provider (see `cancel_run`); the rows they
        finished are written to the directory, the rest stay pending. Returns self."""
        self._result = cancel_run(self.run_dir)
        return self

    def html_report(self, path: str | os.PathLike[str] | None = None) -> str:
        """Write the self-contained HTML report (default RUN_DIR/report.html); its path."""
        from batchrun._report.html.page import write_html_report

        return str(write_html_report(self.run_dir, None if path is None else os.fspath(path)))

    @contextlib.contextmanager
    def serve(self, port: int = 0, host: str = "127.0.0.1") -> Iterator[str]:
        """Serve the live report page for the block's duration; yields its URL."""
        from batchrun._report.html.server import serve_run_dir

        with serve_run_dir(self.run_dir, host, port) as url:
            yield url

    def _settings(self) -> Settings:
        from batchrun._output.rundir import RunDir

        info = RunDir.open(self.run_dir).info()  # RunDirError when run.json is unreadable
        return replace(Settings.from_public_dict(info.get("options") or {}), out_dir=self.run_dir)


__all__ = [
    "Run",
    "RunStream",
    "api_key",
    "arun",
    "cancel_run",
    "default_run_dir",
    "endpoint",
    "endpoint_keys",
    "estimate",
    "hooks_for",
    "open",
    "run",
    "run_job",
    "settings_for",
    "stream",
    "surroundings",
]
