"""Measure client CPU per request for the HTTP transports batchrun could use on its hot path.

Why: batchrun keeps ``httpx.AsyncClient`` as its API (tests inject ``httpx.MockTransport``),
but httpx's default transport (httpcore) spends more CPU per request the more connections
are open, and batchrun wants hundreds in flight. This script settles, with numbers taken in
one run on one machine, which transport keeps the per-request cost flat.

How: ``scripts/fastserver.py`` runs in a subprocess pinned to CPU 1 (when there are two
CPUs) and answers every POST with a canned ``chat.completion``. Each (variant, concurrency)
cell runs in a fresh Python subprocess pinned to CPU 0, so imports, pools and garbage from
one cell never touch another. A cell first warms up (opens its connections), then sends
``--requests`` POSTs with exactly ``concurrency`` in flight -- one worker per slot, each
awaiting its own request, pool limit equal to the concurrency -- reading and JSON-parsing
every body. It reports the client's CPU time (``time.process_time``) per request, the
wall-clock request rate, and the server's CPU per request (from ``/proc``) to show the
server was never the bottleneck. Cells cheaper than ``--repeat-under-us`` run ``--repeat``
times, round-robin, and the best run is kept (other processes only ever add CPU time);
a cell stops taking new requests after ``--max-seconds``, so slow clients measure fewer.
``--server-capacity`` instead saturates the server with a raw-protocol client.

Example::

    .venv/bin/python scripts/bench_transport.py --quick           # ~20 s smoke run
    .venv/bin/python scripts/bench_transport.py                   # full table
    .venv/bin/python scripts/bench_transport.py --variants aiohttp,httpx-slim -c 64,1024
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import resource
import select
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SERVER_SCRIPT = HERE / "fastserver.py"

REQUEST_BODY = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are a terse assistant."},
        {"role": "user", "content": "Name one prime number between 10 and 20."},
    ],
    "max_tokens": 64,
    "temperature": 0,
}
# A placeholder, not a credential: the loopback server ignores it. Sent so that each
# client pays for a realistic header set.
HEADERS = {"content-type": "application/json", "authorization": "Bearer bench-placeholder"}
PATH = "/v1/chat/completions"

VARIANTS: dict[str, str] = {
    "aiohttp": "raw aiohttp.ClientSession (baseline)",
    "httpx": "httpx.AsyncClient, default transport (httpcore)",
    "httpx-aiohttp": "httpx.AsyncClient + httpx_aiohttp.AiohttpTransport",
    "httpx-aiohttp-direct": "httpx_aiohttp.AiohttpTransport.handle_async_request, no AsyncClient",
    "httpx2": "httpx2.AsyncClient, default transport (httpcore2)",
    "httpx-slim": "httpx.AsyncClient + SlimAiohttpTransport (in this script)",
    "httpx-slim-direct": "SlimAiohttpTransport.handle_async_request, no AsyncClient",
}
DEFAULT_CONCURRENCY = (8, 64, 256, 1024)


# --------------------------------------------------------------------------------------------
# The candidate transport: httpx API on top of aiohttp, reading the body eagerly.
# --------------------------------------------------------------------------------------------


def make_slim_transport_class() -> type:
    """Build ``SlimAiohttpTransport`` lazily so the parent process never imports httpx/aiohttp.

    The transport hands an ``httpx.Request`` to a shared ``aiohttp.ClientSession`` and returns
    an ``httpx.Response`` whose body is already read. Compared with httpx-aiohttp it skips the
    per-request SSL/proxy plumbing, the ``ClientTimeout`` construction (cached per timeout
    tuple) and the streamed body (one ``read()`` instead of an async chunk iterator), which
    suits non-streaming completions whose bodies are small.
    """
    import aiohttp
    import httpx

    class SlimAiohttpTransport(httpx.AsyncBaseTransport):
        def __init__(self, session: aiohttp.ClientSession) -> None:
            self._session = session
            self._timeouts: dict[tuple[Any, Any, Any], aiohttp.ClientTimeout] = {}

        def _timeout(self, ext: dict[str, Any]) -> aiohttp.ClientTimeout:
            key = (ext.get("connect"), ext.get("read"), ext.get("pool"))
            timeout = self._timeouts.get(key)
            if timeout is None:
                timeout = aiohttp.ClientTimeout(
                    sock_connect=key[0], sock_read=key[1], connect=key[2]
                )
                self._timeouts[key] = timeout
            return timeout

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            timeout = self._timeout(request.extensions.get("timeout", {}))
            try:
                async with self._session.request(
                    request.method,
                    str(request.url),
                    headers=request.headers.multi_items(),
                    data=request.content or None,
                    allow_redirects=False,
                    auto_decompress=False,  # httpx decodes Content-Encoding itself
                    compress=False,
                    timeout=timeout,
                ) as resp:
                    content = await resp.read()
            except aiohttp.ClientConnectorError as exc:
                raise httpx.ConnectError(str(exc), request=request) from exc
            except aiohttp.ConnectionTimeoutError as exc:
                raise httpx.ConnectTimeout(str(exc), request=request) from exc
            except TimeoutError as exc:  # aiohttp's read timeouts subclass it
                raise httpx.ReadTimeout(str(exc), request=request) from exc
            except aiohttp.ClientPayloadError as exc:
                raise httpx.ReadError(str(exc), request=request) from exc
            except aiohttp.ClientError as exc:
                raise httpx.NetworkError(str(exc), request=request) from exc
            return httpx.Response(
                resp.status,
                headers=resp.raw_headers,
                content=content,
                request=request,
                extensions={"http_version": b"HTTP/1.1"},
            )

        async def aclose(self) -> None:
            await self._session.close()

    return SlimAiohttpTransport


# --------------------------------------------------------------------------------------------
# Worker side: one (variant, concurrency) cell per process.
# --------------------------------------------------------------------------------------------

OneRequest = Callable[[], Awaitable[None]]
Close = Callable[[], Awaitable[None]]


async def build_variant(name: str, url: str, concurrency: int) -> tuple[OneRequest, Close]:
    """Return ``(one_request, close)`` for a variant; ``one_request`` sends, reads, parses."""
    import orjson

    body = orjson.dumps(REQUEST_BODY)

    if name == "aiohttp":
        import aiohttp

        session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=concurrency),
            headers=HEADERS,
            timeout=aiohttp.ClientTimeout(total=120),
        )

        async def one_aiohttp() -> None:
            async with session.post(url, data=body) as resp:
                data = await resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"status {resp.status}")
            orjson.loads(data)

        return one_aiohttp, session.close

    if name in ("httpx", "httpx2"):
        hx: Any = __import__(name)
        client = hx.AsyncClient(
            headers=HEADERS,
            timeout=120.0,
            limits=hx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency),
        )

        async def one_httpx() -> None:
            resp = await client.post(url, content=body)
            if resp.status_code != 200:
                raise RuntimeError(f"status {resp.status_code}")
            orjson.loads(resp.content)

        return one_httpx, client.aclose

    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    transport: Any
    if name.startswith("httpx-aiohttp"):
        from httpx_aiohttp import AiohttpTransport

        transport = AiohttpTransport(limits=limits)
    elif name.startswith("httpx-slim"):
        import aiohttp

        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency))
        transport = make_slim_transport_class()(session)
    else:
        raise SystemExit(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)}")

    if not name.endswith("-direct"):
        client = httpx.AsyncClient(transport=transport, headers=HEADERS, timeout=120.0)

        async def one_client() -> None:
            resp = await client.post(url, content=body)
            if resp.status_code != 200:
                raise RuntimeError(f"status {resp.status_code}")
            orjson.loads(resp.content)

        return one_client, client.aclose

    timeout_ext = httpx.Timeout(120.0).as_dict()

    async def one_direct() -> None:
        request = httpx.Request(
            "POST", url, content=body, headers=HEADERS, extensions={"timeout": timeout_ext}
        )
        resp = await transport.handle_async_request(request)
        try:
            await resp.aread()
        finally:
            await resp.aclose()
        if resp.status_code != 200:
            raise RuntimeError(f"status {resp.status_code}")
        orjson.loads(resp.content)

    return one_direct, transport.aclose


def server_cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` from /proc (clock-tick resolution, usually 10 ms)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return float("nan")
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def drive(one: OneRequest, total: int, concurrency: int, deadline: float) -> tuple[int, int]:
    """Send ``total`` requests with ``concurrency`` workers; stop early at ``deadline``.

    Returns ``(done, errors)``. Each worker takes a ticket, awaits one request, repeats --
    so exactly ``concurrency`` requests are in flight until the tickets run out.
    """
    left = total
    done = 0
    errors: list[BaseException] = []

    async def worker() -> None:
        nonlocal left, done
        while left > 0 and time.monotonic() < deadline and len(errors) < 20:
            left -= 1
            try:
                await one()
            except Exception as exc:  # counted and reported; a few are tolerated
                errors.append(exc)
            else:
                done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    if errors:
        print(f"first error: {errors[0]!r}", file=sys.stderr, flush=True)
    return done, len(errors)


async def run_cell(args: argparse.Namespace) -> dict[str, Any]:
    url = f"http://127.0.0.1:{args.port}{PATH}"
    one, close = await build_variant(args.worker, url, args.concurrency)
    start = time.monotonic()
    hard_deadline = start + args.cell_timeout
    try:
        warmup = min(args.requests, args.concurrency + 200)
        await drive(one, warmup, args.concurrency, hard_deadline)
        gc.collect()
        srv0 = server_cpu_seconds(args.server_pid)
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        deadline = min(hard_deadline, time.monotonic() + args.max_seconds)
        done, errors = await drive(one, args.requests, args.concurrency, deadline)
        wall = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        srv = server_cpu_seconds(args.server_pid) - srv0
    finally:
        await close()
    n = max(done, 1)
    return {
        "variant": args.worker,
        "concurrency": args.concurrency,
        "requests": done,
        "errors": errors,
        "truncated": done + errors < args.requests,
        "cpu_us": cpu / n * 1e6,
        "rps": done / wall if wall > 0 else 0.0,
        "server_cpu_us": srv / n * 1e6,
        "wall_s": wall,
    }


class _LoadConn(asyncio.Protocol):
    """One keep-alive connection of the raw load generator: send, await a full reply, repeat.

    The reply size is known in advance (fastserver's canned response), so completion is just
    a byte count -- the cheapest possible client, to find the server's own ceiling.
    """

    def __init__(self, request: bytes, reply_size: int, state: dict[str, Any]) -> None:
        self.request, self.reply_size, self.state = request, reply_size, state
        self.pending = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        self.pending += len(data)
        while self.pending >= self.reply_size:
            self.pending -= self.reply_size
            self.state["done"] += 1
            if time.monotonic() < self.state["until"] and self.transport is not None:
                self.transport.write(self.request)
            elif self.transport is not None:
                self.transport.close()


async def server_capacity(port: int, server_pid: int, connections: int, seconds: float) -> dict:
    """Drive fastserver with a raw-protocol keep-alive client and measure served req/s."""
    sys.path.insert(0, str(HERE))
    import fastserver  # the canned reply's exact size

    body = json.dumps(REQUEST_BODY).encode()
    request = (
        f"POST {PATH} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    loop = asyncio.get_running_loop()
    state: dict[str, Any] = {"done": 0, "until": time.monotonic() + 3600}
    conns = [
        await loop.create_connection(
            lambda: _LoadConn(request, len(fastserver.RESPONSE), state), "127.0.0.1", port
        )
        for _ in range(connections)
    ]
    await asyncio.sleep(0.5)  # warm up
    srv0, done0, t0 = server_cpu_seconds(server_pid), state["done"], time.perf_counter()
    state["until"] = time.monotonic() + seconds
    await asyncio.sleep(seconds)
    wall = time.perf_counter() - t0
    done = state["done"] - done0
    srv = server_cpu_seconds(server_pid) - srv0
    await asyncio.sleep(0.2)
    for transport, _ in conns:
        transport.close()
    return {
        "connections": connections,
        "rps": done / wall,
        "server_cpu_us": srv / max(done, 1) * 1e6,
        "server_cpu_share": srv / wall,
    }


def worker_main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    if args.worker == "server-capacity":
        result = asyncio.run(server_capacity(args.port, args.server_pid, args.concurrency, 3.0))
        print("RESULT " + json.dumps(result), flush=True)
        return
    result = asyncio.run(run_cell(args))
    print("RESULT " + json.dumps(result), flush=True)


# --------------------------------------------------------------------------------------------
# Parent side: server lifecycle, cell scheduling, the table.
# --------------------------------------------------------------------------------------------


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def pin(pid: int, cpu: int) -> bool:
    """Pin ``pid`` to one CPU when there are at least two; report whether it happened."""
    if not hasattr(os, "sched_setaffinity") or (os.cpu_count() or 1) < 2:
        return False
    os.sched_setaffinity(pid, {cpu})
    return True


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int


def start_server(python: str, use_uvloop: bool, timeout: float = 15.0) -> Server:
    cmd = [python, str(SERVER_SCRIPT), "--port", "0"] + (["--uvloop"] if use_uvloop else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    try:
        pin(proc.pid, 1)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], timeout)
        line = proc.stdout.readline() if ready else ""
        if not line.startswith("listening on "):
            raise RuntimeError(f"fastserver did not start: {line!r}")
        return Server(proc, int(line.split()[-1]))
    except BaseException:
        stop_server(proc)
        raise


def stop_server(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def run_worker(variant: str, concurrency: int, server: Server, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        variant,
        "--port",
        str(server.port),
        "--server-pid",
        str(server.proc.pid),
        "-c",
        str(concurrency),
        "--requests",
        str(args.requests),
        "--cell-timeout",
        str(args.cell_timeout),
        "--max-seconds",
        str(args.max_seconds),
    ]
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=args.cell_timeout + 60, check=False
        )
    except subprocess.TimeoutExpired:
        return {"variant": variant, "concurrency": concurrency, "failed": "timeout"}
    for line in reversed(out.stdout.splitlines()):
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT ") :])
            if out.stderr.strip():
                result["stderr"] = out.stderr.strip()[-300:]
            return result
    return {"variant": variant, "concurrency": concurrency, "failed": out.stderr.strip()[-500:]}


def versions() -> str:
    names = ["aiohttp", "httpx", "httpcore", "httpx-aiohttp", "httpx2", "httpcore2", "orjson"]
    found = []
    for name in names:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} (absent)")
    return ", ".join(found)


def render(results: list[dict], variants: list[str], concurrencies: list[int]) -> str:
    cell = {(r["variant"], r["concurrency"]): r for r in results}

    def get(v: str, c: int) -> dict | None:
        r = cell.get((v, c))
        return None if r is None or "failed" in r else r

    head = "| variant | " + " | ".join(f"{c} in flight" for c in concurrencies) + " |"
    rule = "|---|" + "---:|" * len(concurrencies)
    lines = [
        "Client CPU per request, µs, best of the runs (ratio to raw aiohttp at the same"
        " concurrency; [n] = requests measured when the time cap cut the cell short):",
        "",
    ]
    lines += [head, rule]
    for v in variants:
        row = []
        for c in concurrencies:
            r, base = get(v, c), get("aiohttp", c)
            if r is None:
                row.append("failed")
                continue
            text = f"{r['cpu_us']:.0f}"
            if base and v != "aiohttp":
                text += f" ({r['cpu_us'] / base['cpu_us']:.1f}x)"
            if r["errors"]:
                text += f" [{r['requests']} ok, {r['errors']} err]"
            elif r["truncated"]:
                text += f" [{r['requests']}]"
            row.append(text)
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    lines += ["", "Requests per second (wall clock, best of the runs):", "", head, rule]
    for v in variants:
        row = [f"{r['rps']:,.0f}" if (r := get(v, c)) else "failed" for c in concurrencies]
        lines.append(f"| {v} | " + " | ".join(row) + " |")
    srv = [r["server_cpu_us"] for r in results if "failed" not in r and r["requests"] >= 1000]
    if srv:
        lines += [
            "",
            f"Server CPU per request over all cells: {min(srv):.0f}-{max(srv):.0f} µs "
            f"(median {sorted(srv)[len(srv) // 2]:.0f} µs; /proc tick resolution 10 ms).",
        ]
    runs = {r["variant"]: r.get("runs", 1) for r in results if "failed" not in r}
    lines.append("Runs per cell: " + ", ".join(f"{v} {n}" for v, n in runs.items()) + ".")
    failed = [r for r in results if "failed" in r]
    for r in failed:
        lines.append(f"FAILED {r['variant']} @ {r['concurrency']}: {r['failed']}")
    return "\n".join(lines)


def describe(r: dict) -> str:
    head = f"{r['variant']:>22} @ {r['concurrency']:>4}: "
    if "failed" in r:
        return head + f"FAILED {r['failed']}"
    return head + (
        f"{r['cpu_us']:7.0f} µs/req cpu  {r['rps']:8.0f} req/s  server {r['server_cpu_us']:4.0f}"
        f" µs/req  ({r['requests']} ok, {r['errors']} err, {r['wall_s']:.1f} s)"
    )


def best_of(cell_runs: list[dict]) -> dict:
    """Keep the run with the least client CPU per request; record every run's figure.

    Interference from other processes (cache misses, preemption) only ever adds CPU time,
    so the minimum is the best estimate of a client's own cost -- the same reason ``timeit``
    reports the best of its repeats.
    """
    ok = [r for r in cell_runs if "failed" not in r]
    if not ok:
        return cell_runs[0]
    merged = dict(min(ok, key=lambda r: r["cpu_us"]))
    merged["rps"] = max(r["rps"] for r in ok)
    merged["runs"] = len(ok)
    merged["cpu_us_runs"] = [round(r["cpu_us"], 1) for r in ok]
    return merged


def parent_main(args: argparse.Namespace) -> None:
    variants = args.variants.split(",")
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if "aiohttp" not in variants:
        variants.insert(0, "aiohttp")  # every ratio needs its baseline from the same run
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    pinned = pin(0, 0)  # children inherit CPU 0; the server is moved to CPU 1
    print(
        f"# nproc={os.cpu_count()} pinned={pinned} python={platform.python_version()} "
        f"requests={args.requests} server={'uvloop' if args.server_uvloop else 'asyncio'}",
        flush=True,
    )
    print(f"# {versions()}", flush=True)
    started = time.monotonic()
    server = start_server(args.server_python, args.server_uvloop)
    results: list[dict] = []
    try:
        if args.server_capacity:
            for c in concurrencies:
                r = run_worker("server-capacity", c, server, args)
                print(f"server capacity @ {c:>4} connections: {r}", flush=True)
            return
        runs: dict[tuple[str, int], list[dict]] = {}
        for round_no in range(1, args.repeat + 1):
            for c in concurrencies:
                for v in variants:
                    earlier = runs.get((v, c), [])
                    if earlier and (
                        "failed" in earlier[0] or earlier[0]["cpu_us"] > args.repeat_under_us
                    ):
                        continue  # slow cells dominate run time and their rank is not in doubt
                    r = run_worker(v, c, server, args)
                    runs.setdefault((v, c), []).append(r)
                    print(f"round {round_no} " + describe(r), flush=True)
        results = [best_of(cell_runs) for cell_runs in runs.values()]
    finally:
        stop_server(server.proc)
    print(f"\n# total {time.monotonic() - started:.0f} s\n")
    print(render(results, variants, concurrencies))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4000, help="measured POSTs per cell")
    parser.add_argument(
        "-c", "--concurrency", default=",".join(map(str, DEFAULT_CONCURRENCY)),
        help="comma-separated in-flight counts (one int in --worker mode)",
    )  # fmt: skip
    parser.add_argument("--variants", default=",".join(VARIANTS), help=", ".join(VARIANTS))
    parser.add_argument("--quick", action="store_true", help="smoke run: 400 requests, 8,256")
    parser.add_argument("--cell-timeout", type=float, default=90.0, help="seconds per cell")
    parser.add_argument("--server-python", default=sys.executable, help="python for fastserver")
    parser.add_argument("--server-uvloop", action="store_true", help="run fastserver on uvloop")
    parser.add_argument("--repeat", type=int, default=3, help="runs per cell; best reported")
    parser.add_argument(
        "--repeat-under-us", type=float, default=1000.0,
        help="only repeat cells whose first run cost at most this many CPU µs per request",
    )  # fmt: skip
    parser.add_argument(
        "--max-seconds", type=float, default=12.0,
        help="stop a cell's measured phase after this long (slow clients send fewer requests)",
    )  # fmt: skip
    parser.add_argument("--json", help="also write raw results to this file")
    parser.add_argument(
        "--server-capacity", action="store_true",
        help="instead: saturate fastserver with a raw-protocol client for 3 s per concurrency",
    )  # fmt: skip
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--server-pid", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        args.concurrency = int(args.concurrency)
        worker_main(args)
        return
    if args.quick:
        args.requests = min(args.requests, 400)
        args.concurrency = "8,256"
        args.cell_timeout = min(args.cell_timeout, 20.0)
        args.repeat = 1
    parent_main(args)


if __name__ == "__main__":
    main()
