"""The review queue (`batchrun._jobs.review`): doubtful rows out in Label Studio's,
Argilla's and plain JSONL formats, people's labels back from crafted exports into
gold.jsonl, and `batchrun eval` taking them as the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._jobs.gold import GOLD, append_gold, read_gold
from batchrun._jobs.review import ID_KEY, import_labels, label_studio_config, write_review
from batchrun.errors import ConfigError, InputError

LABELS = ("positive", "negative", "neutral")
SCHEMA = {
    "type": "object",
    "properties": {"sentiment": {"enum": list(LABELS)}, "reason": {"type": "string"}},
    "required": ["sentiment", "reason"],
}
ROWS = [
    {"id": f"r{i:02d}", "text": f"review number {i}", "stars": i % 5, "label": LABELS[i % 3]}
    for i in range(60)
]


@pytest.fixture(scope="module")
def answered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the simulator's weak model with logprob confidences, evaluated."""
    out = tmp_path_factory.mktemp("review") / "run"
    run = batchrun.run(
        ROWS,
        out,
        model="weak",
        base_url="sim",
        id_column="id",
        prompt="Review: {text}\n[gold: {label}]",
        response_format=SCHEMA,
        temperature=0,
        confidence="logprobs",
        eval={"reference_column": "label", "compare": "json_field", "field": "sentiment"},
        quiet=True,
    )
    assert run.exit_code == 0
    return out


@pytest.fixture
def run_dir(answered: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "run"
    shutil.copytree(answered, copy)
    return copy


def parquet_rows(run: Path) -> dict[str, dict[str, Any]]:
    return {r["custom_id"]: r for r in pq.read_table(run / "results.parquet").to_pylist()}


def test_label_studio_tasks_least_confident_first(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "queue.json"
    report, _ = write_review(str(run_dir), str(out), below=0.8, limit=5, format="label-studio")
    rows = parquet_rows(run_dir)
    doubtful = sorted(
        (r for r in rows.values() if r["confidence"] < 0.8),
        key=lambda r: (r["confidence"], r["row"]),
    )
    assert report.doubtful == len(doubtful) and report.rows == 5 and report.answered == 60
    tasks = json.loads(out.read_text())
    assert [t["data"][ID_KEY] for t in tasks] == [r["custom_id"] for r in doubtful[:5]]
    first, expected = tasks[0], doubtful[0]
    # the inputs, but not the reference column people are to fill in
    assert {k: first["data"][k] for k in ("id", "text", "stars")} == {
        "id": expected["id"], "text": expected["text"], "stars": expected["stars"],
    }  # fmt: skip
    assert "label" not in first["data"]
    assert first["data"]["batchrun_answer"] == expected["content"]
    (prediction,) = first["predictions"]
    assert prediction["model_version"] == "weak"
    assert prediction["score"] == pytest.approx(expected["confidence"])
    assert prediction["result"] == [
        {
            "from_name": "sentiment",
            "to_name": "text",
            "type": "choices",
            "value": {"choices": [expected["sentiment"]]},
        }
    ]
    config = (tmp_path / "queue.xml").read_text()
    assert config == label_studio_config("sentiment", "text", LABELS)
    assert '<Choices name="sentiment" toName="text"' in config
    assert '<Text name="text" value="$text"/>' in config


def test_argilla_records_and_jsonl(run_dir: Path) -> None:
    report, data = write_review(str(run_dir), None, below=0.5, format="argilla")
    records = json.loads(data)
    assert report.path is None and len(records) == report.rows == report.doubtful
    rows = parquet_rows(run_dir)
    record = records[0]
    row = rows[record["id"]]
    assert record["fields"] == {"text": row["text"]}
    assert record["metadata"]["stars"] == row["stars"] and "label" not in record["metadata"]
    assert record["suggestions"] == {
        "sentiment": {"value": row["sentiment"], "score": row["confidence"], "agent": "weak"}
    }
    assert record["responses"] == {}
    _, lines = write_review(str(run_dir), None, below=0.5, limit=2, format="jsonl")
    parsed = [json.loads(x) for x in lines.splitlines()]
    assert len(parsed) == 2 and parsed[0]["label"] is None
    assert parsed[0]["prediction"] == rows[parsed[0]["custom_id"]]["sentiment"]
    assert set(parsed[0]["input"]) == {"id", "text", "stars"}


def test_cli_writes_the_queue(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "q.jsonl"
    result = CliRunner().invoke(
        cli, ["review", str(run_dir), "--below", "0.8", "--limit", "3", "-o", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert len(out.read_text().splitlines()) == 3
    assert "3 of" in result.output and "doubtful rows" in result.output


def test_runs_without_confidence_or_with_variants_are_refused(tmp_path: Path) -> None:
    plain = batchrun.run(
        ROWS[:3], tmp_path / "plain", model="m", base_url="sim", prompt="{text}", quiet=True
    )
    with pytest.raises(ConfigError, match="no confidence to queue"):
        write_review(plain.run_dir, None)
    both = batchrun.run(
        ROWS[:3],
        tmp_path / "both",
        model=["weak", "strong"],
        base_url="sim",
        prompt="{text}",
        confidence="logprobs",
        quiet=True,
    )
    with pytest.raises(ConfigError, match="comparing variants"):
        write_review(both.run_dir, None)


# -- labels back ------------------------------------------------------------------------------
def ls_task(custom_id: str, *annotations: Any) -> dict[str, Any]:
    return {
        "id": 1,
        "data": {ID_KEY: custom_id, "text": "..."},
        "annotations": list(annotations),
        "predictions": [],
    }


def annotation(label: str, cancelled: bool = False) -> dict[str, Any]:
    return {
        "result": [
            {"from_name": "sentiment", "to_name": "text", "type": "choices",
             "value": {"choices": [label]}}
        ],
        "was_cancelled": cancelled,
    }  # fmt: skip


def test_label_studio_export_becomes_gold_and_eval_uses_it(run_dir: Path, tmp_path: Path) -> None:
    before = json.loads((run_dir / "summary.json").read_text())["eval"]
    rows = parquet_rows(run_dir)
    right = [cid for cid, r in rows.items() if r["sentiment"] == r["label"]]

    def other(cid: str, label: str, instead: str) -> str:
        return label if rows[cid]["label"].casefold() != label.casefold() else instead

    export = [
        # people disagree with the input's label on two rows the model got right
        ls_task(right[0], annotation(other(right[0], "Neutral", "negative"))),
        ls_task(right[1], annotation("x", cancelled=True),
                annotation(other(right[1], "negative", "positive"))),
        # two annotators disagree: left out
        ls_task(right[2], annotation("positive"), annotation("negative")),
        # not reviewed
        ls_task(right[3]),
    ]  # fmt: skip
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    report = import_labels(str(run_dir), str(path))
    assert (report.format, report.imported) == ("label-studio", 2)
    assert report.skipped == {"cancelled": 1, "disagreeing": 1, "unreviewed": 1}
    gold = read_gold(str(run_dir))
    assert set(gold) == {right[0], right[1]}
    assert set(gold.values()) <= set(LABELS)  # "Neutral" stored as the schema spells it
    out = CliRunner().invoke(cli, ["eval", str(run_dir), "--json"])
    after = json.loads(out.output)
    assert after["gold_rows"] == 2
    assert after["correct"] == before["correct"] - 2
    text = CliRunner().invoke(cli, ["eval", str(run_dir)]).output
    assert "2 references are labels people gave" in text


def test_label_studio_json_min_and_argilla_exports(run_dir: Path, tmp_path: Path) -> None:
    ids = list(parquet_rows(run_dir))
    json_min = [
        {ID_KEY: ids[0], "text": "...", "sentiment": "negative", "annotator": 1},
        {ID_KEY: ids[1], "text": "...", "sentiment": {"choices": ["positive"]}},
        {ID_KEY: ids[2], "text": "..."},
    ]
    (tmp_path / "min.json").write_text(json.dumps(json_min))
    report = import_labels(str(run_dir), str(tmp_path / "min.json"))
    assert (report.imported, report.skipped) == (2, {"unreviewed": 1})
    nested = [
        {"id": ids[3], "fields": {}, "responses": {"sentiment": [
            {"value": "neutral", "user_id": "u1", "status": "submitted"},
            {"value": "neutral", "user_id": "u2"},
            {"value": "positive", "user_id": "u3", "status": "discarded"}]}},
        {"id": ids[4], "fields": {}, "responses": {}},
    ]  # fmt: skip
    (tmp_path / "argilla.json").write_text(json.dumps(nested))
    report = import_labels(str(run_dir), str(tmp_path / "argilla.json"))
    assert (report.format, report.imported, report.skipped) == ("argilla", 1, {"unreviewed": 1})
    flat = [{"id": ids[5], "sentiment.responses": ["negative", "negative"],
             "sentiment.responses.status": ["submitted", "draft"]}]  # fmt: skip
    (tmp_path / "flat.json").write_text(json.dumps(flat))
    assert import_labels(str(run_dir), str(tmp_path / "flat.json")).imported == 1
    gold = read_gold(str(run_dir))
    assert gold == {ids[0]: "negative", ids[1]: "positive", ids[3]: "neutral", ids[5]: "negative"}


def test_jsonl_labels_and_bad_records_name_the_line(run_dir: Path, tmp_path: Path) -> None:
    ids = list(parquet_rows(run_dir))
    path = tmp_path / "labels.jsonl"
    path.write_text(
        json.dumps({"custom_id": ids[0], "label": "positive"}) + "\n"
        + json.dumps({"custom_id": ids[1], "label": None}) + "\n"
    )  # fmt: skip
    result = CliRunner().invoke(cli, ["review", str(run_dir), "--import", str(path)])
    assert result.exit_code == 0, result.output
    assert "1 labels imported" in result.output and "1 unreviewed" in result.output
    gold_before = (run_dir / GOLD).read_bytes()
    for line, message in (
        ({"custom_id": "nope", "label": "positive"}, "'nope' is not a row of"),
        ({"custom_id": ids[2], "label": "mixed"}, "label 'mixed' is not one of positive"),
        ({"label": "positive"}, "expected an object with a custom_id"),
    ):
        path.write_text(
            json.dumps({"custom_id": ids[3], "label": "neutral"}) + "\n" + json.dumps(line) + "\n"
        )
        with pytest.raises(InputError, match=message) as caught:
            import_labels(str(run_dir), str(path))
        assert f"{path}" in str(caught.value) and "line 2" in str(caught.value)
        assert (run_dir / GOLD).read_bytes() == gold_before  # nothing imported
    path.write_text("{not json\n")
    out = CliRunner().invoke(cli, ["review", str(run_dir), "--import", str(path)])
    assert out.exit_code == 1 and "line 1" in out.output and "not valid JSON" in out.output


def test_a_run_without_eval_is_scored_against_imported_labels_alone(tmp_path: Path) -> None:
    run = batchrun.run(
        [{k: v for k, v in r.items() if k != "label"} for r in ROWS[:9]],
        tmp_path / "run",
        model="weak",
        base_url="sim",
        id_column="id",
        prompt="Review: {text}",
        response_format=SCHEMA,
        confidence="logprobs",
        temperature=0,
        quiet=True,
    )
    answers = {r["custom_id"]: r["sentiment"] for r in run.results().to_pylist()}
    ids = sorted(answers)
    wrong = next(label for label in LABELS if label != answers[ids[1]])
    labels = tmp_path / "l.jsonl"
    labels.write_text(
        json.dumps({"custom_id": ids[0], "label": answers[ids[0]]}) + "\n"
        + json.dumps({"custom_id": ids[1], "label": wrong}) + "\n"
    )  # fmt: skip
    assert run.import_labels(str(labels)).imported == 2
    report = run.evaluate(target_accuracy=0.5)["eval"]
    assert (report["n"], report["correct"], report["gold_rows"]) == (2, 1, 2)
    assert report["missing_references"] == 7
    assert report["calibration"]["rows"] == 2 and "threshold" in report["calibration"]
    queue = run.review(str(tmp_path / "q.json"), format="label-studio")
    assert queue.rows == 9  # no threshold: every answered row


def test_gold_file_last_line_wins_and_a_torn_line_is_skipped(tmp_path: Path) -> None:
    append_gold(str(tmp_path), [("a", "x"), ("b", "y")], source="t")
    with open(tmp_path / GOLD, "ab") as f:
        f.write(b'{"custom_id": "a", "lab')  # a crash while appending
    assert read_gold(str(tmp_path)) == {"a": "x", "b": "y"}
    append_gold(str(tmp_path), [("a", "z"), ("b", None)], source="t")
    assert read_gold(str(tmp_path)) == {"a": "z"}
