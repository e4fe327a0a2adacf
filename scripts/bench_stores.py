"""What the object stores of a run directory cost per operation, against the local
servers the tests use: moto (S3), fake-gcs-server (GCS) and Azurite (Azure Blob).

Why: a run on object storage commits a segment every --commit-rows rows (1,000) or
--commit-interval seconds (5), renews its lease every 10 s, and a restart rebuilds
its journals from the segments; this says what each of those costs on each store's
emulator (an upper bound for the real services' client-side cost, not their
latency). Azurite must be installed (scripts/test installs it into .venv/azurite).

Example::

    .venv/bin/python scripts/bench_stores.py               # 20 segments of 1,000 lines
    .venv/bin/python scripts/bench_stores.py --segments 50
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import ExitStack
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # the tests' servers

from batchrun._output.segments import SegmentLog  # noqa: E402
from tests.objectstores import (  # noqa: E402
    Backend,
    azure_backend,
    azurite_server,
    gcs_backend,
    gcs_server,
    s3_backend,
)
from tests.s3server import local_s3  # noqa: E402

LINE = b'{"custom_id": "x", "response": "' + b"a" * 380 + b'"}\n'  # 423 bytes


def bench(backend: Backend, segments: int, lines: int) -> str:
    store = backend.store(backend.location("runs/bench"))
    log = SegmentLog(store, "", owner="bench")
    data = LINE * lines
    start = time.perf_counter()
    for number in range(segments):
        log.commit(number, data, b"")
    commit = (time.perf_counter() - start) / segments
    etag = store.create("lease.json", b"{}")
    start = time.perf_counter()
    for _ in range(20):
        etag = store.replace("lease.json", b"{}", etag)
    renew = (time.perf_counter() - start) / 20
    start = time.perf_counter()
    state = SegmentLog(store, "").rebuild()
    rebuild = time.perf_counter() - start
    assert state.result_lines == segments * lines
    size = len(data) * segments / 1e6
    return (
        f"| {backend.scheme} | {commit * 1000:.1f} ms | {renew * 1000:.1f} ms | "
        f"{segments} ({size:.1f} MB) in {rebuild:.2f} s |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--segments", type=int, default=20)
    parser.add_argument("--lines", type=int, default=1000, help="lines a segment")
    args = parser.parse_args()
    print(f"| store | commit a {args.lines:,}-line segment | lease renewal | rebuild |")
    print("|---|---:|---:|---:|")
    with ExitStack() as stack:
        backends = [
            s3_backend(stack.enter_context(local_s3())),
            stack.enter_context(gcs_backend(stack.enter_context(gcs_server()))),
            stack.enter_context(azure_backend(stack.enter_context(azurite_server()))),
        ]
        for backend in backends:
            print(bench(backend, args.segments, args.lines), flush=True)


if __name__ == "__main__":
    main()
