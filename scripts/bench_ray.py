"""A run on a Ray cluster (issue 18), measured against one process in the same run.

* ``throughput``: N requests against a fast local server, ``batchrun run`` in one
  process, then ``batchrun run --ray ADDRESS --workers 2`` on a 2-CPU local cluster
  this script starts first (so the cluster's ~4 s start is not in the figures).
  Reported per run: the send phase's requests per second (rows / span of the finish
  times the result lines record: the shard checks and the merge are left out), the
  whole command's wall time, and CPU per request two ways: the processes below this
  script (the command, and the Ray cluster's daemons, workers and quota actor; sampled
  every 0.1 s);
  and the machine's busy CPU time over the command (/proc/stat, less the server's own
  CPU time; it also counts anything else running on the machine). A third line runs
  two plain ``batchrun run`` processes at once on half the rows each, no Ray: what any
  way of using two senders can reach on this machine at that moment (the ceiling the
  Ray run is judged against, since other jobs share these two cores). Two servers:
  ``scripts/fastserver.py`` (a bare asyncio protocol answering one canned completion:
  the server's cost removed as far as it can be here) and ``batchrun sim`` (a real
  OpenAI-shaped server). On a 2-core machine the server, the driver, Ray's daemons
  and both workers share the two cores.
* ``quota``: ``batchrun sim --rpm R --start-drained`` (the bucket empty at the start,
  as after another client); one process, then 4 workers with ``--ray --workers 4``.
  Quota use = admitted / (R/60 x span of the arrivals), from the simulator's record;
  with the share of 429s. ``--rpm 1200,2400``: a pool of two simulators (one quota
  each, ``--endpoint e0=... --endpoint e1=...``), each endpoint's quota use.

* ``leases`` (issue 29): the quota actor's capacity. A local 2-CPU cluster, one
  `QuotaService` actor as a run makes it (one call at a time), and ``--clients``
  Ray tasks asking it for leases of ``--lease`` requests as fast as they can for
  ``--seconds``, on a counted quota of 50,000 requests/s and on a model with no known
  quota: leases per second, the latency of one call, the requests granted per second,
  and the actor's CPU per call. ``--pin``: the actor on CPU 1, everything else this
  script started on CPU 0; ``--drained``: the counted bucket spent first, so the
  grants are the quota's refill.
* ``startup`` (issue 29): seconds from the command to the first request the server
  sees (the simulator's arrival times, CLOCK_MONOTONIC like this script's): one
  process, ``--ray local`` (the command starts its own cluster) and ``--ray ADDRESS``
  (a cluster already running).

    $ .venv/bin/python scripts/bench_ray.py                    # throughput and quota, ~4 minutes
    $ .venv/bin/python scripts/bench_ray.py --case throughput --requests 40000
    $ .venv/bin/python scripts/bench_ray.py --case leases --lease 4096 --pin --drained
    $ .venv/bin/python scripts/bench_ray.py --case startup
    $ .venv/bin/python scripts/bench_ray.py --case quota --rpm 1200,2400 --quota-requests 1800
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.path.dirname(sys.executable), "batchrun")
TICKS = os.sysconf("SC_CLK_TCK")


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (not idle, not waiting on I/O)."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return (sum(fields[:8]) - idle) / TICKS


def process_seconds(pid: int, *, reaped: bool = False) -> float:
    """A process's CPU seconds; ``reaped``: with its children that have exited (a
    raylet's workers of a job that ended)."""
    with open(f"/proc/{pid}/stat") as f:
        parts = f.read().rsplit(")", 1)[1].split()
    used = int(parts[11]) + int(parts[12])
    if reaped:
        used += int(parts[13]) + int(parts[14])
    return used / TICKS


def role(pid: int) -> str:
    """What a process is, for the CPU breakdown: a Ray worker by the task or actor it
    last ran (Ray sets its title: ``ray::run_shard``), else its program's name."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv = f.read().split(b"\0")
    except OSError:
        return "?"
    first = argv[0].decode(errors="replace").split()[0] if argv and argv[0] else "?"
    if first.startswith("ray::"):
        return first.split(".")[0]
    name = os.path.basename(first)
    if name.startswith("python"):  # a script's name, or -m's module
        args = [a.decode(errors="replace") for a in argv[1:] if a and a != b"-m"]
        script = next((a for a in args if not a.startswith("-")), "")
        return os.path.basename(script) or name
    return name


def descendants(root: int) -> dict[int, float]:
    """pid -> CPU seconds of every live process below ``root``."""
    parent: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    parent[int(name)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found: dict[int, float] = {}
    for pid in parent:
        p, hops = pid, 0
        while p in parent and p != root and hops < 64:
            p, hops = parent[p], hops + 1
        if p == root and pid != root:
            try:
                found[pid] = process_seconds(pid)
            except OSError:
                continue
    return found


class TreeCPU:
    """CPU seconds spent by the processes below this one while it runs (sampled every
    0.1 s, so a process that lives a short while loses at most its last 0.1 s): the
    command, and the Ray cluster's daemons and workers, which outlive it or die first."""

    def __init__(self, skip: set[int]) -> None:
        self.skip = skip
        self.before = descendants(os.getpid())
        self.seen: dict[int, float] = dict(self.before)
        self.roles: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self._look()

    def _look(self) -> None:
        for pid, used in descendants(os.getpid()).items():
            self.seen[pid] = max(used, self.seen.get(pid, 0.0))
            name = role(pid)
            if name not in ("ray::IDLE", "?") or pid not in self.roles:
                self.roles[pid] = name

    def stop(self) -> float:
        self._stop.set()
        self._thread.join()
        self._look()
        return sum(
            used - self.before.get(pid, 0.0)
            for pid, used in self.seen.items()
            if pid not in self.skip
        )

    def by_role(self) -> dict[str, float]:
        """CPU seconds spent while sampled, by `role` (a worker by what it last ran)."""
        out: dict[str, float] = {}
        count: dict[str, int] = {}
        for pid, used in self.seen.items():
            spent = used - self.before.get(pid, 0.0)
            if pid not in self.skip and spent > 0:
                name = self.roles.get(pid, "?")
                out[name] = out.get(name, 0.0) + spent
                count[name] = count.get(name, 0) + 1
        return {f"{name} x{count[name]}": used for name, used in out.items()}


def rows(n: int) -> list[dict[str, Any]]:
    return [
        {
            "custom_id": f"r{i}",
            "model": "gpt-4o-mini",
            "max_tokens": 16,
            "messages": [{"role": "user", "content": f"row {i}: say something short"}],
        }
        for i in range(n)
    ]


def start_server(kind: str, extra: list[str]) -> tuple[subprocess.Popen[str], str]:
    if kind == "fast":
        command = [sys.executable, os.path.join(ROOT, "scripts", "fastserver.py"), "--port", "0"]
    else:
        command = [sys.executable, "-m", "batchrun", "sim", "--port", "0", *extra]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line:
        proc.kill()
        raise SystemExit(f"{kind} server did not start")
    port = line.rsplit(":", 1)[-1].rsplit(" ", 1)[-1].strip("/")
    if kind == "fast":
        return proc, f"http://127.0.0.1:{port}/v1"
    return proc, line.rsplit(" ", 1)[-1]


def run_once(
    paths: list[str], out: str, base_url: str, server_pid: int, extra: list[str]
) -> dict[str, Any]:
    """``batchrun run`` on each of ``paths`` at once (one: the usual case; two halves:
    what two independent processes reach on this machine), CPU counted for the process
    tree and for the Ray cluster this script runs (whose processes outlive a command)."""
    commands = [
        [BIN, "run", path, "-o", os.path.join(out, str(i)), "--base-url", base_url,
         "--auth", "none", "-q", "--no-parquet", "--quality-breaker", "0", *extra]
        for i, path in enumerate(paths)
    ]  # fmt: skip
    sampler = TreeCPU(skip={server_pid})
    cpu0, server0, started = busy_seconds(), process_seconds(server_pid), time.monotonic()
    procs = [subprocess.Popen(c, stderr=subprocess.PIPE, text=True) for c in commands]
    codes = [(p.wait(), p.communicate()[1]) for p in procs]
    wall = time.monotonic() - started
    cpu = busy_seconds() - cpu0
    tree = sampler.stop()
    roles = sampler.by_role()
    server = process_seconds(server_pid) - server0
    for code, err in codes:
        if code not in (0, 4):
            print(err, file=sys.stderr)
            raise SystemExit(f"batchrun run exited {code}")
    finished: list[float] = []
    ids = 0
    for folder, _, files in os.walk(out):
        if "results.jsonl" in files:
            with open(os.path.join(folder, "results.jsonl"), "rb") as f:
                for line in f:
                    record = json.loads(line)
                    finished.append(record["batchrun"]["at"])
                    ids += 1
    span = max(finished) - min(finished)
    return {
        "rows": ids,
        "send_rps": ids / span if span > 0 else float("inf"),
        "wall_s": wall,
        "client_cpu_us": (cpu - server) / ids * 1e6,
        "tree_cpu_us": tree / ids * 1e6,
        "server_cpu_share": server / wall,
        "roles": {k: v for k, v in sorted(roles.items(), key=lambda kv: -kv[1]) if v >= 0.05},
    }


def throughput(n: int, concurrency: int, server: str, address: str) -> None:
    proc, base_url = start_server(server, [])
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "in.jsonl")
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows(n))
            halves = [os.path.join(tmp, "a.jsonl"), os.path.join(tmp, "b.jsonl")]
            everything = rows(n)
            for i, half in enumerate(halves):
                with open(half, "w") as f:
                    f.writelines(json.dumps(r) + "\n" for r in everything[i::2])
            common = ["-c", str(concurrency)]
            one = run_once([path], os.path.join(tmp, "one"), base_url, proc.pid, common)
            shard_rows = str(max(1000, n // 8))
            ray_args = [*common, "--ray", address, "--workers", "2", "--shard-rows", shard_rows]
            two = run_once([path], os.path.join(tmp, "two"), base_url, proc.pid, ray_args)
            pair = run_once(halves, os.path.join(tmp, "pair"), base_url, proc.pid, common)
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\nthroughput: {n:,} requests, -c {concurrency} per process, {server} server")
    print(
        f"{'':24} {'send req/s':>11} {'wall s':>8} {'CPU us/req (tree)':>18}"
        f" {'(machine)':>10} {'server CPU':>11}"
    )
    runs = (("one process", one), ("--ray, 2 workers", two), ("2 processes, half each", pair))
    for name, r in runs:
        print(
            f"{name:24} {r['send_rps']:11,.0f} {r['wall_s']:8.1f} {r['tree_cpu_us']:18,.0f}"
            f" {r['client_cpu_us']:10,.0f} {r['server_cpu_share']:10.0%}"
        )
    for name, r in runs:
        parts = ", ".join(f"{k} {v:.2f}" for k, v in r["roles"].items())
        print(f"  CPU s by process, {name}: {parts}")
    print(
        f"ratio (2 plain processes / one): send req/s {pair['send_rps'] / one['send_rps']:.2f}x"
        " (what this machine allows two senders now)"
    )
    print(
        f"ratio (2 workers / one): send req/s {two['send_rps'] / one['send_rps']:.2f}x, "
        f"wall {two['wall_s'] / one['wall_s']:.2f}x, "
        f"CPU per request {two['tree_cpu_us'] / one['tree_cpu_us']:.2f}x (tree), "
        f"{two['client_cpu_us'] / one['client_cpu_us']:.2f}x (machine)"
    )


def quota_use(stats: dict[str, Any], rpm: float) -> tuple[float, float, int, int]:
    arrivals = sorted(stats["arrivals"])
    by_status = {int(k): v for k, v in stats["by_status"].items()}
    admitted = by_status.get(200, 0)
    span = arrivals[-1] - arrivals[0]
    sent = stats["requests"]
    # a drained bucket: the server could admit one request at the first arrival and
    # then rpm/60 a second
    use = admitted / (1 + rpm / 60.0 * span)
    return use, by_status.get(429, 0) / sent, sent, by_status.get(429, 0)


def quota(n: int, rpms: list[int], workers: int) -> None:
    """One simulator quota per ``rpms`` entry (one: the run's endpoint; more: a pool
    of them, ``--endpoint eI=URL``), one process then ``workers`` on a cluster."""
    results: dict[str, list[tuple[float, float, int, int]]] = {}
    walls: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "in.jsonl")
        with open(path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows(n))
        for name, extra in (
            ("one process", []),
            (f"--ray, {workers} workers", ["--ray", "--workers", str(workers)]),
        ):
            servers = []
            try:
                for rpm in rpms:
                    sim_args = ["--rpm", str(rpm), "--start-drained", "--latency-ms", "20",
                                "--jitter-ms", "10"]  # fmt: skip
                    servers.append(start_server("sim", sim_args))
                if len(servers) == 1:
                    where = ["--base-url", servers[0][1]]
                else:
                    where = [a for i, (_, url) in enumerate(servers)
                             for a in ("--endpoint", f"e{i}={url}")]  # fmt: skip
                shard = ["--shard-rows", str(max(1, n // workers))] if extra else []
                out = os.path.join(tmp, name.split(",")[0].strip("-"))
                started = time.monotonic()
                command = [BIN, "run", path, "-o", out, *where, "--auth", "none", "-q",
                           "--no-parquet", "--quality-breaker", "0", *extra, *shard]  # fmt: skip
                done = subprocess.run(command, capture_output=True, text=True)
                walls[name] = time.monotonic() - started
                if done.returncode not in (0, 4):
                    print(done.stderr, file=sys.stderr)
                    raise SystemExit(f"batchrun run exited {done.returncode}")
                results[name] = []
                for (_, url), rpm in zip(servers, rpms, strict=True):
                    with urllib.request.urlopen(url.removesuffix("/v1") + "/_sim/stats") as r:
                        results[name].append(quota_use(json.loads(r.read()), rpm))
            finally:
                for proc, _ in servers:
                    proc.terminate()
                    proc.wait(10)
    quotas = " + ".join(str(r) for r in rpms)
    print(f"\nshared quota: {n:,} requests, simulator quotas of {quotas} RPM, drained at start")
    print(f"{'':24} {'quota use':>16} {'429s':>8} {'sent':>7} {'wall s':>8}")
    for name, each in results.items():
        use = "/".join(f"{u:.1%}" for u, *_ in each)
        sent, limited = sum(e[2] for e in each), sum(e[3] for e in each)
        share = limited / sent if sent else 0.0
        print(f"{name:24} {use:>16} {share:8.2%} {sent:7,} {walls[name]:8.1f}  ({limited} 429s)")


def lease_calls(service: Any, worker: str, seconds: float, want: int) -> tuple[int, float, float]:
    """A Ray task: ask ``service`` for leases of ``want`` one after another for
    ``seconds``; (calls, seconds spent waiting for answers, requests granted)."""
    import ray

    from batchrun._scale.lease import Report

    calls, waited, granted = 0, 0.0, 0.0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        started = time.monotonic()
        grant = ray.get(
            service.lease.remote(worker, "gpt-4o-mini", want, 100, Report(ok=1, answered=1))
        )
        waited += time.monotonic() - started
        granted += grant.requests
        calls += 1
    return calls, waited, granted


def drain(service: Any) -> int:
    """Spend the counted bucket (a minute's worth at the start) until a lease comes
    back smaller than the largest: from then on the book grants what the quota
    refills. Returns the calls made; gives up after 30 s (leases of 64 at a few
    hundred calls a second never drain a bucket that refills 50,000 a second)."""
    import ray

    from batchrun._scale.lease import Report

    calls, end = 0, time.monotonic() + 30.0
    while time.monotonic() < end:
        grant = ray.get(service.lease.remote("drain", "gpt-4o-mini", 1 << 20, 100, Report()))
        calls += 1
        if grant.requests < getattr(grant, "largest", 64):  # what refilled since the last
            return calls
    raise SystemExit("the bucket did not drain in 30 s: leases smaller than its refill")


def pin(pids: list[int], cpus: set[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, cpus)


def leases(clients: int, seconds: float, want: int, pinned: bool, drained: bool) -> None:
    """The quota actor's capacity (see the module docstring); ``pinned``: the actor on
    CPU 1, everything else this script started (the clients, Ray's daemons) on CPU 0,
    so the load does not share the actor's core (other users of the machine may);
    ``drained``: the counted bucket spent first, so what is granted is the quota's
    refill (can the actor pass on all of it?)."""
    import logging

    import ray

    from batchrun._scale.quota import QuotaService

    ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
    try:
        for rpm in (3_000_000, None):  # a counted quota of 50,000 requests/s, and none known
            actor = ray.remote(QuotaService).options(num_cpus=0, max_concurrency=1)
            service = actor.remote(
                concurrency=100_000, rpm=rpm, tpm=None, by_model={}, max_cost=None
            )
            ray.get(service.summary.remote())  # started
            pid = ray.get(service.__ray_call__.remote(lambda _self: os.getpid()))
            task = ray.remote(num_cpus=0)(lease_calls)
            ray.get([task.remote(service, f"warm{i}", 0.5, want) for i in range(clients)])
            if drained and rpm:
                ray.get(ray.remote(num_cpus=0)(drain).remote(service))
            if pinned:
                pin([p for p in descendants(os.getpid()) if p != pid] + [os.getpid()], {0})
                pin([pid], {1})
            cpu0 = process_seconds(pid)
            started = time.monotonic()
            got = ray.get([task.remote(service, f"w{i}", seconds, want) for i in range(clients)])
            span = time.monotonic() - started
            actor_cpu = process_seconds(pid) - cpu0
            calls = sum(c for c, _, _ in got)
            latency = sum(w for _, w, _ in got) / calls
            rate = calls / span
            per_lease = actor_cpu / calls
            kind = "counted quota, 50,000/s" if rpm else "no known quota"
            if drained and rpm:
                kind += ", its bucket drained first"
            where = "actor pinned to CPU 1, the rest to CPU 0" if pinned else "not pinned"
            print(
                f"\nquota actor, {kind}, {where}: {clients} clients x {seconds:.0f} s asking "
                f"{want} a lease: {calls:,} leases, {rate:,.0f} leases/s, "
                f"{latency * 1e3:.2f} ms a call (round trip); the actor's CPU "
                f"{per_lease * 1e6:,.0f} us a lease (a core of its own: "
                f"{1 / per_lease:,.0f} leases/s)"
            )
            if rpm:
                each = sum(g for _, _, g in got) / calls
                print(
                    f"  {each:,.0f} requests a lease: {rate * each:,.0f} requests/s granted "
                    f"as measured, {each / per_lease:,.0f} with a core of its own"
                )
            else:
                print("  time slices of 1 s: one call per worker a second, at any rate")
            ray.kill(service)
            pin([os.getpid()], set(range(os.cpu_count() or 1)))
    finally:
        ray.shutdown()


def first_request(command: list[str], base_url: str) -> tuple[float, float]:
    """(seconds from the command's start to the server's first arrival, wall seconds)."""
    root = base_url.removesuffix("/v1")
    urllib.request.urlopen(urllib.request.Request(root + "/_sim/reset", method="POST")).read()
    url = root + "/_sim/stats"
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.monotonic() - started
    if done.returncode not in (0, 4):
        print(done.stderr, file=sys.stderr)
        raise SystemExit(f"batchrun run exited {done.returncode}")
    with urllib.request.urlopen(url) as r:
        stats = json.loads(r.read())
    return min(stats["arrivals"]) - started, wall


def startup(n: int) -> None:
    import logging

    import ray

    proc, base_url = start_server("sim", [])
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "in.jsonl")
            with open(path, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows(n))
            common = ["--base-url", base_url, "--auth", "none", "-q", "--no-parquet"]
            runs = [("one process", []), ("--ray local (starts a cluster)", ["--ray", "local"])]
            for i, (name, extra) in enumerate(runs):
                out = os.path.join(tmp, f"r{i}")
                results[name] = first_request([BIN, "run", path, "-o", out, *common, *extra],
                                              base_url)  # fmt: skip
            context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
            try:
                address = context.address_info["address"]
                out = os.path.join(tmp, "running")
                command = [BIN, "run", path, "-o", out, *common, "--ray", address]
                results["--ray ADDRESS (running cluster)"] = first_request(command, base_url)
            finally:
                ray.shutdown()
    finally:
        proc.terminate()
        proc.wait(10)
    print(f"\ntime from the command to the first request ({n:,} requests, simulator)")
    for name, (first, wall) in results.items():
        print(f"{name:34} first request {first:6.2f} s, whole command {wall:6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--case", choices=["throughput", "quota", "leases", "startup", "all"], default="all"
    )
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--lease", type=int, default=64, help="leases: requests asked a lease")
    parser.add_argument(
        "--pin", action="store_true", help="leases: the actor on CPU 1, the rest on CPU 0"
    )
    parser.add_argument(
        "--drained", action="store_true", help="leases: the counted bucket spent first"
    )
    parser.add_argument("--requests", type=int, default=30_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--server", choices=["fast", "sim", "both"], default="both")
    parser.add_argument("--quota-requests", type=int, default=1_200)
    parser.add_argument(
        "--rpm", default="1200", help="the quota's RPM; several, comma-separated: a pool"
    )
    parser.add_argument("--workers", type=int, default=4)
    args = parser.parse_args()
    if args.case in ("throughput", "all"):
        import logging

        import ray

        # one cluster for every --ray run: its start is not what is measured, and its
        # processes outlive each command, so their CPU time can be read
        context = ray.init(num_cpus=2, include_dashboard=False, logging_level=logging.WARNING)
        address = context.address_info["address"]
        servers = ["fast", "sim"] if args.server == "both" else [args.server]
        try:
            for server in servers:
                throughput(args.requests, args.concurrency, server, address)
        finally:
            ray.shutdown()
    if args.case in ("quota", "all"):
        quota(args.quota_requests, [int(r) for r in args.rpm.split(",")], args.workers)
    if args.case == "leases":
        leases(args.clients, args.seconds, args.lease, args.pin, args.drained)
    if args.case == "startup":
        startup(200)


if __name__ == "__main__":
    main()
