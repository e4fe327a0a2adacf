"""CSV and TSV input (issue 24, item 1): a CSV row is a dataset row, read a block at a
time with pyarrow, every cell text as written unless a column type is given, and every
error naming the file, the data row and the file line.

Runs go to the built-in simulator on loopback, which records the bodies it received,
so the tests assert on what was sent (and that nothing was sent for a bad file).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._input import delimited
from batchrun._input.delimited import BLOCK_BYTES, DelimitedFile
from batchrun._input.select import source_for
from batchrun._input.sources import Source
from batchrun._scale.shards import plan_shards
from batchrun._settings import Settings
from batchrun.errors import ConfigError, InputError
from batchrun.sim import SimConfig, SimThread


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=1000)) as server:
        yield server


@pytest.fixture
def fresh_sim(sim: SimThread) -> SimThread:
    sim.stats.requests = 0
    sim.stats.bodies.clear()
    return sim


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    return path


def dataset(path: Path, **extra: Any) -> Source:
    """The run's source for a dataset job on ``path`` (template ``{text}``)."""
    values: dict[str, Any] = {"input": str(path), "prompt": "Label: {text}", "model": "m"}
    return source_for(Settings.build(**{**values, **extra}))


def sent_texts(sim: SimThread) -> list[str]:
    return [b["messages"][-1]["content"] for b in sim.stats.bodies]


def run_kwargs(sim: SimThread, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "prompt": "Label: {text}",
        "id_column": "id",
        "base_url": sim.base_url,
        "auth": "none",
        "quiet": True,
        "max_tokens": 5,
        **extra,
    }


# -- reading ------------------------------------------------------------------------------
QUOTED = (
    b"id,text,label\n"
    b'001,"good, really good",pos\n'
    b'002,"two\nlines, and a ""quote""",neg\n'
    b"003,plain,pos\n"
)


TSV = (
    QUOTED.replace(b",", b"\t")
    .replace(b'"good\t really good"', b"good, really good")
    .replace(b"lines\t and", b"lines, and")
)


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("quoted.csv", QUOTED),
        ("bom.csv", b"\xef\xbb\xbf" + QUOTED),
        ("crlf.csv", QUOTED.replace(b"\n", b"\r\n").replace(b"two\r\nlines", b"two\nlines")),
        ("tabs.tsv", TSV),
        ("zipped.csv.gz", QUOTED),
        ("zipped.tsv.gz", TSV),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_csv_and_tsv_rows_are_dataset_rows(tmp_path: Path, name: str, data: bytes) -> None:
    src = dataset(write(tmp_path, name, data), id_column="id")
    scan = src.scan()
    assert scan.total == 3 and scan.columns == {"id", "text", "label"}
    requests = list(src.requests())
    assert [r.custom_id for r in requests] == ["001", "002", "003"]  # leading zeros kept
    texts = [r.body["messages"][0]["content"] for r in requests]
    assert texts == ["Label: good, really good", 'Label: two\nlines, and a "quote"', "Label: plain"]
    assert [r.row for r in requests] == [1, 2, 3]


def test_every_cell_is_text_as_written_unless_a_type_is_given(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "t.csv",
        b'zip,score,ok,tags,note\n00501,4.50,yes,"[""a"",""b""]",\n02134,3,no,[],""\n',
    )
    rows = [obj for _, _, obj in Source(str(path), dataset=True).rows()]
    assert rows[0] == {
        "zip": "00501",
        "score": "4.50",
        "ok": "yes",
        "tags": '["a","b"]',
        "note": None,
    }
    assert rows[1]["note"] == ""  # quoted empty: an empty string; unquoted: missing
    typed = Source(
        str(path),
        dataset=True,
        column_types={"score": "float", "ok": "bool", "tags": "json", "zip": "string"},
    )
    rows = [obj for _, _, obj in typed.rows()]
    assert rows[0] == {"zip": "00501", "score": 4.5, "ok": True, "tags": ["a", "b"], "note": None}
    assert rows[1]["score"] == 3.0 and rows[1]["ok"] is False and rows[1]["tags"] == []


def test_a_value_that_is_not_its_type_names_the_row(tmp_path: Path) -> None:
    path = write(tmp_path, "t.csv", b"id,text,score\n1,a,3\n2,b,n/a\n")
    src = dataset(path, column_types={"score": "int"})
    with pytest.raises(InputError) as err:
        src.scan()
    assert str(err.value) == f"{path}:row 2 (line 3): column 'score': 'n/a' is not an integer (int)"


def test_rows_are_numbered_after_the_header_and_named_by_their_file_line(tmp_path: Path) -> None:
    data = (
        b"id,text\n"  # line 1
        b'1,"a\r\nb"\r\n'  # lines 2-3
        b"\n"  # line 4: blank, no row
        b",\n"  # line 5: every cell empty, no row
        b"2,c,EXTRA\n"  # line 6: row 2, malformed
        b'3,"x\ny\nz"\n'  # lines 7-9
        b"4,\n"  # line 10
    )
    path = write(tmp_path, "n.csv", data)
    got = [(row, where) for row, where, _ in Source(str(path), dataset=True).rows()]
    assert got == [
        (1, "row 1 (line 2)"),
        (2, "row 2 (line 6)"),
        (3, "row 3 (line 7)"),
        (4, "row 4 (line 10)"),
    ]
    # small blocks (every row crossing a block end is read again with larger ones) and
    # the count the shard planner uses agree with the whole read
    small = DelimitedFile(str(path), block_bytes=8)
    assert [(row, where) for row, where, _ in small.rows()] == got
    assert small.count() == 4


def test_a_malformed_row_names_file_row_and_line(tmp_path: Path) -> None:
    path = write(tmp_path, "m.csv", b'id,text\n1,"ok, fine"\n2,one,two\n3,three\n')
    with pytest.raises(InputError) as err:
        dataset(path).scan()
    assert str(err.value) == (
        f"{path}:row 2 (line 3): expected 2 comma-separated fields but found 3: '2,one,two'"
    )


def test_file_level_problems_are_one_clear_error(tmp_path: Path) -> None:
    cases = {
        "empty.csv": (b"", "empty file: no header row"),
        "twice.csv": (b"id,id\n1,2\n", "line 1: column 'id' is named twice"),
        "header_only.csv": (b"id,text\n", "the file holds no requests"),
        "latin1.csv": (b"id,text\n1,caf\xe9\n", "row 1 (line 2): column 'text' is not UTF-8"),
    }
    for name, (data, expected) in cases.items():
        with pytest.raises(InputError) as err:
            dataset(write(tmp_path, name, data)).scan()
        assert expected in str(err.value) and str(path_of(err)) == str(tmp_path / name)
    with pytest.raises(InputError, match="column_types names no column 'scroe'.*'score'"):
        dataset(write(tmp_path, "x.csv", b"id,score\n1,2\n"), column_types={"scroe": "int"}).scan()
    jsonl = write(tmp_path, "r.jsonl", b'{"text": "a"}\n')
    with pytest.raises(ConfigError, match="not a CSV or TSV file"):
        dataset(jsonl, column_types={"text": "string"})


def path_of(err: pytest.ExceptionInfo[InputError]) -> str:
    return err.value.path


def test_a_csv_without_a_template_needs_a_body_column(tmp_path: Path) -> None:
    plain = write(tmp_path, "p.csv", b"id,text\n1,a\n")
    with pytest.raises(InputError, match="give a prompt template .* 'body' column"):
        Source(str(plain)).scan()
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi, there"}]})
    quoted = '"' + body.replace('"', '""') + '"'
    requests = write(tmp_path, "r.csv", f"custom_id,body\nfirst,{quoted}\n,{quoted}\n".encode())
    src = Source(str(requests))
    assert src.scan().total == 2
    got = list(src.requests())
    assert [r.custom_id for r in got] == ["first", "row-2"]
    assert got[0].body["messages"][0]["content"] == "hi, there"


def test_a_cell_that_is_not_utf8_names_its_row_and_the_others_read(tmp_path: Path) -> None:
    rows = b"".join(f"{i},text {i}\n".encode() for i in range(1, 60))
    path = write(tmp_path, "mixed.csv", b"id,text\n" + rows + b"60,caf\xe9\n61,after\n")
    got = list(DelimitedFile(str(path), block_bytes=64).rows())
    assert [obj["text"] for _, _, obj in got[:59]] == [f"text {i}" for i in range(1, 60)]
    assert str(got[59][2]) == (
        f"{path}:row 60 (line 61): column 'text' is not UTF-8 text (save the file as UTF-8)"
    )
    assert got[60][:2] == (61, "row 61 (line 62)") and got[60][2]["text"] == "after"


def test_a_long_row_is_read_with_larger_blocks(tmp_path: Path) -> None:
    big = "y" * 3000
    path = write(tmp_path, "big.csv", f"id,text\n1,a\n2,{big}\n3,b\n".encode())
    rows = list(DelimitedFile(str(path), block_bytes=256).rows())
    assert [obj["text"] for _, _, obj in rows] == ["a", big, "b"]


class RecordingReader:
    """pyarrow's CSV reader, noting the size of every batch it hands over."""

    def __init__(self, reader: Any, batches: list[tuple[int, int]]) -> None:
        self._reader = reader
        self._batches = batches
        self.schema = reader.schema

    def __iter__(self) -> Iterator[Any]:
        for batch in self._reader:
            self._batches.append((batch.num_rows, batch.nbytes))
            yield batch


def test_a_200k_row_csv_is_read_a_block_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "big.csv"
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,text,label\n")
        filler = "a long review that says a great deal about the product, and more"
        f.writelines(f'{i:07d},"{filler} #{i}",pos\n' for i in range(200_000))
    size = path.stat().st_size
    assert size > 16 * BLOCK_BYTES
    batches: list[tuple[int, int]] = []
    real = pyarrow.csv.open_csv
    monkeypatch.setattr(
        pyarrow.csv, "open_csv", lambda *a, **k: RecordingReader(real(*a, **k), batches)
    )
    src = dataset(path, id_column="id")
    before = pa.total_allocated_bytes()
    peak = 0
    last = None
    for n, (_, _, obj) in enumerate(src.rows(), 1):
        if n % 1000 == 0:
            peak = max(peak, pa.total_allocated_bytes() - before)
        last = obj
    assert last is not None and last["id"] == "0199999"
    assert sum(rows for rows, _ in batches) == 200_000
    assert len(batches) >= size // BLOCK_BYTES  # one block per batch, never the file
    assert max(nbytes for _, nbytes in batches) <= 2 * BLOCK_BYTES
    assert peak < 8 * BLOCK_BYTES, f"Arrow held {peak:,} bytes while reading {size:,}"
    assert delimited.BLOCK_BYTES == BLOCK_BYTES


def test_shards_of_a_csv_split_rows_not_lines(tmp_path: Path) -> None:
    lines = ["id,text"] + [f'{i},"line one\nline two of {i}"' for i in range(1, 26)]
    path = write(tmp_path, "s.csv", ("\n".join(lines) + "\n").encode())
    plan = plan_shards(str(path), shard_rows=10, workers=1)
    assert plan.kind == "csv"
    assert [(s.span.first_row, s.span.stop_row) for s in plan.shards] == [
        (1, 11),
        (11, 21),
        (21, 26),
    ]
    ids = []
    for shard in plan.shards:
        src = dataset(path, id_column="id")
        src.span = shard.span
        src.scan()
        ids += [r.custom_id for r in src.requests()]
    assert ids == [str(i) for i in range(1, 26)]


# -- running --------------------------------------------------------------------------------
def test_python_runs_a_csv_and_a_rerun_sends_nothing(fresh_sim: SimThread, tmp_path: Path) -> None:
    path = write(tmp_path, "reviews.csv", b"\xef\xbb\xbf" + QUOTED.replace(b"\n", b"\r\n"))
    out = tmp_path / "run"
    run = batchrun.run(path, out, **run_kwargs(fresh_sim))
    assert run.status == "complete" and run.summary["requests"]["succeeded"] == 3
    assert fresh_sim.stats.requests == 3
    assert sorted(sent_texts(fresh_sim)) == sorted(
        ["Label: good, really good", 'Label: two\r\nlines, and a "quote"', "Label: plain"]
    )
    results = run.results().to_pylist()
    assert [(r["custom_id"], r["id"], r["label"]) for r in results] == [
        ("001", "001", "pos"),
        ("002", "002", "neg"),
        ("003", "003", "pos"),
    ]
    again = batchrun.run(str(path), out, **run_kwargs(fresh_sim))
    assert again.status == "complete" and fresh_sim.stats.requests == 3  # nothing resent
    # naming the type every column has anyway changes nothing sent: it resumes
    same = batchrun.run(str(path), out, **run_kwargs(fresh_sim, column_types={"id": str}))
    assert same.status == "complete" and fresh_sim.stats.requests == 3
    # another type may change what is sent: refused, as any other request option
    with pytest.raises(batchrun.RunDirError, match="option column_types: null -> "):
        batchrun.run(str(path), out, **run_kwargs(fresh_sim, column_types={"label": "json"}))


def test_estimate_reads_a_csv(tmp_path: Path) -> None:
    path = write(tmp_path, "e.csv", QUOTED)
    report = batchrun.estimate(path, model="gpt-4o-mini", prompt="Label: {text}", max_tokens=5)
    assert report.to_dict()["requests"] == 3


def job_file(tmp_path: Path, sim: SimThread, data: str, user: str = "Label: {text}") -> Path:
    path = tmp_path / "job.toml"
    path.write_text(
        f"""
[input]
path = "{data}"
id_column = "id"
column_types = {{ id = "string" }}

[endpoint]
base_url = "{sim.base_url}"
auth = "none"

[request]
model = "gpt-4o-mini"
max_tokens = 5

[prompt]
user = "{user}"

[output]
dir = "runs/x"
"""
    )
    return path


def cli_run(*args: str) -> Any:
    return CliRunner().invoke(cli, ["run", *args], env={"BATCHRUN_DEBUG": None})


def test_the_cli_runs_a_tsv_job(fresh_sim: SimThread, tmp_path: Path) -> None:
    write(tmp_path, "data.tsv", b'id\ttext\n007\tfine, thanks\n008\t"tab\tinside"\n')
    result = cli_run("-j", str(job_file(tmp_path, fresh_sim, "data.tsv")), "-q")
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (tmp_path / "runs/x/results.jsonl").read_text().splitlines()]
    assert sorted(x["custom_id"] for x in lines) == ["007", "008"]
    assert sorted(sent_texts(fresh_sim)) == ["Label: fine, thanks", "Label: tab\tinside"]


def test_the_cli_refuses_a_missing_template_column_before_sending(
    fresh_sim: SimThread, tmp_path: Path
) -> None:
    write(tmp_path, "data.csv", QUOTED)
    result = cli_run("-j", str(job_file(tmp_path, fresh_sim, "data.csv", user="Label: {txt}")))
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert "\n" not in message and "Traceback" not in result.output
    assert f"{tmp_path / 'data.csv'}:row 1 (line 2): template placeholder {{txt}}" in message
    assert "columns: id, text, label" in message
    assert fresh_sim.stats.requests == 0


def test_the_cli_refuses_a_malformed_row_or_sets_it_aside(
    fresh_sim: SimThread, tmp_path: Path
) -> None:
    write(tmp_path, "data.csv", b'id,text\n1,"a\nb"\n2,x,"y"\n3,z\n')
    job = str(job_file(tmp_path, fresh_sim, "data.csv"))
    refused = cli_run("-j", job)
    assert refused.exit_code == 1 and fresh_sim.stats.requests == 0
    assert refused.stderr.strip() == (
        f"Error: {tmp_path / 'data.csv'}:row 2 (line 4): expected 2 comma-separated "
        "fields but found 3: '2,x,\"y\"'"
    )
    skipped = cli_run("-j", job, "--skip-invalid", "-q")
    assert skipped.exit_code == 0, skipped.output
    assert fresh_sim.stats.requests == 2
    invalid = [json.loads(x) for x in (tmp_path / "runs/x/invalid.jsonl").read_text().splitlines()]
    assert [(x["row"], x["where"]) for x in invalid] == [(2, "row 2 (line 4)")]
