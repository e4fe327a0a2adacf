"""The Ray lane: a run's shards answered by cluster workers, one online run each.

1. `RayLane.prepare` plans the shards or reads the recorded plan
   (`batchrun._scale.shards`), connects to the cluster (``ray.init(address)``, or a
   local one with this machine's cores), and checks every shard's rows in parallel
   before anything is sent anywhere (`batchrun._scale.checks`);
2. `answer` starts the quota actor (`batchrun._scale.quota`), hands it the API key,
   and runs the unfinished shards (`batchrun._scale.worker.run_shard`), ``workers`` at
   a time, each task retried by Ray when its process dies; finished shards are
   skipped; progress is added up from the shards' summaries while they run; a shard
   that stops for the budget, the endpoint, its answers or its disk stops the run;
3. at the end each shard writes its file of ``results.parquet/`` and its evaluation
   counts, and the run's summary.json is the shards added up
   (`batchrun._scale.aggregate`).

    lane = RayLane(settings, api_key)
    result = await Engine(settings, lane).run()
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from batchrun._engine.prepare import check_resume
from batchrun._engine.stops import StopReason
from batchrun._input.locations import recorded_location
from batchrun._output.journal import RUN_INFO, SUMMARY
from batchrun._output.mirror import location_of, refresh
from batchrun._output.rundir import RunDir, is_complete
from batchrun._output.summary import Counts, write_json_atomic
from batchrun._scale.aggregate import merged_eval, merged_summary
from batchrun._scale.checks import check_scans, sharded_run_info
from batchrun._scale.shards import PLAN, ShardPlan, load_or_plan, shard_dir
from batchrun._scale.worker import PARTS, ShardDone, ShardJob, ShardScan
from batchrun._settings import Settings
from batchrun.errors import BatchrunError, ConfigError, RunDirError

if TYPE_CHECKING:
    from batchrun._engine.lifecycle import Engine

__all__ = ["INSTALL_HINT", "RayLane", "connect", "import_ray", "unwrap"]

TASK_RETRIES = 3
"""Times Ray runs a shard again after its worker process died."""
POLL_SECONDS = 0.2
STOPS = (
    StopReason.BUDGET,
    StopReason.ENDPOINT_DOWN,
    StopReason.BAD_ANSWERS,
    StopReason.DISK_ERROR,
)
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


class RayLane:
    """Answers a run's shards on a Ray cluster (see the module docstring).

    ``served``: the endpoint's model list, asked only for a model without a price
    (`batchrun._cost.modelnames`); ``err``: where progress lines go (stderr)."""

    pilot = False
    cancel_only = False
    handing_over = False

    def __init__(
        self,
        cfg: Settings,
        api_key: str | None = None,
        *,
        err: Any = None,
        served: Callable[[], list[str] | None] | None = None,
        api_keys: Mapping[str, str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.api_key = api_key
        self.api_keys = dict(api_keys or {})
        """A pool's keys, each endpoint's by its name (`batchrun._api.endpoint_keys`)."""
        self.err = err
        self.served = served
        self.service: Any = None
        self.plan: ShardPlan | None = None
        self.total = 0
        self.invalid = 0
        self.done: dict[int, ShardDone] = {}
        self._run: Engine | None = None
        self._ray: Any = None
        self._started_ray = False
        self._jobs: list[ShardJob] = []
        self._scans: list[ShardScan] = []
        self._summary: dict[str, Any] = {}
        self._cancel: anyio.CancelScope | None = None
        self._sending = False
        """Shards were sent to (the quota actor's figures are the run's)."""

    # -- before sending ---------------------------------------------------------------
    async def prepare(self, run: Engine) -> None:
        from batchrun._scale.worker import scan_shard

        self._run = run
        ray = self._ray = import_ray()
        fingerprint, plan = await anyio.to_thread.run_sync(self._check_and_plan, run)
        self.plan = plan
        self._started_ray = connect(ray, str(self.cfg.ray))
        self._start_service()  # a new worker process: its start overlaps the checks
        jobs = self._jobs
        scan = self._remote(scan_shard, num_cpus=1, max_retries=TASK_RETRIES)
        try:
            self._scans = await self._get([scan.remote(job) for job in jobs])
        except self._ray.exceptions.RayTaskError as exc:
            raise unwrap(exc) from None
        self.total, self.invalid = check_scans(
            self.cfg, plan, self._scans, served=self.served, say=self._say
        )
        info = sharded_run_info(
            self.cfg, plan, self._scans, fingerprint=fingerprint, total=self.total
        )
        write_json_atomic(os.path.join(run.run_dir, RUN_INFO), info)
        run.facts.counts = Counts(total=self.total, invalid=self.invalid)

    def _check_and_plan(self, run: Engine) -> tuple[str, ShardPlan]:
        """The input's identity and the run directory's plan (new or recorded)."""
        from batchrun._input.sources import Source
        from batchrun._output.ledger import open_batches_refusal

        run_dir = run.run_dir
        refusal = open_batches_refusal(run_dir)
        if refusal is not None:  # the online rule: never pay for a batch's rows twice
            raise RunDirError(refusal)
        path = self.cfg.input_path
        fingerprint = Source(path).fingerprint()  # InputError: no such file
        info = RunDir(run_dir).info() or None
        check_resume(self.cfg, fingerprint, run.notes)
        if info is None and os.path.exists(os.path.join(run_dir, "results.jsonl")):
            raise RunDirError(f"{run_dir} holds a run made without --ray; use another -o directory")
        workers = self.cfg.workers or (os.cpu_count() or 1)
        plan, new = load_or_plan(run_dir, path, self.cfg.shard_rows, workers)
        if new:
            write_json_atomic(os.path.join(run_dir, PLAN), plan.to_dict())
        elif self.cfg.shard_rows and self.cfg.shard_rows != plan.shard_rows:
            run.notes.append(
                f"--shard-rows {self.cfg.shard_rows} ignored: this run's shards were planned "
                f"with {plan.shard_rows} rows each"
            )
        summary = RunDir(run_dir).summary()
        run.facts.elapsed_before = float(summary.get("elapsed_s") or 0.0)
        cfg = replace(self.cfg, input=recorded_location(path))
        remote = location_of(run_dir)  # on object storage: the tasks work on their own copy
        self._jobs = [ShardJob(cfg, os.path.abspath(run_dir), s, remote) for s in plan.shards]
        return fingerprint, plan

    def _remote(self, fn: Any, **options: Any) -> Any:
        return self._ray.remote(**options)(fn)

    async def _get(self, refs: Any) -> Any:
        return await anyio.to_thread.run_sync(self._ray.get, refs)

    # -- sending ----------------------------------------------------------------------
    async def answer(self, run: Engine) -> None:
        try:
            with anyio.CancelScope() as scope:
                self._cancel = scope
                await self._send(run)
        finally:
            with anyio.CancelScope(shield=True):
                self._summary = await self._finish(run)

    def _start_service(self) -> None:
        """Create the run's quota actor (`start_quota_service`: on the driver's node);
        its process starts while the caller goes on: started before the shard checks,
        its start-up overlaps theirs."""
        from batchrun._scale.quota import start_quota_service

        self.service = start_quota_service(
            self._ray, self.cfg, spent=spent_so_far(self.cfg, self.plan)
        )

    async def _send(self, run: Engine) -> None:
        from batchrun._scale.worker import run_shard

        todo = shards_to_run(self.cfg, self._jobs, self._scans)
        skipped = len(self._jobs) - len(todo)
        if skipped and todo:
            run.notes.append(f"{skipped} of {len(self._jobs)} shards were finished already")
        if not todo:
            return
        cfg = self.cfg
        if self.service is None:
            self._start_service()
        self._sending = True
        await self._get(self.service.set_key.remote(self.api_key, self.api_keys))
        if run.facts.stop_reason is not None:
            self.service.stop.remote(run.facts.stop_reason)
        cpus = float(self._ray.cluster_resources().get("CPU", 1))
        workers = cfg.workers or max(1, int(cpus))
        # a shard mostly waits on the network: more workers than CPUs share them
        task = self._remote(run_shard, num_cpus=min(1.0, cpus / workers), max_retries=TASK_RETRIES)
        waiting = list(todo)
        running: dict[Any, ShardJob] = {}
        next_progress = 0.0
        while waiting or running:
            while waiting and len(running) < workers and run.facts.stop_reason is None:
                job = waiting.pop(0)
                running[task.remote(job, self.service)] = job
            if not running:
                break
            ready, _ = await anyio.to_thread.run_sync(
                lambda: self._ray.wait(list(running), num_returns=1, timeout=POLL_SECONDS)
            )
            for ref in ready:
                await self._shard_ended(run, running.pop(ref), ref)
            now = time.monotonic()
            if now >= next_progress:
                next_progress = now + min(cfg.summary_interval, cfg.progress_interval)
                self._checkpoint(run)

    async def _shard_ended(self, run: Engine, job: ShardJob, ref: Any) -> None:
        try:
            done: ShardDone = await self._get(ref)
        except Exception as exc:  # the task failed for good
            cause = unwrap(exc)
            message = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            run.notes.append(f"shard {job.shard.index}: {message}")
            if isinstance(cause, BatchrunError):
                run.stop(StopReason.SHARD_FAILED)
            return
        self.done[job.shard.index] = done
        for note in done.notes:
            if note not in run.notes:
                run.notes.append(f"shard {job.shard.index}: {note}")
        if done.stop_reason in STOPS:
            run.stop(done.stop_reason)

    def _merged(self, run: Engine, status: str, extra: dict[str, Any] | None = None) -> Any:
        assert self.plan is not None
        summary = merged_summary(
            run.run_dir,
            self.plan,
            total=self.total,
            status=status,
            stop_reason=run.facts.stop_reason,
            elapsed_s=run.facts.elapsed(),
            pacing=self._pacing(),
            prices=self.cfg.prices,
            extra=extra,
        )
        summary["requests"]["invalid"] = self.invalid
        req = summary["requests"]
        run.facts.counts = Counts(req["total"], req["succeeded"], req["failed"], self.invalid)
        return summary

    def _checkpoint(self, run: Engine) -> None:
        refresh(run.run_dir, "shards/", names=(SUMMARY,))  # on object storage
        summary = self._merged(run, "running")
        write_json_atomic(os.path.join(run.run_dir, SUMMARY), summary)
        if not self.cfg.quiet:
            req = summary["requests"]
            finished = req["succeeded"] + req["failed"]
            elapsed = run.clock() - run.facts.started
            rate = finished / elapsed if elapsed > 0 else 0.0
            self._say(
                f"batchrun: {finished:,}/{req['total']:,} rows ({req['failed']:,} failed), "
                f"{summary['shards']['complete']}/{summary['shards']['total']} shards done, "
                f"{rate:,.1f} rows/s"
            )

    def _pacing(self) -> dict[str, Any]:
        if self.service is None or not self._sending:
            return {}
        try:
            pacing: dict[str, Any] = self._ray.get(self.service.summary.remote(), timeout=10)
        except Exception:  # the actor is gone (a killed cluster): no figures
            return {}
        return pacing

    def _say(self, line: str) -> None:
        from batchrun._redact import scrub_text

        err = self.err or sys.stderr
        err.write(scrub_text(line) + "\n")
        err.flush()

    # -- the end ----------------------------------------------------------------------
    def _embedding_dim(self) -> int | None:
        """An embeddings job's vector size, the same for every shard's file: the first
        shard's that holds a vector (None: not an embeddings job, or no shard does
        yet, or their files are not readable from here: each shard then finds its own)."""
        from batchrun._apis import EMBEDDINGS
        from batchrun._output.parquet import embedding_dim

        if self.cfg.api != EMBEDDINGS:
            return None
        for job in self._jobs:
            dim = embedding_dim(self.cfg, job.shard_dir)
            if dim:
                return dim
        return None

    async def _finish(self, run: Engine) -> dict[str, Any]:
        """Each shard's part of results.parquet and its evaluation counts; the shards'
        summaries added up (the counts the status and exit code are judged by)."""
        from batchrun._output.parquet import columns_of_kinds
        from batchrun._scale.worker import write_part

        kinds = [s.kinds for s in self._scans if s.kinds is not None]
        columns = columns_of_kinds(united_kinds(kinds)) if kinds else None
        parquet: dict[str, Any] | None = None
        evaluation = None
        cfg = self.cfg
        if cfg.write_parquet or (cfg.eval is not None and cfg.is_dataset):
            dim = self._embedding_dim()
            task = self._remote(write_part, num_cpus=1, max_retries=TASK_RETRIES)
            try:
                reports = await self._get([task.remote(job, columns, dim) for job in self._jobs])
            except Exception as exc:
                cause = unwrap(exc)
                run.notes.append(f"could not write {PARTS}: {cause}")
                reports = []
                parquet = {"error": str(cause)}
            if reports:
                statuses: dict[str, int] = {}
                for r in reports:
                    for k, v in r["statuses"].items():
                        statuses[k] = statuses.get(k, 0) + v
                if cfg.write_parquet:
                    where = location_of(run.run_dir)
                    parquet = {
                        "path": f"{where}/{PARTS}" if where else os.path.join(run.run_dir, PARTS),
                        "rows": sum(r["rows"] for r in reports),
                        "statuses": statuses,
                        "files": len(reports),
                    }
                evaluation = merged_eval(
                    (r.get("eval") for r in reports),
                    interval=cfg.eval.interval if cfg.eval is not None else None,
                )
        refresh(run.run_dir, "shards/")  # on object storage: every shard as committed
        summary: dict[str, Any] = self._merged(
            run, "running", {"parquet": parquet, "eval": evaluation}
        )
        if cfg.max_cost is not None:
            from batchrun._cost.bill import round_usd

            spent = (summary.get("cost_usd") or {}).get("total") or 0.0
            summary["budget"] = {"max_cost_usd": cfg.max_cost, "spent_usd": round_usd(spent)}
        return summary

    def stop(self) -> None:
        """Every shard stops (they drain and write)."""
        if self.service is not None and self._run is not None:
            self.service.stop.remote(self._run.facts.stop_reason)

    def drain(self, run: Engine) -> None:
        """The shards drain themselves."""

    def abandon(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    async def close_transport(self) -> None:
        """The shards hold the connections."""

    def closing_notes(self) -> list[str]:
        return []

    def summary(self, status: str) -> dict[str, Any]:
        return {**self._summary, "status": status}

    def save(self, summary: dict[str, Any]) -> None:
        """summary.json, then the report, as one process prints it at its end."""
        run = self._run
        assert run is not None
        write_json_atomic(os.path.join(run.run_dir, SUMMARY), summary)
        if not self.cfg.quiet:
            from batchrun._jobs.outputs import evaluation_message
            from batchrun._report.text import format_status, run_report

            # as one process says it: the evaluation, then the report without it
            evaluation = summary.get("eval")
            if evaluation is not None:
                self._say(evaluation_message(evaluation))
            report = run_report(run.run_dir, summary=summary)
            self._say(format_status({**report, "eval": None}))

    def close(self) -> None:
        if self.service is not None and self._ray is not None:
            # on a cluster this process did not start, the actor would outlive the run
            with contextlib.suppress(Exception):
                self._ray.kill(self.service)
            self.service = None
        if self._started_ray:
            self._ray.shutdown()
            self._started_ray = False

    def after_run(self) -> None:
        """Nothing follows a cluster run."""


def shards_to_run(cfg: Settings, jobs: list[ShardJob], scans: list[ShardScan]) -> list[ShardJob]:
    """The shards that need a task: not every row answered (or failed for good,
    unless --retry-failed), and a valid row at all."""
    todo = []
    for job, scan in zip(jobs, scans, strict=True):
        if scan.total == 0:
            continue
        if not (cfg.force or cfg.retry_bad_answers):
            summary = RunDir(job.shard_dir).summary()
            failed = (summary.get("requests") or {}).get("failed")
            if is_complete(summary) and not (cfg.retry_failed and failed):
                continue
        todo.append(job)
    return todo


def spent_so_far(cfg: Settings, plan: ShardPlan | None) -> float:
    """What the shards' summaries say they spent (a resumed run's cap counts it)."""
    assert plan is not None
    spent = 0.0
    for shard in plan.shards:
        summary = RunDir(shard_dir(cfg.out_dir or "", shard)).summary()
        total = (summary.get("cost_usd") or {}).get("total")
        spent += float(total or 0.0)
    return spent


def united_kinds(kinds: list[dict[str, set[str]]]) -> dict[str, set[str]]:
    """Each column's kinds of value over every shard's scan."""
    united: dict[str, set[str]] = {}
    for part in kinds:
        for name, seen in part.items():
            united.setdefault(name, set()).update(seen)
    return united
