"""What does a cascade save, and what does it cost in accuracy? (issue 27)

Runs jobs/cascade.toml (1,000 labelled reviews; the simulator's "weak" model, sure on
about 70 % of them, then "strong", right about 95 % of the time at ten times the price)
as a cascade for each threshold, and "strong" alone, in temporary directories, against
one in-process simulator that counts the requests each model got. Prints, per
threshold: the share escalated, the cascade's accuracy and bootstrap interval, its
cost, that cost over strong alone's (measured, not estimated), the cascade's own
estimate of strong alone (``last_stage_alone_usd``) and the requests each model got.
With ``--json``: the same as JSON. Everything runs offline.

    $ .venv/bin/python scripts/bench_cascade.py
    $ .venv/bin/python scripts/bench_cascade.py --thresholds 0.8 --json
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import batchrun
from batchrun._jobs.jobfile import load_job
from batchrun.sim import SimConfig, SimThread

JOB = Path(__file__).resolve().parent.parent / "jobs" / "cascade.toml"


def answered(sim: SimThread) -> dict[str, int]:
    by_model = sim.stats.to_dict()["by_model"]
    return {m: s["by_status"].get("200", 0) for m, s in by_model.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--thresholds", type=float, nargs="+", default=[0.5, 0.7, 0.8, 0.9, 0.95, 0.97]
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    out: dict[str, Any] = {"cascades": []}
    with tempfile.TemporaryDirectory() as tmp, SimThread(SimConfig()) as sim:
        common = {"base_url": sim.base_url, "auth": "none", "quiet": True}
        started = time.perf_counter()
        job = load_job(JOB)
        plain = replace(job, values={k: v for k, v in job.values.items() if k != "cascade"})
        alone = batchrun.run_job(plain, out_dir=f"{tmp}/strong", model="strong", **common)
        strong = {
            "accuracy": alone.summary["eval"]["accuracy"],
            "interval": alone.summary["eval"]["accuracy_interval"],
            "cost_usd": alone.summary["cost_usd"]["total"],
            "requests": answered(sim),
            "seconds": round(time.perf_counter() - started, 2),
        }
        out["strong_alone"] = strong
        for threshold in args.thresholds:
            before = answered(sim)
            started = time.perf_counter()
            run = batchrun.run_job(
                JOB,
                out_dir=f"{tmp}/cascade-{threshold}",
                cascade={"models": ["weak", "strong"], "escalate_below": threshold},
                **common,
            )
            block = run.summary["cascade"]
            after = answered(sim)
            out["cascades"].append(
                {
                    "escalate_below": threshold,
                    "share_escalated": block["share_escalated"],
                    "accuracy": block["eval"]["accuracy"],
                    "interval": block["eval"]["accuracy_interval"],
                    "cost_usd": block["cost_usd"],
                    "cost_vs_strong": block["cost_usd"] / strong["cost_usd"],
                    "last_stage_alone_usd": block["last_stage_alone_usd"],
                    "requests": {m: after.get(m, 0) - before.get(m, 0) for m in after},
                    "seconds": round(time.perf_counter() - started, 2),
                }
            )
    if args.json:
        print(json.dumps(out, indent=2))
        return
    s = out["strong_alone"]
    print(
        f"strong alone: accuracy {s['accuracy']:.3f} [{s['interval']['low']:.3f}, "
        f"{s['interval']['high']:.3f}], cost ${s['cost_usd']:.4f}"
    )
    print(
        "below  escalated  accuracy  interval         cost     vs strong  est. strong  weak  strong"
    )
    for c in out["cascades"]:
        print(
            f"{c['escalate_below']:<5}  {c['share_escalated']:>8.1%}  {c['accuracy']:>8.3f}  "
            f"[{c['interval']['low']:.3f}, {c['interval']['high']:.3f}]  ${c['cost_usd']:.4f}  "
            f"{c['cost_vs_strong']:>8.1%}  ${c['last_stage_alone_usd']:.4f}  "
            f"{c['requests'].get('weak', 0):>5}  {c['requests'].get('strong', 0):>6}"
        )


if __name__ == "__main__":
    main()
