"""Pacing per model (issue 14): three cases that broke one shared account, measured.

Each case starts ``batchrun sim`` in a child process and runs the real CLI
(``batchrun run``, no --rpm/--tpm) against it, then reads the simulator's own
record (arrival times and statuses per model, on its clock).

* ``mixed``: a 6-RPM model and a 3,000-RPM one on one endpoint. The fast model's
  rows alone, then with slow rows interleaved: the fast rows must finish in <= 1.2x
  their time alone. Then a variant where both quotas bind (fast 1,200 RPM, 2,000
  rows): each model's quota reached >= 95 % (admitted / (C + r*T) over that model's
  own arrival span), with <= 2 % 429s.
* ``drained``: a 1,200-RPM quota already used up, -c 256: <= 1 % 429s and within
  5 % of the time the quota allows (n / refill rate); the same from a full bucket
  must still go at full speed.
* ``isolated``: 2 % random 429s with Retry-After: 1 (the quota never exhausted):
  3,000 rows within 2x the time of a clean run.

    $ .venv/bin/python scripts/bench_pacing.py              # every case, ~3 minutes
    $ .venv/bin/python scripts/bench_pacing.py --case isolated
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_ratelimit import Drive, drive  # noqa: E402


def rows_for(models: list[tuple[str, int]], *, interleave: bool = True) -> list[dict[str, Any]]:
    """Rows for each (model, count); interleaved evenly, as a mixed input would be."""
    streams = [[(m, i) for i in range(n)] for m, n in models]
    order: list[tuple[str, int]] = []
    if interleave:
        total = sum(len(s) for s in streams)
        cursors = [0] * len(streams)
        for k in range(total):
            # each stream gets its share of positions
            j = max(
                range(len(streams)),
                key=lambda s: (len(streams[s]) * (k + 1) / total) - cursors[s],
            )
            order.append(streams[j][cursors[j]])
            cursors[j] += 1
    else:
        for s in streams:
            order.extend(s)
    return [
        {
            "custom_id": f"{m}-{i}",
            "model": m,
            "max_tokens": 16,
            "messages": [{"role": "user", "content": f"{m} row {i}"}],
        }
        for m, i in order
    ]


def model_view(run: Drive, model: str) -> dict[str, Any]:
    seen = run.stats["by_model"].get(model) or {"arrivals": [], "by_status": {}}
    arrivals = sorted(seen["arrivals"])
    statuses = {int(k): v for k, v in seen["by_status"].items()}
    return {
        "arrivals": arrivals,
        "admitted": statuses.get(200, 0),
        "sent": sum(statuses.values()),
        "429": statuses.get(429, 0),
    }


def quota_use(view: dict[str, Any], rpm: float) -> float:
    """admitted / (C + r*T) over the model's own span: how much of its quota it used."""
    arrivals = view["arrivals"]
    span = arrivals[-1] - arrivals[0] if arrivals else 0.0
    return float(view["admitted"]) / (rpm + rpm / 60.0 * span)


def start_of(run: Drive) -> float:
    return min(m["arrivals"][0] for m in run.stats["by_model"].values() if m["arrivals"])


def mixed() -> list[str]:
    sim = ["--model-rpm", "slow=6", "--model-rpm", "fast=3000", "--latency-ms", "20"]
    alone = drive(sim, rows_for([("fast", 300)]), ())
    together = drive(sim, rows_for([("fast", 300), ("slow", 10)]), ())
    t_alone = model_view(alone, "fast")["arrivals"][-1] - start_of(alone)
    fast = model_view(together, "fast")
    t_mixed = fast["arrivals"][-1] - start_of(together)
    slow = model_view(together, "slow")
    lines = [
        f"mixed:    300 fast rows alone {t_alone:.2f} s; with 10 slow rows interleaved "
        f"{t_mixed:.2f} s ({t_mixed / t_alone:.2f}x alone, target <= 1.2x); slow rows "
        f"done over {slow['arrivals'][-1] - slow['arrivals'][0]:.1f} s, "
        f"429s {fast['429'] + slow['429']}; wall {together.wall:.1f} s",
    ]
    binding = ["--model-rpm", "slow=6", "--model-rpm", "fast=1200", "--latency-ms", "20"]
    both = drive(binding, rows_for([("fast", 2000), ("slow", 10)]), ())
    for model, rpm in (("fast", 1200.0), ("slow", 6.0)):
        view = model_view(both, model)
        share = view["429"] / max(1, view["sent"])
        lines.append(
            f"          both bind: {model} {view['admitted']} rows at {rpm:g} RPM: "
            f"{quota_use(view, rpm):.1%} of its quota (target >= 95%), "
            f"429s {view['429']} ({share:.2%}, target <= 2%)"
        )
    lines.append(f"          results exactly once: {_once(both, 2010)}; wall {both.wall:.1f} s")
    return lines


def drained() -> list[str]:
    n, rpm = 600, 1200.0
    rows = rows_for([("gpt-4o-mini", n)])
    lines = []
    for label, extra in (("drained", ["--start-drained"]), ("full", [])):
        run = drive(["--rpm", str(int(rpm)), "--latency-ms", "20", *extra], rows, ("-c", "256"))
        view = model_view(run, "gpt-4o-mini")
        span = view["arrivals"][-1] - view["arrivals"][0]
        share = view["429"] / max(1, view["sent"])
        if label == "drained":
            allowed = n / (rpm / 60.0)
            lines.append(
                f"drained:  {n} rows from a used-up {rpm:g}-RPM quota, -c 256: 429s "
                f"{view['429']} ({share:.2%}, target <= 1%); last admitted at "
                f"{span:.1f} s vs {allowed:.1f} s the quota allows "
                f"({span / allowed - 1:+.1%}, target <= +5%); once: {_once(run, n)}"
            )
        else:
            lines.append(
                f"          from a full quota: all {n} admitted within {span:.2f} s, 429s "
                f"{view['429']}; wall {run.wall:.1f} s"
            )
    return lines


def isolated() -> list[str]:
    n = 3000
    rows = rows_for([("gpt-4o-mini", n)])
    base = ["--latency-ms", "50", "--jitter-ms", "20"]
    clean = drive(base, rows, ())
    noisy = drive([*base, "--error-rate", "429=0.02", "--retry-after", "1"], rows, ())
    ratio = noisy.wall / clean.wall
    return [
        f"isolated: {n} rows clean {clean.wall:.1f} s; with 2% random 429s (Retry-After 1) "
        f"{noisy.wall:.1f} s ({ratio:.2f}x, target <= 2x); 429s "
        f"{noisy.stats['rate_limited']}, pacing {noisy.summary['pacing'].get('isolated_429')} "
        f"isolated, cooldown {noisy.summary['pacing'].get('cooldown_s')} s; "
        f"once: {_once(noisy, n)}",
    ]


def _once(run: Drive, n: int) -> bool:
    return len(run.ids) == n and set(run.ids.values()) == {1} and run.failed == 0


CASES = {"mixed": mixed, "drained": drained, "isolated": isolated}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=[*CASES, "all"], default="all")
    args = parser.parse_args(argv)
    for name in CASES if args.case == "all" else [args.case]:
        for line in CASES[name]():
            print(line, flush=True)


if __name__ == "__main__":
    main()
