"""Calibration against gold labels (`batchrun._jobs.calibration`): reliability bins,
expected calibration error, accuracy at coverage and the suggested threshold, against
hand-computed values; then `batchrun eval --suggest-threshold` on a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._jobs.calibration import (
    DIRECT_BOOTSTRAP_ROWS,
    CalibrationSample,
    accuracy_at_coverage,
    expected_calibration_error,
    reliability_bins,
    suggest_threshold,
)

# ten labelled answers, most confident first
CONF = [0.95, 0.92, 0.85, 0.81, 0.75, 0.62, 0.55, 0.45, 0.31, 0.12]
RIGHT = [True, True, True, False, True, True, False, True, False, False]


def test_reliability_bins_by_hand() -> None:
    bins = reliability_bins(CONF, RIGHT)
    assert [b.n for b in bins] == [0, 1, 0, 1, 1, 1, 1, 1, 2, 2]
    top = bins[9]
    assert (top.low, top.high, top.confidence, top.accuracy) == (
        0.9,
        1.0,
        pytest.approx(0.935),
        1.0,
    )
    assert (bins[8].confidence, bins[8].accuracy) == (pytest.approx(0.83), 0.5)
    assert (bins[0].confidence, bins[0].accuracy) == (None, None)
    # 1.0 falls in the last bin, 0.0 in the first
    edges = reliability_bins([0.0, 1.0], [False, True], 4)
    assert [b.n for b in edges] == [1, 0, 0, 1]


def test_expected_calibration_error_by_hand() -> None:
    # gaps: bin 9 2x0.065, bin 8 2x0.33, 0.25, 0.38, 0.55, 0.55, 0.31, 0.12; over 10 rows
    assert expected_calibration_error(CONF, RIGHT) == pytest.approx(0.295)
    assert expected_calibration_error([0.8] * 5, [True] * 4 + [False]) == 0.0
    assert expected_calibration_error([], []) is None
    with pytest.raises(ValueError, match="between 0 and 1"):
        expected_calibration_error([1.2], [True])


def test_accuracy_at_coverage_by_hand() -> None:
    points = accuracy_at_coverage(CONF, RIGHT, (0.1, 0.25, 0.5, 0.7, 1.0))
    assert [(p.rows, p.accuracy, p.threshold) for p in points] == [
        (1, 1.0, 0.95),
        (3, 1.0, 0.85),  # ceil(2.5)
        (5, 0.8, 0.75),
        (7, pytest.approx(5 / 7), 0.55),
        (10, 0.6, 0.12),
    ]
    assert accuracy_at_coverage([], []) == []


def test_suggested_threshold_is_the_lowest_that_meets_the_target() -> None:
    # accuracy of the rows at or above each confidence: 1, 1, 1, .75, .8, .833, .714, ...
    found = suggest_threshold(CONF, RIGHT, 0.8, costs=[1.0] * 10, resamples=300)
    assert (found.threshold, found.accepted, found.coverage) == (0.62, 6, 0.6)
    assert found.accuracy == pytest.approx(5 / 6)
    assert (found.accepted_cost, found.escalated_cost) == (6.0, 4.0)
    assert suggest_threshold(CONF, RIGHT, 0.9, resamples=300).threshold == 0.85
    # the accepted rows' accuracy interval is metrics' seeded bootstrap
    assert found.accuracy_low is not None and found.accuracy_low <= 5 / 6 <= found.accuracy_high
    # the threshold's interval: seeded, so the same call gives the same interval
    again = suggest_threshold(CONF, RIGHT, 0.8, costs=[1.0] * 10, resamples=300)
    assert (again.low, again.high, again.feasible) == (found.low, found.high, found.feasible)
    assert found.low is not None and found.low <= 0.62


def test_ties_are_never_split() -> None:
    # the two rows at 0.9 are accepted together: 1/2, then 2/3 with the 0.8 row
    assert (
        suggest_threshold([0.9, 0.9, 0.8], [True, False, True], 0.6, resamples=50).threshold == 0.8
    )
    none = suggest_threshold([0.9, 0.9, 0.8], [True, False, True], 0.75, resamples=50)
    assert (none.threshold, none.accepted, none.accuracy) == (None, 0, None)


def test_a_target_out_of_reach_in_many_resamples_has_no_upper_end() -> None:
    # the most confident answer is wrong: no threshold reaches 1.0 on the sample; a
    # resample without that row (about 1 in e) whose most confident row is right (the
    # rest alternate, right first: about 0.6) has one
    conf = [0.99] + [0.9 - i / 100 for i in range(19)]
    right = [False] + [i % 2 == 0 for i in range(19)]
    found = suggest_threshold(conf, right, 1.0, resamples=400)
    assert found.threshold is None and found.high is None
    assert 0.12 < found.feasible < 0.32


def test_many_rows_resample_confidence_cells() -> None:
    conf, right = [], []
    for c, share in ((0.9, 0.96), (0.6, 0.7), (0.3, 0.3)):
        for i in range(9000):
            conf.append(c)
            right.append(i < share * 9000)
    assert len(conf) > DIRECT_BOOTSTRAP_ROWS
    found = suggest_threshold(conf, right, 0.9, resamples=100)
    assert (found.threshold, found.low, found.high, found.feasible) == (0.9, 0.9, 0.9, 1.0)
    # .96*9000 + .7*9000 over 18000 = .83: the 0.6 rows never make the target
    assert found.accepted == 9000


def test_calibration_sample_report() -> None:
    sample = CalibrationSample()
    for c, r in zip(CONF, RIGHT, strict=True):
        sample.add(c, r)
    report = sample.report()
    assert report["rows"] == 10 and report["ece"] == pytest.approx(0.295)
    assert report["accuracy"] == 0.6 and report["mean_confidence"] == pytest.approx(0.633)
    assert len(report["bins"]) == 10 and report["accuracy_at_coverage"][-1]["rows"] == 10
    assert sample.threshold(0.8, resamples=50).threshold == 0.62


# -- batchrun eval --suggest-threshold ---------------------------------------------------------
def labelled_run(tmp_path: Path, **kw: object) -> Path:
    labels = ("positive", "negative", "neutral")
    rows = [{"id": f"r{i}", "text": f"review {i}", "label": labels[i % 3]} for i in range(150)]
    batchrun.run(
        rows,
        tmp_path / "run",
        model="weak",
        base_url="sim",
        id_column="id",
        prompt="Review: {text}\n[gold: {label}]",
        response_format={"type": "object", "properties": {"sentiment": {"enum": list(labels)}}},
        temperature=0,
        eval={"reference_column": "label", "compare": "json_field", "field": "sentiment"},
        quiet=True,
        **kw,
    )
    return tmp_path / "run"


def test_eval_suggests_a_threshold_and_records_it(tmp_path: Path) -> None:
    run = labelled_run(tmp_path, confidence="logprobs")
    summary = json.loads((run / "summary.json").read_text())
    calibration = summary["eval"]["calibration"]
    assert calibration["rows"] == 150 and "threshold" not in calibration
    out = CliRunner().invoke(
        cli, ["eval", str(run), "--suggest-threshold", "--target-accuracy", "0.9"]
    )
    assert out.exit_code == 0, out.output
    assert "calibration: ECE" in out.output
    line = next(x for x in out.output.splitlines() if x.startswith("threshold "))
    recorded = json.loads((run / "summary.json").read_text())["eval"]["calibration"]["threshold"]
    assert recorded["target_accuracy"] == 0.9
    assert f"threshold {recorded['threshold']:.3f}" in line
    assert f"accepts {recorded['accepted']} of 150 labelled rows" in line
    # the weak model is sure on about 70% of the texts and right 97% there
    assert 0.55 < recorded["coverage"] < 0.85 and recorded["accuracy"] >= 0.9
    as_json = CliRunner().invoke(cli, ["eval", str(run), "--target-accuracy", "0.9", "--json"])
    assert json.loads(as_json.output)["calibration"]["threshold"] == recorded


def test_eval_threshold_needs_confidences(tmp_path: Path) -> None:
    run = labelled_run(tmp_path)
    out = CliRunner().invoke(cli, ["eval", str(run), "--suggest-threshold"])
    assert out.exit_code == 1
    assert "no labelled answer has a confidence" in out.output
    bad = CliRunner().invoke(cli, ["eval", str(run), "--target-accuracy", "1.5"])
    assert bad.exit_code == 2 and "--target-accuracy" in bad.output
