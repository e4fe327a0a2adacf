"""An input of many files: a directory or a glob of JSONL, Parquet or CSV files read as
one input (issue 29): sorted order, ids ``<file>:row-<n>``, errors naming the file and
its line or row, one fingerprint over every file, shards by file and row group."""

from __future__ import annotations

import gzip
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import batchrun
from batchrun._input.locations import glob_matches, split_glob
from batchrun._input.sources import Source
from batchrun._scale.shards import ShardPlan, load_or_plan, plan_shards
from batchrun.errors import InputError
from batchrun.sim import SimConfig, SimThread


def body(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def jsonl(path: Path, rows: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


def parquet(path: Path, texts: list[str], group_rows: int = 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.table({"body": [json.dumps(body(t)) for t in texts]})
    pq.write_table(table, path, row_group_size=group_rows)
    return path


def ids(source: Source) -> list[str]:
    return [r.custom_id for r in source.requests()]


def test_a_directory_is_one_input_in_sorted_order(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "b.jsonl", [body("b1"), body("b2")])
    jsonl(data / "a.jsonl", [body("a1"), {"custom_id": "mine", **body("a2")}])
    jsonl(data / "sub" / "c.jsonl.gz", [body("c1")])
    (data / "_SUCCESS").write_text("")  # Spark's marker, and a hidden file: not input
    (data / ".a.jsonl.crc").write_text("x")
    source = Source(str(data))
    scan = source.scan()
    assert scan.total == 5
    reqs = list(source.requests())
    assert [r.custom_id for r in reqs] == ["a.jsonl:row-1", "mine", "b.jsonl:row-1",
                                           "b.jsonl:row-2", "sub/c.jsonl.gz:row-1"]  # fmt: skip
    # the input's row numbers run on across the files: unique, in order
    assert [r.row for r in reqs] == [1, 2, 3, 4, 5]
    assert [r.body["messages"][0]["content"] for r in reqs] == ["a1", "a2", "b1", "b2", "c1"]


def test_ids_of_the_other_files_stay_when_a_file_is_added(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "b.jsonl", [body("b1")])
    before = ids(Source(str(data)))
    jsonl(data / "a.jsonl", [body("a1"), body("a2")])  # sorts first
    after = ids(Source(str(data)))
    assert after == ["a.jsonl:row-1", "a.jsonl:row-2", *before]


def test_a_glob_takes_the_files_it_matches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    parquet(data / "part-1.parquet", ["p1", "p2"])
    parquet(data / "part-0.parquet", ["p0"])
    parquet(data / "_part-9.parquet", ["hidden"])
    jsonl(data / "other.jsonl", [body("not matched")])
    (data / "README.md").write_text("not matched either")
    source = Source(str(data / "part-*.parquet"))
    assert ids(source) == ["part-0.parquet:row-1", "part-1.parquet:row-1", "part-1.parquet:row-2"]
    assert source.kind == "parquet"


def test_glob_rules() -> None:
    assert split_glob("data/*.parquet") == ("data", "*.parquet")
    assert split_glob("s3://bkt/p/part-*.jsonl") == ("s3://bkt/p", "part-*.jsonl")
    assert split_glob("plain/file.jsonl") == ("plain/file.jsonl", "")
    assert glob_matches("**/*.parquet", "a.parquet") and glob_matches(
        "**/*.parquet", "x/y/a.parquet"
    )
    assert not glob_matches("*.parquet", "x/a.parquet")
    assert not glob_matches("*.parquet", "_SUCCESS.parquet")


def test_a_stray_file_or_mixed_formats_are_refused_before_anything_is_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "a.jsonl", [body("a1")])
    (data / "notes.txt").write_text("hello")
    with pytest.raises(InputError, match=r"notes\.txt: not an input file"):
        Source(str(data)).scan()
    (data / "notes.txt").unlink()
    parquet(data / "b.parquet", ["b1"])
    with pytest.raises(InputError, match=r"mixes file formats \(a\.jsonl and b\.parquet\)"):
        Source(str(data)).scan()
    with pytest.raises(InputError, match="no file matches"):
        Source(str(data / "*.csv")).scan()


def test_errors_name_the_file_and_its_line_or_row(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "a.jsonl", [body("a1"), body("a2")])
    bad = data / "b.jsonl"
    bad.write_bytes(json.dumps(body("b1")).encode() + b"\n{not json\n")
    with pytest.raises(InputError) as caught:
        Source(str(data)).scan()
    assert str(caught.value).startswith(f"{bad}:line 2: not valid JSON")
    bad.write_bytes(json.dumps(body("b1")).encode() + b'\n{"model": "m"}\n')
    with pytest.raises(InputError) as caught:
        Source(str(data)).scan()  # a row the mapper refuses: named by its file too
    assert str(caught.value) == f"{bad}:line 2: body has no 'messages'"
    bad.unlink()
    pdata = tmp_path / "pq"
    parquet(pdata / "a.parquet", ["x"])
    table = pa.table({"body": [json.dumps(body("y")), json.dumps({"model": "m"})]})
    pq.write_table(table, pdata / "b.parquet")
    with pytest.raises(InputError) as caught:
        Source(str(pdata)).scan()
    assert str(caught.value) == f"{pdata / 'b.parquet'}:row 2: body has no 'messages'"


def test_skipped_rows_say_their_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "a.jsonl", [body("a1")])
    jsonl(data / "b.jsonl", [body("b1"), {"model": "m"}])
    sink = tmp_path / "invalid.jsonl"
    with sink.open("wb") as f:
        scan = Source(str(data), skip_invalid=True).scan(f)
    assert scan.total == 2 and scan.invalid == 1
    line = json.loads(sink.read_text())
    assert line == {
        "row": 3,
        "where": "line 2",
        "reason": "body has no 'messages'",
        "file": "b.jsonl",
    }


def test_a_duplicate_id_across_files_names_both(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "a.jsonl", [{"custom_id": "x", **body("a1")}])
    jsonl(data / "b.jsonl", [body("b1"), {"custom_id": "x", **body("b2")}])
    with pytest.raises(InputError) as caught:
        Source(str(data)).scan()
    message = str(caught.value)
    assert message.startswith(f"{data / 'b.jsonl'}:line 2: duplicate custom_id 'x'")
    assert f"first seen at {data / 'a.jsonl'}:line 1" in message


def test_the_fingerprint_covers_every_file(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "a.jsonl", [body("a1")])
    jsonl(data / "b.jsonl", [body("b1")])
    first = Source(str(data)).fingerprint()
    assert Source(str(data)).fingerprint() == first
    jsonl(data / "b.jsonl", [body("b2")])  # same length, other bytes
    changed = Source(str(data)).fingerprint()
    assert changed != first
    (data / "b.jsonl").rename(data / "c.jsonl")
    renamed = Source(str(data)).fingerprint()
    assert renamed not in (first, changed)
    jsonl(data / "d.jsonl", [])
    assert Source(str(data)).fingerprint() != renamed  # even an empty file added


def test_files_with_other_columns_are_refused_for_a_dataset(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    pq.write_table(pa.table({"id": ["1"], "text": ["a"]}), data / "a.parquet")
    pq.write_table(pa.table({"id": ["2"], "txt": ["b"]}), data / "b.parquet")
    settings = batchrun.Settings.build(input=str(data), prompt="Say {text}", model="m")
    from batchrun._input.select import source_for

    with pytest.raises(InputError, match=r"b\.parquet: its columns \(id, txt\) are not those"):
        source_for(settings).scan()


# -- shards ---------------------------------------------------------------------------------
def _rows(source: Source) -> list[tuple[int, str]]:
    return [(r.row, r.custom_id) for r in source.requests()]


def test_shards_split_by_file_and_row_group_and_read_as_the_whole(tmp_path: Path) -> None:
    data = tmp_path / "data"
    parquet(data / "a.parquet", [f"a{i}" for i in range(10)], group_rows=4)  # groups 4, 4, 2
    parquet(data / "b.parquet", [f"b{i}" for i in range(3)], group_rows=4)
    plan = plan_shards(str(data), shard_rows=5, workers=2)
    spans = [
        (s.span.file, s.span.first_group, s.span.stop_group, s.span.offset) for s in plan.shards
    ]
    assert spans == [("a.parquet", 0, 2, 0), ("a.parquet", 2, 3, 0), ("b.parquet", 0, 1, 10)]
    assert plan.files == (("a.parquet", plan.files[0][1]), ("b.parquet", plan.files[1][1]))
    whole = _rows(Source(str(data)))
    sharded = [row for s in plan.shards for row in _rows(Source(str(data), span=s.span))]
    assert sharded == whole and len(whole) == 13
    assert whole[-1] == (13, "b.parquet:row-3")
    # the plan survives shards.json and every shard fingerprints its own rows
    again = ShardPlan.from_dict(json.loads(json.dumps(plan.to_dict())))
    assert again == plan
    prints = {Source(str(data), span=s.span).fingerprint() for s in plan.shards}
    assert len(prints) == 3


def test_jsonl_shards_of_many_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    jsonl(data / "a.jsonl", [body(f"a{i}") for i in range(5)])
    jsonl(data / "b.jsonl.gz", [body(f"b{i}") for i in range(4)])
    plan = plan_shards(str(data / "*.jsonl*"), shard_rows=3, workers=1)
    assert [(s.span.file, s.span.first_row, s.span.stop_row) for s in plan.shards] == [
        ("a.jsonl", 1, 4), ("a.jsonl", 4, 6), ("b.jsonl.gz", 1, 4), ("b.jsonl.gz", 4, 5),
    ]  # fmt: skip
    location = str(data / "*.jsonl*")
    whole = _rows(Source(location))
    sharded = [row for s in plan.shards for row in _rows(Source(location, span=s.span))]
    assert sharded == whole and whole[5] == (6, "b.jsonl.gz:row-1")


def test_a_recorded_plan_refuses_other_files(tmp_path: Path) -> None:
    data = tmp_path / "data"
    parquet(data / "a.parquet", ["a"])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    plan, new = load_or_plan(str(run_dir), str(data), None, 1)
    (run_dir / "shards.json").write_text(json.dumps(plan.to_dict()))
    assert load_or_plan(str(run_dir), str(data), None, 1) == (plan, False)
    (data / "a.parquet").rename(data / "b.parquet")
    with pytest.raises(batchrun.RunDirError, match="holds other files"):
        load_or_plan(str(run_dir), str(data), None, 1)


# -- a run ---------------------------------------------------------------------------------
@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=1000)) as server:
        yield server


def sent(sim: SimThread) -> Counter[str]:
    return Counter(b["messages"][0]["content"] for b in sim.stats.bodies)


def test_a_run_over_a_directory_answers_every_row_once(sim: SimThread, tmp_path: Path) -> None:
    data = tmp_path / "data"
    texts = {name: [f"{name}-{i}" for i in range(40)] for name in ("a", "b", "c")}
    for name, rows in texts.items():
        jsonl(data / f"{name}.jsonl", [body(t) for t in rows])
    out = tmp_path / "run"
    kwargs = {"base_url": sim.base_url, "auth": "none", "quiet": True}
    run = batchrun.run(str(data), out, **kwargs)
    assert run.status == "complete" and run.summary["requests"]["succeeded"] == 120
    assert sent(sim) == Counter(t for rows in texts.values() for t in rows)  # each once
    results = run.results().to_pylist()
    assert [r["custom_id"] for r in results][:2] == ["a.jsonl:row-1", "a.jsonl:row-2"]
    assert len({r["custom_id"] for r in results}) == 120
    info = json.loads((out / "run.json").read_text())
    assert info["input_path"] == str(data.resolve())
    again = batchrun.run(str(data), out, **kwargs)
    assert again.status == "complete" and sim.stats.requests == 120  # nothing resent
    jsonl(data / "d.jsonl", [body("d-0")])
    with pytest.raises(batchrun.RunDirError, match="input file differs"):
        batchrun.run(str(data), out, **kwargs)
    assert sim.stats.requests == 120


def test_a_dataset_over_a_directory_of_csv_files(sim: SimThread, tmp_path: Path) -> None:
    data = tmp_path / "reviews"
    data.mkdir()
    (data / "2024.csv").write_text("text\ngood\nbad\n")
    (data / "2025.csv").write_text("text\nfine\n")
    run = batchrun.run(
        str(data), tmp_path / "run", prompt="Label: {text}", model="gpt-4o-mini",
        base_url=sim.base_url, auth="none", quiet=True, column_types={"text": "string"},
    )  # fmt: skip
    assert run.status == "complete" and sim.stats.requests == 3
    rows = run.results().to_pylist()
    assert [(r["custom_id"], r["text"]) for r in rows] == [
        ("2024.csv:row-1", "good"), ("2024.csv:row-2", "bad"), ("2025.csv:row-1", "fine"),
    ]  # fmt: skip


def test_a_job_file_names_a_directory_or_a_uri(tmp_path: Path) -> None:
    from batchrun._jobs.jobfile import load_job

    data = tmp_path / "jobs" / "data"
    jsonl(data / "a.jsonl", [body("a1")])
    job = tmp_path / "jobs" / "job.toml"
    job.write_text('[input]\npath = "data"\n')
    assert load_job(str(job)).values["input"] == str(data)  # relative to the job file
    job.write_text('[input]\npath = "data/*.jsonl"\n')
    assert load_job(str(job)).values["input"] == str(data / "*.jsonl")
    job.write_text('[input]\npath = "s3://bucket/prefix/"\n')
    assert load_job(str(job)).values["input"] == "s3://bucket/prefix/"


def test_variants_over_many_files_keep_the_file_ids(tmp_path: Path) -> None:
    from batchrun._input.select import source_for

    data = tmp_path / "data"
    jsonl(data / "a.jsonl", [{"text": "a"}])
    jsonl(data / "b.jsonl", [{"text": "b"}])
    settings = batchrun.Settings.build(input=str(data), prompt="Say {text}", model=["m1", "m2"])
    assert [r.custom_id for r in source_for(settings).requests()] == [
        "a.jsonl:row-1@m1", "a.jsonl:row-1@m2", "b.jsonl:row-1@m1", "b.jsonl:row-1@m2",
    ]  # fmt: skip
