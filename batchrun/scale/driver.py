"""A run on a Ray cluster: plan the shards, run them, add them up.

`RayDriver` has the Runner's interface (``await run()``, ``interrupt()``), so
`batchrun._api.make_runner` hands it out when ``settings.ray`` is set and the CLI, `run`
and `arun` need to know nothing else. One run, in order:

1. lock ``RUN_DIR`` (a second driver is refused at once, as a second process is) and
   plan the shards, or read the recorded plan (`batchrun.scale.shards`);
2. connect to the cluster (``ray.init(address)``), or start a local one with this
   machine's cores;
3. check every shard's rows in parallel before anything is sent anywhere: bad rows,
   duplicate ids across shards, prices under ``--max-cost``, the [eval] column;
4. start the quota actor (`batchrun.scale.quota`), hand it the API key, and run the
   unfinished shards (`batchrun.scale.worker.run_shard`), ``workers`` at a time, each
   task retried by Ray when its process dies; finished shards are skipped; progress
   is added up from the shards' summaries while they run;
5. write each shard's file of ``results.parquet/`` and its evaluation counts, and the
   run's summary.json: the shards added up (`batchrun.scale.aggregate`).

    driver = RayDriver(settings, api_key)
    result = anyio.run(driver.run)
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import anyio
import anyio.abc
import anyio.to_thread
import orjson

from batchrun import __version__
from batchrun.arrowbuf import from_array, scalar
from batchrun.engine.rundir import removed_if_refused, taken
from batchrun.engine.signals import run_watched
from batchrun.errors import BatchrunError, ConfigError, InputError, RunDirError
from batchrun.input.locations import recorded_location
from batchrun.output.journal import RUN_INFO, SUMMARY
from batchrun.output.summary import read_json_object, write_json_atomic
from batchrun.scale.aggregate import merged_eval, merged_summary
from batchrun.scale.shards import PLAN, ShardPlan, load_or_plan, shard_dir
from batchrun.scale.worker import PARTS, ShardDone, ShardJob, ShardScan
from batchrun.settings import Settings

TASK_RETRIES = 3
"""Times Ray runs a shard again after its worker process died."""
POLL_SECONDS = 0.2
STOPS = ("budget", "endpoint_down", "bad_answers", "disk_error")
"""A shard that stopped for one of these stops the whole run."""
INSTALL_HINT = "--ray needs Ray: pip install 'batchrun[ray]'"


def import_ray() -> Any:
    """Ray, or a one-line ConfigError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(INSTALL_HINT) from exc
    return ray


def connect(ray: Any, address: str) -> bool:
    """Join the cluster at ``address`` or start a local one; True when this call
    started Ray (and so shuts it down at the end). Already connected: used as is."""
    import logging

    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,
        # Ray's start-up warnings are about Ray, not the run (2.60 warns on every local
        # start that it enabled token authentication by default): errors only while it
        # starts, its warnings again once it runs (a task's trouble is the user's)
        "logging_level": logging.ERROR,
        "configure_logging": True,
    }
    if address == "local":
        ray.init(num_cpus=os.cpu_count() or 1, **kwargs)
    else:
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError(f"--ray {address}: cannot connect to the cluster ({exc})") from exc
    logging.getLogger("ray").setLevel(logging.WARNING)
    return True


def unwrap(exc: BaseException) -> BaseException:
    """A task's own error (a BatchrunError raised in a shard) out of Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class RayDriver:
    def __init__(
        self,
        cfg: Settings,
        api_key: str | None = None,
        *,
        handle_signals: bool = False,
        err: Any = None,
        served: Callable[[], list[str] | None] | None = None,
    ) -> None:
        """``served``: the endpoint's model list, asked only for a model without a
        price (`batchrun.cost.modelnames`)."""
        if not cfg.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        if cfg.ray is None:
            raise ConfigError("RayDriver needs settings.ray (an address, or 'local')")
        self.cfg = cfg.validate()  # variants, a pilot, a cache nodes cannot share: refused
        self.run_dir: str = cfg.out_dir
        self.api_key = api_key
        self.handle_signals = handle_signals
        self.second_signal = "exit"
        self.err = err
        self.served = served
        self.notes: list[str] = []
        self.stop_reason: str | None = None
        self.service: Any = None
        self.plan: ShardPlan | None = None
        self.total = 0
        self.invalid = 0
        self.done: dict[int, ShardDone] = {}
        self.started = 0.0
        self._elapsed_before = 0.0
        self._ray: Any = None
        self._signals = 0
        """Signals received so far (a second one leaves at once)."""
        self._cancel: anyio.CancelScope | None = None

    # -- stopping -------------------------------------------------------------------
    def interrupt(self, times: int = 1, signum: int = signal.SIGINT) -> None:
        """A Ctrl-C: the first stops every shard (they drain and write), a second
        leaves at once (`second_signal`, as the Runner)."""
        if times > 1 and self.stop_reason is not None:
            if self.second_signal == "exit":
                os._exit(130)
            if self._cancel is not None:
                self._cancel.cancel()
            return
        self.stop("SIGINT" if signum == signal.SIGINT else "SIGTERM")

    def stop(self, reason: str) -> None:
        if self.stop_reason is None:
            self.stop_reason = reason
        if self.service is not None:
            self.service.stop.remote(reason)

    def _on_signal(self, signum: int) -> None:
        self._signals += 1
        self.interrupt(self._signals, signum)

    # -- the run --------------------------------------------------------------------
    async def run(self) -> Any:
        from batchrun.engine.runner import RunResult

        ray = self._ray = import_ray()
        with taken(self.run_dir) as (_, created):
            started_ray = False
            try:
                with removed_if_refused(self.run_dir, created):
                    plan = self.plan = await anyio.to_thread.run_sync(self._check_and_plan)
                started_ray = connect(ray, str(self.cfg.ray))

                async def body(_: anyio.abc.TaskGroup) -> RunResult | None:
                    with anyio.CancelScope() as scope:
                        self._cancel = scope
                        return await self._run_locked(plan)
                    return None  # a second Ctrl-C in a library: left at once

                result = await run_watched(body, self._on_signal if self.handle_signals else None)
                if result is None:
                    result = RunResult(130, "interrupted", {}, self.run_dir, self.notes)
                return result
            finally:
                if started_ray:
                    ray.shutdown()

    def _check_and_plan(self) -> ShardPlan:
        """The run directory's plan (new or recorded) and the input's identity."""
        from batchrun.batch.state import open_batches_refusal
        from batchrun.engine.runinfo import resume_problems
        from batchrun.input.sources import Source

        refusal = open_batches_refusal(self.run_dir)
        if refusal is not None:  # the Runner's rule: never pay for a batch's rows twice
            raise RunDirError(refusal)
        path = self.cfg.input_path
        fingerprint = Source(path).fingerprint()  # InputError: no such file
        info = read_json_object(os.path.join(self.run_dir, RUN_INFO))
        problems, _, _ = resume_problems(
            os.path.join(self.run_dir, RUN_INFO), self.cfg, fingerprint
        )
        if problems and not self.cfg.force:
            raise RunDirError(
                f"{self.run_dir} was started with other settings: "
                + "; ".join(problems)
                + ". Use another -o directory, or --force to resume anyway "
                "(rows whose request changed are sent again)."
            )
        if problems:
            self.notes.append("--force: resuming although " + "; ".join(problems))
        if info is None and os.path.exists(os.path.join(self.run_dir, "results.jsonl")):
            raise RunDirError(
                f"{self.run_dir} holds a run made without --ray; use another -o directory"
            )
        workers = self.cfg.workers or (os.cpu_count() or 1)
        plan, new = load_or_plan(self.run_dir, path, self.cfg.shard_rows, workers)
        if new:
            write_json_atomic(os.path.join(self.run_dir, PLAN), plan.to_dict())
        elif self.cfg.shard_rows and self.cfg.shard_rows != plan.shard_rows:
            self.notes.append(
                f"--shard-rows {self.cfg.shard_rows} ignored: this run's shards were planned "
                f"with {plan.shard_rows} rows each"
            )
        self._fingerprint = fingerprint
        summary = read_json_object(os.path.join(self.run_dir, SUMMARY)) or {}
        self._elapsed_before = float(summary.get("elapsed_s") or 0.0)
        return plan

    def _remote(self, fn: Any, **options: Any) -> Any:
        return self._ray.remote(**options)(fn)

    async def _get(self, refs: Any) -> Any:
        return await anyio.to_thread.run_sync(self._ray.get, refs)

    def _jobs(self, plan: ShardPlan) -> list[ShardJob]:
        cfg = replace(self.cfg, input=recorded_location(self.cfg.input_path))
        return [ShardJob(cfg, os.path.abspath(self.run_dir), shard) for shard in plan.shards]

    async def _run_locked(self, plan: ShardPlan) -> Any:
        from batchrun.engine.runner import RunResult
        from batchrun.scale.worker import scan_shard

        jobs = self._jobs(plan)
        scan = self._remote(scan_shard, num_cpus=1, max_retries=TASK_RETRIES)
        try:
            scans: list[ShardScan] = await self._get([scan.remote(job) for job in jobs])
        except self._ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None
        self._check_scans(plan, scans)
        self._write_run_info(plan, scans)
        self.started = time.monotonic()
        await self._send(plan, jobs, scans)
        summary = await self._finish(plan, jobs, scans)
        status = summary["status"]
        return RunResult(self._exit_code(summary), status, summary, self.run_dir, self.notes)

    # -- checks before sending ------------------------------------------------------------
    def _check_scans(self, plan: ShardPlan, scans: list[ShardScan]) -> None:
        from array import array

        import pyarrow.compute as pc

        self.total = sum(s.total for s in scans)
        self.invalid = sum(s.invalid for s in scans)
        path = self.cfg.input_path
        if self.total == 0:
            if self.invalid:
                raise InputError(
                    path, "0", f"no valid request: all {self.invalid} rows are invalid"
                )
            raise InputError(path, "0", "the file holds no requests")
        ids = array("Q")
        owner = array("q")
        for s in scans:
            part = array("Q")
            part.frombytes(s.ids)
            ids.extend(part)
            owner.extend([s.index] * len(part))
        if len(ids) > 1:
            values = from_array(ids, "uint64")
            order = pc.sort_indices(values)
            ordered = pc.take(values, order)
            same = pc.equal(ordered[1:], ordered[:-1])
            if pc.any(same).as_py():
                at = int(pc.index(same, scalar(True, "bool")).as_py())
                a, b = int(order[at].as_py()), int(order[at + 1].as_py())
                shards = sorted({owner[a], owner[b]})
                spans = ", ".join(f"shard {i} ({plan.shards[i].span.describe()})" for i in shards)
                raise InputError(path, "0", f"duplicate custom_id: the same id is in {spans}")
        models = set().union(*(s.models for s in scans))
        from batchrun.cost.modelnames import ModelAdvice
        from batchrun.cost.prices import PriceBook

        advice = ModelAdvice(PriceBook.load(self.cfg.prices), self.served)
        if self.cfg.max_cost is not None:
            from batchrun.cost.budget import refuse_unpriced

            refuse_unpriced(models, advice)
        elif not self.cfg.quiet:
            for warning in advice.warnings(models):
                self._say(f"batchrun: warning: {warning}")
        spec = self.cfg.eval
        columns = [s.columns for s in scans if s.columns is not None]
        if spec is not None and columns:
            seen = set().union(*columns)
            if spec.reference_column not in seen:
                raise ConfigError(
                    f"[eval] reference_column {spec.reference_column!r} is not a column of "
                    f"{path} (columns: {', '.join(sorted(seen)[:20])})"
                )

    def _write_run_info(self, plan: ShardPlan, scans: list[ShardScan]) -> None:
        info = {
            "batchrun_version": __version__,
            "input_path": recorded_location(self.cfg.input_path),
            "input_fingerprint": self._fingerprint,
            "input_rows": self.total,
            "request_options": orjson.loads(orjson.dumps(self.cfg.fingerprint(), default=str)),
            "options": orjson.loads(orjson.dumps(self.cfg.public_dict(), default=str)),
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sharded": {
                "shards": len(plan.shards),
                "shard_rows": plan.shard_rows,
                "ray": self.cfg.ray,
                "rows_by_shard": [s.total for s in scans],
            },
        }
        write_json_atomic(os.path.join(self.run_dir, RUN_INFO), info)

    # -- sending ------------------------------------------------------------------------
    def _finished(self, job: ShardJob, scan: ShardScan) -> bool:
        """A shard needs no task: every row answered (or failed for good, unless
        --retry-failed), or no valid row at all."""
        if scan.total == 0:
            return True
        if self.cfg.force or self.cfg.retry_bad_answers:
            return False
        summary = read_json_object(os.path.join(job.shard_dir, SUMMARY)) or {}
        requests = summary.get("requests") or {}
        if summary.get("status") not in ("complete",) or requests.get("pending"):
            return False
        return not (self.cfg.retry_failed and requests.get("failed"))

    def _spent_so_far(self, plan: ShardPlan) -> float:
        spent = 0.0
        for shard in plan.shards:
            summary = read_json_object(os.path.join(shard_dir(self.run_dir, shard), SUMMARY)) or {}
            total = (summary.get("cost_usd") or {}).get("total")
            spent += float(total or 0.0)
        return spent

    async def _send(self, plan: ShardPlan, jobs: list[ShardJob], scans: list[ShardScan]) -> None:
        from batchrun.scale.quota import QuotaService
        from batchrun.scale.worker import run_shard

        todo = [job for job, scan in zip(jobs, scans, strict=True) if not self._finished(job, scan)]
        skipped = len(jobs) - len(todo)
        if skipped and todo:
            self.notes.append(f"{skipped} of {len(jobs)} shards were finished already")
        if not todo:
            return
        cfg = self.cfg
        actor = self._ray.remote(QuotaService).options(num_cpus=0, max_concurrency=1)
        self.service = actor.remote(
            concurrency=cfg.concurrency,
            rpm=cfg.rpm.default,
            tpm=cfg.tpm.default,
            by_model=cfg.limits_by_model(),
            max_cost=cfg.max_cost,
            spent=self._spent_so_far(plan),
        )
        await self._get(self.service.set_key.remote(self.api_key))
        if self.stop_reason is not None:
            self.service.stop.remote(self.stop_reason)
        cpus = float(self._ray.cluster_resources().get("CPU", 1))
        workers = cfg.workers or max(1, int(cpus))
        # a shard mostly waits on the network: more workers than CPUs share them
        task = self._remote(run_shard, num_cpus=min(1.0, cpus / workers), max_retries=TASK_RETRIES)
        waiting = list(todo)
        running: dict[Any, ShardJob] = {}
        next_progress = 0.0
        while waiting or running:
            while waiting and len(running) < workers and self.stop_reason is None:
                job = waiting.pop(0)
                running[task.remote(job, self.service)] = job
            if not running:
                break
            ready, _ = await anyio.to_thread.run_sync(
                lambda: self._ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            )
            for ref in ready:
                job = running.pop(ref)
                try:
                    done: ShardDone = await self._get(ref)
                except Exception as exc:  # the task failed for good
                    cause = unwrap(exc)
                    message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
                    self.notes.append(f"shard {job.shard.index}: {message}")
                    if isinstance(cause, BatchrunError):
                        self.stop("shard_failed")
                    continue
                self.done[job.shard.index] = done
                for note in done.notes:
                    if note not in self.notes:
                        self.notes.append(f"shard {job.shard.index}: {note}")
                if done.stop_reason in STOPS:
                    self.stop(done.stop_reason)
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + self._progress_every()
                self._checkpoint(plan, "running")

    def _progress_every(self) -> float:
        return min(self.cfg.summary_interval, self.cfg.progress_interval)

    def _checkpoint(self, plan: ShardPlan, status: str) -> dict[str, Any]:
        summary = merged_summary(
            self.run_dir,
            plan,
            total=self.total,
            status=status,
            stop_reason=self.stop_reason,
            elapsed_s=self.elapsed(),
            pacing=self._pacing(),
            prices=self.cfg.prices,
        )
        summary["requests"]["invalid"] = self.invalid
        write_json_atomic(os.path.join(self.run_dir, SUMMARY), summary)
        if not self.cfg.quiet and status == "running":
            req = summary["requests"]
            finished = req["succeeded"] + req["failed"]
            elapsed = time.monotonic() - self.started
            rate = finished / elapsed if elapsed > 0 else 0.0
            self._say(
                f"batchrun: {finished:,}/{req['total']:,} rows ({req['failed']:,} failed), "
                f"{summary['shards']['complete']}/{summary['shards']['total']} shards done, "
                f"{rate:,.1f} rows/s"
            )
        return summary

    def _pacing(self) -> dict[str, Any]:
        if self.service is None:
            return {}
        try:
            pacing: dict[str, Any] = self._ray.get(self.service.summary.remote(), timeout=10)
        except Exception:  # the actor is gone (a killed cluster): no figures
            return {}
        return pacing

    def elapsed(self) -> float:
        return self._elapsed_before + (time.monotonic() - self.started if self.started else 0.0)

    def _say(self, line: str) -> None:
        from batchrun.redact import scrub_text

        err = self.err or sys.stderr
        err.write(scrub_text(line) + "\n")
        err.flush()

    # -- the end ------------------------------------------------------------------------
    async def _finish(
        self, plan: ShardPlan, jobs: list[ShardJob], scans: list[ShardScan]
    ) -> dict[str, Any]:
        from batchrun.output.parquet import columns_of_kinds
        from batchrun.scale.worker import write_part

        columns = None
        kinds = [s.kinds for s in scans if s.kinds is not None]
        if kinds:
            united: dict[str, set[str]] = {}
            for part in kinds:
                for name, seen in part.items():
                    united.setdefault(name, set()).update(seen)
            columns = columns_of_kinds(united)
        parquet: dict[str, Any] | None = None
        evaluation = None
        needed = self.cfg.write_parquet or (self.cfg.eval is not None and self.cfg.is_dataset)
        if needed:
            task = self._remote(write_part, num_cpus=1, max_retries=TASK_RETRIES)
            try:
                reports = await self._get([task.remote(job, columns) for job in jobs])
            except Exception as exc:
                cause = unwrap(exc)
                self.notes.append(f"could not write {PARTS}: {cause}")
                reports = []
                parquet = {"error": str(cause)}
            if reports:
                statuses: dict[str, int] = {}
                for r in reports:
                    for k, v in r["statuses"].items():
                        statuses[k] = statuses.get(k, 0) + v
                if self.cfg.write_parquet:
                    parquet = {
                        "path": os.path.join(self.run_dir, PARTS),
                        "rows": sum(r["rows"] for r in reports),
                        "statuses": statuses,
                        "files": len(reports),
                    }
                spec = self.cfg.eval
                evaluation = merged_eval(
                    (r.get("eval") for r in reports),
                    interval=spec.interval if spec is not None else None,
                )
        summary = merged_summary(
            self.run_dir,
            plan,
            total=self.total,
            status="running",
            stop_reason=self.stop_reason,
            elapsed_s=self.elapsed(),
            pacing=self._pacing(),
            prices=self.cfg.prices,
            extra={"parquet": parquet, "eval": evaluation},
        )
        summary["requests"]["invalid"] = self.invalid
        if self.cfg.max_cost is not None:
            from batchrun.cost.bill import round_usd

            spent = (summary.get("cost_usd") or {}).get("total") or 0.0
            summary["budget"] = {"max_cost_usd": self.cfg.max_cost, "spent_usd": round_usd(spent)}
        summary["status"] = self._final_status(summary)
        write_json_atomic(os.path.join(self.run_dir, SUMMARY), summary)
        if not self.cfg.quiet:
            from batchrun.jobs.outputs import evaluation_message
            from batchrun.report.text import format_status
            from batchrun.scale.aggregate import sharded_report

            # as one process says it: the evaluation, then the report without it
            if evaluation is not None:
                self._say(evaluation_message(evaluation))
            report = sharded_report(self.run_dir, final=True)
            self._say(format_status({**report, "eval": None}))
        return summary

    def _final_status(self, summary: dict[str, Any]) -> str:
        reason = self.stop_reason
        if reason == "budget":
            return "budget_exceeded"
        if reason in ("disk_error", "endpoint_down", "bad_answers"):
            return reason
        if reason is not None:
            return "interrupted"
        if summary["requests"]["pending"]:
            return "incomplete"
        return "complete"

    def _exit_code(self, summary: dict[str, Any]) -> int:
        reason = self.stop_reason
        if reason == "SIGINT":
            return 130
        if reason == "SIGTERM":
            return 143
        if reason == "budget":
            return 3
        if reason is not None or summary["requests"]["pending"]:
            return 1
        return 4 if summary["requests"]["failed"] else 0


__all__ = ["INSTALL_HINT", "RayDriver", "connect", "import_ray"]
