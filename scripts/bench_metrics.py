"""What evaluation metrics cost: batchrun._jobs.metrics (pure Python) vs scikit-learn / numpy.

Why: issue 17 scores every variant of a job on the same rows (accuracy, macro-F1,
kappa, bootstrap intervals, agreement between variants). This measures, on 100,000
rows of labels (5 labels, 3 % missing predictions), in one process:

* batchrun._jobs.metrics: the classification report, a 3-variant agreement table, the
  accuracy interval and the paired difference interval (binomial draws on counts);
* the obvious alternative for the bootstrap, resampling rows: in pure Python, and
  vectorised with numpy when it is installed;
* scikit-learn, when installed: the same figures (and a check that they are equal),
  its import time in a fresh interpreter, and the size on disk of it and what it pulls
  in (numpy, scipy, joblib, threadpoolctl), from the installed files.

Times are the best of ``--repeat`` runs. scikit-learn is not a batchrun dependency;
to include it::

    .venv/bin/pip install scikit-learn
    .venv/bin/python scripts/bench_metrics.py
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
sys.path.insert(0, ROOT)

from batchrun._jobs import metrics  # noqa: E402

LABELS = ["positive", "negative", "neutral", "mixed", "off-topic"]


def best(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times = []
    result = None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def make_rows(n: int, seed: int) -> tuple[list[str], dict[str, list[str | None]]]:
    rng = random.Random(seed)
    reference = [rng.choices(LABELS, weights=[5, 4, 3, 1, 1])[0] for _ in range(n)]

    def variant(skill: float) -> list[str | None]:
        out: list[str | None] = []
        for ref in reference:
            r = rng.random()
            out.append(None if r < 0.03 else ref if r < skill else rng.choice(LABELS))
        return out

    return reference, {"a": variant(0.85), "b": variant(0.80), "c": variant(0.60)}


def import_seconds(module: str, repeat: int) -> float:
    def run(code: str) -> float:
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], check=True)
            times.append(time.perf_counter() - start)
        return min(times)

    return run(f"import {module}") - run("pass")


def installed_mib(names: list[str]) -> dict[str, float]:
    sizes = {}
    for name in names:
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        total = 0
        for file in dist.files or []:
            path = file.locate()
            if os.path.isfile(path):
                total += os.path.getsize(path)
        sizes[name] = total / 2**20
    return sizes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    n, resamples, repeat = args.rows, args.resamples, args.repeat

    reference, variants = make_rows(n, seed=1)
    a, b = variants["a"], variants["b"]
    print(f"{n:,} rows, {len(LABELS)} labels, {resamples:,} resamples, best of {repeat}")
    print(f"Python {sys.version.split()[0]}")
    print()

    ms = 1000.0
    t_report, report = best(lambda: metrics.classification_report(reference, a), repeat)
    t_report_raw, _ = best(
        lambda: metrics.classification_report(reference, a, normalize=False), repeat
    )
    t_table, table = best(lambda: metrics.agreement_table(variants), repeat)
    counts = metrics.paired_counts(reference, a, b)
    t_counts, _ = best(lambda: metrics.paired_counts(reference, a, b), repeat)
    t_acc, interval = best(
        lambda: metrics.accuracy_interval(report.correct, report.n, resamples=resamples), repeat
    )
    t_diff, diff = best(
        lambda: metrics.accuracy_difference_interval(counts, resamples=resamples), repeat
    )
    print("batchrun._jobs.metrics (pure Python)                      ms")
    print(f"  classification_report (normalised labels) {t_report * ms:10.1f}")
    print(f"  classification_report (normalize=False)   {t_report_raw * ms:10.1f}")
    print(f"  agreement_table, 3 variants               {t_table * ms:10.1f}")
    print(f"  paired_counts                             {t_counts * ms:10.1f}")
    print(f"  accuracy_interval                         {t_acc * ms:10.2f}")
    print(f"  accuracy_difference_interval              {t_diff * ms:10.2f}")
    print(
        f"  accuracy {report.accuracy:.4f} [{interval.low:.4f}, {interval.high:.4f}]; "
        f"macro-F1 {report.macro_f1:.4f}; kappa {report.kappa:.4f}; "
        f"a - b {diff.estimate:.4f} [{diff.low:.4f}, {diff.high:.4f}]"
    )
    print()

    # The row bootstrap these replace: n draws per resample. Too slow to run 2,000 times
    # at 100k rows in pure Python, so a few resamples are timed and multiplied.
    correct = [int(p is not None and p == r) for r, p in zip(reference, a, strict=True)]
    few = 20
    rng = random.Random(0)
    t_rows, _ = best(
        lambda: [sum(rng.choices(correct, k=n)) / n for _ in range(few)], max(1, repeat // 2)
    )
    print("row bootstrap of the accuracy, for comparison         ms")
    print(
        f"  pure Python, random.choices              {t_rows / few * resamples * ms:10.0f}"
        f"  ({few} resamples timed, x{resamples // few})"
    )
    try:
        import numpy as np
    except ImportError:
        print("  numpy: not installed")
        np = None
    if np is not None:
        flags = np.array(correct, dtype=np.int8)

        def numpy_rows() -> tuple[float, float]:
            gen = np.random.default_rng(0)
            means = np.empty(resamples)
            chunk = max(1, 20_000_000 // n)  # bound memory: chunk x n indices at a time
            for start in range(0, resamples, chunk):
                stop = min(resamples, start + chunk)
                idx = gen.integers(0, n, size=(stop - start, n))
                means[start:stop] = flags[idx].mean(axis=1)
            low, high = np.percentile(means, [2.5, 97.5])
            return float(low), float(high)

        def numpy_counts() -> tuple[float, float]:
            gen = np.random.default_rng(0)
            draws = gen.binomial(n, report.correct / n, size=resamples) / n
            low, high = np.percentile(draws, [2.5, 97.5])
            return float(low), float(high)

        t_np_rows, np_interval = best(numpy_rows, max(1, repeat // 2))
        t_np_counts, _ = best(numpy_counts, repeat)
        print(
            f"  numpy, rows (integers + take + mean)     {t_np_rows * ms:10.0f}"
            f"  -> [{np_interval[0]:.4f}, {np_interval[1]:.4f}]"
        )
        print(f"  numpy, binomial on counts                {t_np_counts * ms:10.2f}")
    print()

    try:
        t0 = time.perf_counter()
        from sklearn import metrics as skm
    except ImportError:
        print("scikit-learn: not installed (pip install scikit-learn to compare)")
        return
    t_import_here = time.perf_counter() - t0
    ref_labels = sorted(set(reference))
    filled_a = [metrics.NO_PREDICTION if p is None else p for p in a]

    def sklearn_report() -> tuple[float, float, float]:
        return (
            skm.accuracy_score(reference, filled_a),
            skm.f1_score(reference, filled_a, labels=ref_labels, average="macro", zero_division=0),
            skm.cohen_kappa_score(reference, filled_a),
        )

    def sklearn_agreement() -> list[float]:
        names = list(variants)
        filled = {
            k: [metrics.NO_PREDICTION if p is None else p for p in v] for k, v in variants.items()
        }
        return [
            skm.cohen_kappa_score(filled[x], filled[y])
            for i, x in enumerate(names)
            for y in names[i + 1 :]
        ]

    raw = metrics.classification_report(reference, a, normalize=False)
    t_sk, (sk_acc, sk_f1, sk_kappa) = best(sklearn_report, repeat)
    t_sk_agree, sk_kappas = best(sklearn_agreement, repeat)
    t_prf, _ = best(
        lambda: skm.precision_recall_fscore_support(
            reference, filled_a, labels=ref_labels, zero_division=0
        ),
        repeat,
    )
    ours = [t.kappa for t in table.values()]
    same = (
        abs(sk_acc - raw.accuracy) < 1e-12
        and abs(sk_f1 - raw.macro_f1) < 1e-12
        and abs(sk_kappa - raw.kappa) < 1e-12
        and all(abs(x - y) < 1e-12 for x, y in zip(sk_kappas, ours, strict=True))
    )
    print("scikit-learn                                          ms")
    print(f"  accuracy + macro F1 + kappa              {t_sk * ms:10.1f}")
    print(f"  precision_recall_fscore_support          {t_prf * ms:10.1f}")
    print(f"  3 pairwise kappas                        {t_sk_agree * ms:10.1f}")
    print(f"  same figures as batchrun._jobs.metrics: {'yes' if same else 'NO'}")
    t_sklearn = import_seconds("sklearn.metrics", 3)
    print(
        f"  import sklearn.metrics, fresh interpreter {t_sklearn * ms:9.0f}"
        f"  (in this process: {t_import_here * ms:.0f})"
    )
    t_ours = import_seconds("batchrun._jobs.metrics", 3)
    t_evaluate = import_seconds("batchrun._jobs.evaluate", 3)
    print(
        f"  import batchrun._jobs.metrics, fresh interpreter {t_ours * ms:8.0f}"
        f"  (of which batchrun._jobs.evaluate, already imported by a run: {t_evaluate * ms:.0f})"
    )
    sizes = installed_mib(["scikit-learn", "numpy", "scipy", "joblib", "threadpoolctl"])
    print(
        "  installed size: "
        + ", ".join(f"{k} {v:.1f} MiB" for k, v in sizes.items())
        + f"; total {sum(sizes.values()):.1f} MiB"
    )
    print(f"  batchrun/_jobs/metrics.py: {os.path.getsize(metrics.__file__) / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
