"""How fast a resume finds what is done: `read_journal` on a million results.

Why: rerunning `batchrun run` on a big run directory must start at once (target:
under 3 s for 1,000,000 results) and hold memory proportional to the number of
ids, never to the size of the response bodies.

The script builds a run directory with N realistic result lines (~700 bytes, a
chat.completion body with usage, written by batchrun's own encoder) plus the
summary.json checkpoint a live run leaves (written ``--tail`` lines before the
end, as if the process was killed a moment after its last checkpoint). Then it
measures, each in a fresh subprocess so timings and peak RSS do not mix:

  journal+ckpt  read_journal with the checkpoint (the normal resume)
  journal-full  read_journal with summary.json removed (full parse of every line)
  readlines     just reading the file line by line (the floor: I/O + splitting)
  orjson.loads  orjson.loads of every line (the floor for any full parse)
  json.loads    stdlib json.loads of every line (a naive resume)

Peak RSS is ru_maxrss; "added" is peak minus the RSS after imports, i.e. what the
pass itself holds. Page cache is warm (the file was just written).

Example::

    .venv/bin/python scripts/bench_resume.py                  # 1,000,000 lines
    .venv/bin/python scripts/bench_resume.py --lines 200000 --profile journal-full
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from batchrun._models import Attempt, Outcome, Request  # noqa: E402

MODES = ("journal+ckpt", "journal-full", "readlines", "orjson.loads", "json.loads")
MODELS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-nano")
WORDS = (
    "the results suggest a clear pattern across every sample we reviewed and the team "
    "agrees that a careful next step is to measure again with a larger batch before "
    "drawing a firm conclusion about cost latency or quality"
).split()


def _rss_mib() -> float:
    """Current RSS (not the peak), from /proc."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# -- building the run directory ---------------------------------------------------------
def build(run_dir: str, lines: int, tail: int, target_bytes: int) -> dict[str, float]:
    from batchrun._output.journal import RESULTS, SUMMARY
    from batchrun._output.lines import encode
    from batchrun._output.summary import Counts, build_summary, write_json_atomic
    from batchrun._output.tally import Tally

    os.makedirs(run_dir, exist_ok=True)
    started = time.perf_counter()
    tally = Tally()
    ok = [Attempt(200, "ok")]
    checkpoint_at = 0
    written = 0
    # the content length that makes a line about target_bytes long
    probe = _outcome(ok, 0, "x")
    pad = max(0, target_bytes - len(encode(probe)))
    with open(os.path.join(run_dir, RESULTS), "wb", buffering=8 << 20) as f:
        for i in range(lines):
            words = " ".join(WORDS[(i + k) % len(WORDS)] for k in range(pad // 6 + 1))[:pad]
            outcome = _outcome(ok, i, words)
            line = encode(outcome)
            f.write(line)
            written += len(line)
            if i < lines - tail:
                tally.count(True, outcome.body, [200])
                checkpoint_at = written
    open(os.path.join(run_dir, "errors.jsonl"), "wb").close()
    summary = build_summary(
        status="running",
        input_path="requests.jsonl",
        counts=Counts(total=lines, succeeded=lines - tail),
        tally=tally,
        elapsed_s=1234.5,
        results_bytes=checkpoint_at,
        errors_bytes=0,
    )
    write_json_atomic(os.path.join(run_dir, SUMMARY), summary)
    return {"seconds": time.perf_counter() - started, "bytes": written}


def _outcome(ok: list[Attempt], i: int, content: str) -> Outcome:
    """One realistic chat.completion result (~target bytes once encoded)."""
    model = MODELS[i % len(MODELS)]
    prompt, completion = 20 + i % 300, 5 + i % 400
    body = {
        "id": f"chatcmpl-{i:012d}",
        "object": "chat.completion",
        "created": 1730000000 + i,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": i % 3 * 16, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
        },
        "system_fingerprint": "fp_5b4838043f",
    }
    return Outcome.success(
        Request(f"row-{i + 1}", {}, i + 1),
        status=200,
        request_id=f"req_{i:024x}",
        body=body,
        attempts=ok,
        latency_s=0.5 + (i % 1000) / 1000,
    )


# -- one measurement (runs in a fresh subprocess) ------------------------------------------
def measure(mode: str, run_dir: str) -> dict[str, float]:
    from batchrun._output.journal import read_journal

    results = os.path.join(run_dir, "results.jsonl")
    base = _rss_mib()
    started = time.perf_counter()
    if mode in ("journal+ckpt", "journal-full"):
        # repair=False: identical work on an intact file, and the file is left alone
        state = read_journal(run_dir, repair=False)
        count = len(state.done)
    elif mode == "readlines":
        count = 0
        with open(results, "rb") as f:
            for _line in f:
                count += 1
    elif mode in ("orjson.loads", "json.loads"):
        import orjson

        loads = orjson.loads if mode == "orjson.loads" else json.loads
        count = 0
        with open(results, "rb") as f:
            for line in f:
                loads(line)
                count += 1
    else:
        raise SystemExit(f"unknown mode {mode}")
    seconds = time.perf_counter() - started
    peak = _peak_mib()
    added = max(0.0, peak - base)
    return {"seconds": seconds, "peak_mib": peak, "added_mib": added, "lines": count}


def _run_child(mode: str, run_dir: str, profile: bool = False) -> dict[str, float]:
    cmd = [sys.executable, os.path.abspath(__file__), "--measure", mode, run_dir]
    if profile:
        cmd.append("--profile-child")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    if profile:
        print(out.stdout)
        return {}
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--line-bytes", type=int, default=700, help="target size of one line")
    parser.add_argument(
        "--tail", type=int, default=2_000, help="lines written after the last checkpoint"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per mode (median shown)")
    parser.add_argument("--dir", help="build (or reuse) the run directory here")
    parser.add_argument("--keep", action="store_true", help="do not delete the directory")
    parser.add_argument("--profile", choices=MODES, help="print a cProfile of one mode")
    parser.add_argument("--measure", nargs=2, metavar=("MODE", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--profile-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.measure:
        mode, run_dir = args.measure
        if args.profile_child:
            import cProfile
            import pstats

            prof = cProfile.Profile()
            prof.runcall(measure, mode, run_dir)
            pstats.Stats(prof).sort_stats("tottime").print_stats(12)
            return
        print(json.dumps(measure(mode, run_dir)))
        return

    own_dir = args.dir is None
    run_dir = args.dir or tempfile.mkdtemp(prefix="bench-resume-")
    try:
        results = os.path.join(run_dir, "results.jsonl")
        if not os.path.exists(results):
            built = build(run_dir, args.lines, args.tail, args.line_bytes)
            print(
                f"built {args.lines:,} lines, {built['bytes'] / 2**20:,.0f} MiB "
                f"({built['bytes'] / args.lines:,.0f} B/line) in {built['seconds']:.1f} s"
            )
        size = os.path.getsize(results)
        full_dir = run_dir + "-nockpt"
        os.makedirs(full_dir, exist_ok=True)
        for name in ("results.jsonl", "errors.jsonl"):
            target = os.path.join(full_dir, name)
            if not os.path.exists(target):
                os.link(os.path.join(run_dir, name), target)  # same bytes, no summary.json
        dirs = {"journal+ckpt": run_dir, "journal-full": full_dir}

        if args.profile:
            _run_child(args.profile, dirs.get(args.profile, run_dir), profile=True)
            return

        rows = {}
        for mode in MODES:
            runs = [_run_child(mode, dirs.get(mode, run_dir)) for _ in range(args.repeat)]
            assert {r["lines"] for r in runs} == {args.lines}, (mode, runs)
            rows[mode] = {
                "seconds": statistics.median(r["seconds"] for r in runs),
                "added_mib": statistics.median(r["added_mib"] for r in runs),
                "peak_mib": statistics.median(r["peak_mib"] for r in runs),
            }
        floor = rows["readlines"]["seconds"]
        print(
            f"\n{args.lines:,} results, {size / 2**20:,.0f} MiB, checkpoint "
            f"{args.tail:,} lines before the end; median of {args.repeat} fresh processes\n"
        )
        print(
            f"| {'pass':<13} | {'time s':>7} | {'x readlines':>11} | {'peak RSS MiB':>12} "
            f"| {'added MiB':>9} | {'B/id':>5} |"
        )
        print(f"|{'-' * 15}|{'-' * 9}|{'-' * 13}|{'-' * 14}|{'-' * 11}|{'-' * 7}|")
        for mode, r in rows.items():
            per_id = r["added_mib"] * 2**20 / args.lines
            print(
                f"| {mode:<13} | {r['seconds']:>7.2f} | {r['seconds'] / floor:>11.2f} "
                f"| {r['peak_mib']:>12.0f} | {r['added_mib']:>9.0f} | {per_id:>5.0f} |"
            )
        verdict = all(rows[m]["seconds"] < 3.0 for m in ("journal+ckpt", "journal-full"))
        print(f"\ntarget (< 3 s with and without checkpoint): {'met' if verdict else 'MISSED'}")
    finally:
        if own_dir and not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
            shutil.rmtree(run_dir + "-nockpt", ignore_errors=True)


if __name__ == "__main__":
    main()
