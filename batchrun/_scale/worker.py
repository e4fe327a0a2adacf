"""One shard of a cluster run, in a Ray task: the same pipeline as one process.

A shard is the online `Runner` on its own run directory (``RUN_DIR/shards/00003/``),
reading only the shard's rows of the input (`batchrun._input.sources.Span`) and paced
by leases from the run's quota actor (`batchrun._scale.quota`). Everything that makes
one process exactly-once holds per shard: its flock, its journal, its resume. When a
worker process dies (SIGKILL, a lost node), the kernel releases the shard's flock with
it, Ray runs the task again, and the new attempt resumes from the journal: a line
that was written is never sent again, a line that was not is sent once more.

Three tasks, each a plain function the driver wraps with ``ray.remote``:

* `scan_shard`: check the shard's rows before anything is sent anywhere (bad rows,
  duplicate ids within the shard; ids hashed stably for the check across shards);
* `run_shard`: send what the shard has not finished (a pool of endpoints routed as
  one process routes it, `leased_accounts`);
* `write_part`: its file of ``RUN_DIR/results.parquet/`` and its evaluation counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from hashlib import blake2b
from typing import TYPE_CHECKING, Any

import orjson

from batchrun._engine.hooks import CompositeHooks, RunHooks
from batchrun._input.sources import Source
from batchrun._output.journal import ERRORS, RESULTS
from batchrun._runfiles import holder
from batchrun._scale.shards import Shard, shard_dir
from batchrun._settings import Settings
from batchrun.errors import InputError

if TYPE_CHECKING:
    from batchrun._pacing.pool import Pool
    from batchrun._scale.lease import LeasedAccounts
    from batchrun._values import Endpoint

PARTS = "results.parquet"
"""The merged results: a directory of Parquet files, one per shard."""
PART_INFO = "part.json"
LOCK_WAIT_SECONDS = 120.0
"""A retried shard waits this long for an earlier attempt still holding its flock."""


@dataclass(frozen=True)
class ShardJob:
    """What a task needs to find its shard: the run's settings, directory and shard."""

    settings: Settings
    run_dir: str
    shard: Shard
    remote: str | None = None
    """The run's location on object storage (``s3://bucket/prefix``), or None: then
    ``run_dir`` is a directory every node sees. With it, a task works on a local copy
    of the shard's keys on its own node (`on_this_node`)."""

    @property
    def shard_dir(self) -> str:
        return shard_dir(self.run_dir, self.shard)

    def shard_settings(self) -> Settings:
        """The shard's own settings: its directory, no live page, nothing printed, a
        summary every second at least."""
        return replace(
            self.settings,
            out_dir=self.shard_dir,
            ray=None,
            quiet=True,
            serve=None,
            write_parquet=False,
            # the driver's live progress adds up the shards' summaries
            summary_interval=min(self.settings.summary_interval, 1.0),
        )

    def source(self) -> Source:
        from batchrun._input.select import source_for

        return source_for(self.shard_settings(), self.shard.span)


@dataclass
class ShardScan:
    index: int
    total: int = 0
    invalid: int = 0
    models: set[str] = field(default_factory=set)
    columns: set[str] | None = None
    ids: bytes = b""
    """Every valid row's id as 8 bytes of blake2b (the same in every process)."""
    kinds: dict[str, set[str]] | None = None
    """Dataset JSONL input: the kinds of value each column holds (for one schema)."""


def stable_id_hash(custom_id: str) -> int:
    return int.from_bytes(blake2b(custom_id.encode(), digest_size=8).digest(), "little")


def scan_shard(job: ShardJob) -> ShardScan:
    """Check the shard's rows (raises InputError as a whole-file run would)."""
    source = job.source()
    result = ShardScan(job.shard.index)
    ids = array("Q")

    def hash_id(req: Any, _payload: bytes) -> None:
        ids.append(stable_id_hash(req.custom_id))

    try:
        # the ids are hashed as the scan meets each valid request: no second pass
        # over the rows (~10 us a row here)
        scan = source.scan(observe=hash_id, keep_bodies=False)
    except InputError as exc:
        # a shard with no valid row is fine when other shards have some (the driver
        # raises "no requests" when none has)
        reason = exc.reason
        if exc.where != "0" or not ("no valid request" in reason or "holds no" in reason):
            raise
        result.invalid = sum(1 for _ in source.rows())  # every row of it is invalid
        return result
    result.total, result.invalid = scan.total, scan.invalid
    result.models = scan.models
    result.columns = scan.columns
    result.ids = ids.tobytes()
    if source.dataset and source.kind != "parquet":
        from batchrun._output.parquet import jsonl_value_kinds

        result.kinds = jsonl_value_kinds(source.rows())
    return result


@contextlib.contextmanager
def on_this_node(job: ShardJob, *, sends: bool) -> Iterator[ShardJob]:
    """The job as a task works on it: the same job when the run directory is shared;
    for a run on object storage, a fresh local copy of the shard's keys on this node's
    disk (`batchrun._output.mirror.RunMirror`): its journal rebuilt from the committed
    segments, its new lines (``sends``) committed as segments at the run's commit
    interval, its summary, part.json and results.parquet part put back.

    The shard's own lease (``shards/00003/lease.json``) plays its flock's part: an
    earlier attempt still alive (a zombie on a node Ray gave up on) holds it, and this
    one waits for it as `wait_for_lock` waits for a flock: until it is released,
    expires (30 s after its holder stopped renewing it), or its holder is a gone
    process of this machine. The segments' conditional creates stay the last guard."""
    if job.remote is None:
        yield job
        return
    from batchrun._output.mirror import RunMirror
    from batchrun._output.segments import CommitInterval
    from batchrun.errors import LeaseHeld

    name, cfg = job.shard.name, job.settings
    where = f"shards/{name}"
    deadline = time.monotonic() + LOCK_WAIT_SECONDS
    while True:
        mirror = RunMirror(
            job.remote,
            interval=CommitInterval(rows=cfg.commit_rows, seconds=cfg.commit_interval),
            journals=(where,) if sends else (),
            owned=(f"{where}/", f"{PARTS}/part-{name}.parquet"),
            pull_prefix=f"{where}/",
            lease_key=f"{where}/lease.json",
        )
        try:
            local = mirror.open()
        except LeaseHeld:
            if time.monotonic() >= deadline:
                raise
            time.sleep(1.0)
            continue
        break
    try:
        yield replace(job, run_dir=local, remote=None)
    finally:
        mirror.close()


# -- sending ----------------------------------------------------------------------------
@dataclass
class ShardDone:
    """How one attempt at a shard ended."""

    index: int
    exit_code: int
    status: str
    stop_reason: str | None
    notes: list[str]
    pid: int
    lease_calls: int = 0


def wait_for_lock(shard_dir: str, seconds: float = LOCK_WAIT_SECONDS) -> None:
    """An attempt still running the shard (its process not yet gone) holds the flock;
    a killed one's was released by the kernel. Wait for the first kind to finish."""
    deadline = time.monotonic() + seconds
    while holder(shard_dir) is not None and time.monotonic() < deadline:
        time.sleep(0.1)


def run_shard(job: ShardJob, service: Any) -> ShardDone:
    """Send the shard's unfinished rows (a Ray task; see the module docstring)."""
    with on_this_node(job, sends=True) as here:
        return _run_shard(here, service)


def _run_shard(job: ShardJob, service: Any) -> ShardDone:
    import anyio
    import ray

    from batchrun._cost.budget import CostHooks
    from batchrun._engine.runner import Runner
    from batchrun._scale.quota import LeaseClient

    cfg = job.shard_settings()
    worker = f"shard-{job.shard.name}-{os.getpid()}"
    key, keys = ray.get([service.key.remote(), service.keys.remote()])
    wait_for_lock(job.shard_dir)
    client = LeaseClient(service, worker, concurrency=cfg.concurrency)
    cost = CostHooks(cfg)
    hooks: list[RunHooks] = [cost]
    if cfg.max_cost is not None:
        from batchrun._scale.budget import SharedBudget

        async def reserve(amount: float, worst: float) -> tuple[float, bool]:
            granted: tuple[float, bool] = await service.reserve.remote(worker, amount, worst)
            return granted

        def settle(spent: float, released: float) -> None:
            service.settle.remote(worker, spent, released)

        hooks.append(SharedBudget(cost, cfg.max_cost, reserve, settle))
    hooks.append(_EvalColumnCheck(cfg))
    runner = Runner(
        cfg,
        api_key=key,
        source=job.source(),
        hooks=CompositeHooks(*hooks),
        accounts=leased_accounts(cfg, client.accounts),
        api_keys=keys,
    )

    async def main() -> Any:
        loop = asyncio.get_running_loop()

        def stop(reason: str) -> None:
            loop.call_soon_threadsafe(runner.interrupt, 1, signal.SIGINT)

        client.on_stop = stop
        client.start()
        return await runner.run()

    try:
        result = anyio.run(main)
    finally:
        client.close()
    return ShardDone(
        job.shard.index,
        result.exit_code,
        result.status,
        runner.stop_reason,
        list(result.notes),
        os.getpid(),
        client.calls,
    )


def leased_accounts(cfg: Settings, leased: LeasedAccounts) -> LeasedAccounts | Pool:
    """What a worker's runner paces by: its lease client's accounts; for a pool of
    endpoints, the pool (`batchrun._engine.pool.build_pool`: routed as one process
    routes it), each endpoint's accounts leased from the run's one account per
    endpoint and model (`LeasedAccounts.endpoint`)."""
    if not cfg.endpoints:
        return leased
    from batchrun._engine.pool import build_pool, endpoint_limits

    def accounts(e: Endpoint) -> LeasedAccounts:
        return leased.endpoint(e.name, concurrency=endpoint_limits(e)["concurrency"])

    return build_pool(cfg, time.monotonic, accounts)


class _EvalColumnCheck(RunHooks):
    """The [eval] reference column must exist (checked before the shard sends)."""

    def __init__(self, cfg: Settings) -> None:
        from batchrun._jobs.outputs import DatasetOutputHooks

        self.check = DatasetOutputHooks(cfg)

    def before_send(self, state: Any, scan: Any) -> None:
        self.check.before_send(state, scan)


# -- the merged outputs -----------------------------------------------------------------
def part_path(run_dir: str, shard: Shard) -> str:
    return os.path.join(run_dir, PARTS, f"part-{shard.name}.parquet")


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def write_part(
    job: ShardJob, jsonl_columns: list[tuple[str, str]] | None, dim: int | None = None
) -> dict[str, Any]:
    """The shard's file of results.parquet and its evaluation counts, rebuilt only when
    the shard's output changed since the last time (a finished shard costs nothing;
    on object storage it is written each time). ``dim``: an embeddings job's vector
    size over every shard (`embedding_dim`), so a shard that got no vector has the
    others' schema."""
    with on_this_node(job, sends=False) as here:
        return _write_part(here, jsonl_columns, dim)


def _write_part(
    job: ShardJob, jsonl_columns: list[tuple[str, str]] | None, dim: int | None = None
) -> dict[str, Any]:
    from batchrun._output.parquet import write_results_parquet
    from batchrun._output.summary import write_json_atomic

    cfg = replace(job.shard_settings(), write_parquet=job.settings.write_parquet)
    path = part_path(job.run_dir, job.shard) if cfg.write_parquet else None
    key = {
        "results_bytes": _size(os.path.join(job.shard_dir, RESULTS)),
        "errors_bytes": _size(os.path.join(job.shard_dir, ERRORS)),
        "columns": jsonl_columns,
        "dim": dim,
        "eval": orjson.loads(orjson.dumps(cfg.eval, default=lambda o: o.__dict__)),
        "path": path,
    }
    info_path = os.path.join(job.shard_dir, PART_INFO)
    try:
        with open(info_path, "rb") as f:
            before = orjson.loads(f.read())
        if before.get("key") == key and (path is None or os.path.exists(path)):
            report: dict[str, Any] = before["report"]
            return report
    except (OSError, orjson.JSONDecodeError, AttributeError):
        pass
    os.makedirs(job.shard_dir, exist_ok=True)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    written = write_results_parquet(
        cfg, path, source=job.source(), jsonl_columns=jsonl_columns, dim=dim
    )
    report = {
        "rows": written.rows,
        "statuses": written.statuses,
        "eval": written.eval,
        "renamed": written.renamed,
    }
    write_json_atomic(info_path, {"key": key, "report": report})
    return report


__all__ = [
    "PARTS",
    "ShardDone",
    "ShardJob",
    "ShardScan",
    "on_this_node",
    "part_path",
    "leased_accounts",
    "run_shard",
    "scan_shard",
    "stable_id_hash",
    "wait_for_lock",
    "write_part",
]
