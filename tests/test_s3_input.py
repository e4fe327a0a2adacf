"""Inputs on object storage (issue 29), against a local S3 (moto's server, reached
through ``AWS_ENDPOINT_URL`` as a user reaches MinIO): a prefix of Parquet files run
against the simulator with every row answered once, a CSV dataset on S3, a changed
object refused, and the store's credentials in no file and no message."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import batchrun
from batchrun._cli import cli
from batchrun._input.locations import location_credentials, recorded_location
from batchrun._input.sources import Source
from batchrun._scale.shards import plan_shards
from batchrun.errors import InputError
from batchrun.sim import SimConfig, SimThread
from tests.objectstores import Backend
from tests.s3server import ACCESS_KEY_ID, S3, SECRET_ACCESS_KEY

pytest_plugins = ["tests.conftest_s3", "tests.conftest_stores"]  # s3, backend


@pytest.fixture(scope="module")
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=5000)) as server:
        yield server


@pytest.fixture
def fresh_sim(sim: SimThread) -> SimThread:
    sim.stats.reset()
    return sim


def body(text: str) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}


def parquet_bytes(texts: list[str], group_rows: int = 250) -> bytes:
    out = io.BytesIO()
    table = pa.table({"body": [json.dumps(body(t)) for t in texts]})
    pq.write_table(table, out, row_group_size=group_rows)
    return out.getvalue()


def jsonl_bytes(rows: list[Any]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def sent(sim: SimThread) -> Counter[str]:
    return Counter(b["messages"][0]["content"] for b in sim.stats.bodies)


def files_under(path: Path) -> Iterator[Path]:
    return (p for p in path.rglob("*") if p.is_file())


def assert_no_credentials(path: Path) -> None:
    for file in files_under(path):
        data = file.read_bytes()
        assert SECRET_ACCESS_KEY.encode() not in data, file
        assert ACCESS_KEY_ID.encode() not in data, file


KW = {"auth": "none", "quiet": True}


def test_a_prefix_of_four_parquet_files_is_answered_once_per_row(
    s3: S3, fresh_sim: SimThread, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    texts = {}
    for part in range(4):
        texts[part] = [f"p{part}-{i}" for i in range(1000)]
        s3.put(bucket, f"reviews/part-{part}.parquet", parquet_bytes(texts[part]))
    s3.put(bucket, "reviews/_SUCCESS", b"")  # a writer's marker: not input
    location = f"s3://{bucket}/reviews/"
    out = tmp_path / "run"
    run = batchrun.run(location, out, base_url=fresh_sim.base_url, concurrency=64, **KW)
    assert run.status == "complete" and run.summary["requests"]["succeeded"] == 4000
    assert fresh_sim.stats.requests == 4000
    assert sent(fresh_sim) == Counter(t for rows in texts.values() for t in rows)  # once each
    ids = [r["custom_id"] for r in run.results().to_pylist()]
    assert len(set(ids)) == 4000
    assert ids[0] == "part-0.parquet:row-1" and ids[-1] == "part-3.parquet:row-1000"
    info = json.loads((out / "run.json").read_text())
    assert info["input_path"] == location and info["options"]["input"] == location
    assert_no_credentials(out)
    # a rerun reads the prefix again, finds the same objects and sends nothing
    again = batchrun.run(location, out, base_url=fresh_sim.base_url, **KW)
    assert again.status == "complete" and fresh_sim.stats.requests == 4000


def test_shards_of_an_s3_prefix_come_from_the_footers(s3: S3, tmp_path: Path) -> None:
    bucket = s3.bucket()
    for part in range(2):
        s3.put(bucket, f"d/part-{part}.parquet", parquet_bytes([f"{part}-{i}" for i in range(500)]))
    location = f"s3://{bucket}/d/part-*.parquet"
    plan = plan_shards(location, shard_rows=250, workers=1)
    assert [(s.span.file, s.span.first_group, s.span.offset) for s in plan.shards] == [
        ("part-0.parquet", 0, 0), ("part-0.parquet", 1, 0),
        ("part-1.parquet", 0, 500), ("part-1.parquet", 1, 500),
    ]  # fmt: skip
    whole = [(r.row, r.custom_id) for r in Source(location).requests()]
    sharded = [
        (r.row, r.custom_id) for s in plan.shards for r in Source(location, span=s.span).requests()
    ]
    assert sharded == whole and len(whole) == 1000


def test_a_csv_dataset_on_s3(s3: S3, fresh_sim: SimThread, tmp_path: Path) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "in/reviews.csv.gz", gzip.compress(b'id,text\n007,great\n008,"meh, ok"\n'))
    run = batchrun.run(
        f"s3://{bucket}/in/reviews.csv.gz", tmp_path / "run", base_url=fresh_sim.base_url,
        model="gpt-4o-mini", prompt="Label: {text}", id_column="id", **KW,
    )  # fmt: skip
    assert run.status == "complete" and fresh_sim.stats.requests == 2
    assert sorted(sent(fresh_sim)) == ["Label: great", "Label: meh, ok"]
    rows = run.results().to_pylist()
    assert [(r["custom_id"], r["id"], r["text"]) for r in rows] == [
        ("007", "007", "great"), ("008", "008", "meh, ok"),
    ]  # fmt: skip


def test_bad_rows_on_s3_are_named_by_uri_and_line(s3: S3, fresh_sim: SimThread) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "x/a.jsonl", jsonl_bytes([body("a")]))
    s3.put(bucket, "x/b.jsonl", jsonl_bytes([body("b")]) + b"{oops\n")
    with pytest.raises(InputError) as caught:
        batchrun.run(f"s3://{bucket}/x", base_url=fresh_sim.base_url, **KW)
    assert str(caught.value).startswith(f"s3://{bucket}/x/b.jsonl:line 2: not valid JSON")
    assert fresh_sim.stats.requests == 0  # nothing sent for a bad input
    with pytest.raises(InputError, match="no such file"):
        Source(f"s3://{bucket}/nothing/here.jsonl").scan()


def test_a_changed_object_is_a_changed_input(s3: S3, fresh_sim: SimThread, tmp_path: Path) -> None:
    bucket = s3.bucket()
    key, location = "in/r.jsonl", f"s3://{bucket}/in/r.jsonl"
    s3.put(bucket, key, jsonl_bytes([body("one"), body("two")]))
    out = tmp_path / "run"
    assert batchrun.run(location, out, base_url=fresh_sim.base_url, **KW).status == "complete"
    # the same bytes written again: the same ETag, the same input (nothing resent)
    s3.put(bucket, key, jsonl_bytes([body("one"), body("two")]))
    assert batchrun.run(location, out, base_url=fresh_sim.base_url, **KW).status == "complete"
    assert fresh_sim.stats.requests == 2
    # other bytes of the same length: another ETag, refused before anything is sent
    s3.put(bucket, key, jsonl_bytes([body("one"), body("owt")]))
    with pytest.raises(batchrun.RunDirError, match="input file differs"):
        batchrun.run(location, out, base_url=fresh_sim.base_url, **KW)
    assert fresh_sim.stats.requests == 2


def test_an_object_replaced_during_a_run_is_not_read(s3: S3) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "in/r.jsonl", jsonl_bytes([body("one")]))
    source = Source(f"s3://{bucket}/in/r.jsonl")
    assert source.scan().total == 1
    s3.put(bucket, "in/r.jsonl", jsonl_bytes([body("one"), body("new")]))
    with pytest.raises(InputError, match="the object changed since this run first read it"):
        list(source.requests())


def test_the_cli_reads_s3_and_no_file_holds_the_keys(
    s3: S3, fresh_sim: SimThread, tmp_path: Path
) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "data.parquet", parquet_bytes(["x", "y", "z"]))
    out = tmp_path / "runs" / "x"
    args = ["run", f"s3://{bucket}/data.parquet", "-o", str(out), "--base-url",
            fresh_sim.base_url, "--auth", "none", "--quiet"]  # fmt: skip
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert fresh_sim.stats.requests == 3
    assert_no_credentials(out)
    assert SECRET_ACCESS_KEY not in result.output


@pytest.mark.parametrize(
    "uri",
    [
        f"s3://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@bucket/data.parquet",
        f"s3://bucket/data.parquet?access_key={ACCESS_KEY_ID}&secret_key={SECRET_ACCESS_KEY}",
        f"gs://bucket/x.jsonl?token={SECRET_ACCESS_KEY}",
    ],
)
def test_a_uri_with_a_credential_is_refused_unechoed(
    uri: str, fresh_sim: SimThread, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(
        cli, ["run", uri, "-o", str(out), "--base-url", fresh_sim.base_url, "--auth", "none"]
    )
    assert result.exit_code == 1
    assert "credential" in result.output and SECRET_ACCESS_KEY not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert fresh_sim.stats.requests == 0
    assert not out.exists() or not any(files_under(out))
    with pytest.raises(batchrun.ConfigError, match="credential") as caught:
        batchrun.Settings.build(input=uri)
    assert SECRET_ACCESS_KEY not in str(caught.value)


def test_location_rules() -> None:
    assert location_credentials("abfs://container@acct.dfs.core.windows.net/x.parquet") is None
    assert location_credentials("s3://bucket/x.parquet?region=eu-west-1") is None
    assert location_credentials("s3://user@bucket/x.parquet") is not None
    assert recorded_location("s3://b/p/") == "s3://b/p/"
    assert recorded_location("rel/x.jsonl") == os.path.abspath("rel/x.jsonl")
    with pytest.raises(InputError, match="not read over HTTP"):
        Source("https://example.com/x.jsonl").scan()
    with pytest.raises(InputError, match=r"unknown scheme ftp://"):
        Source("ftp://example.com/x.jsonl").scan()


# -- hf:// (fsspec through pyarrow) ----------------------------------------------------------
def test_hf_without_huggingface_hub_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(InputError, match=r"hf:// inputs need huggingface_hub: pip install"):
        Source("hf://datasets/user/name/data.jsonl").scan()


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch) -> Any:
    """huggingface_hub's HfFileSystem, offline: fsspec's memory filesystem with the
    hub's path layout and its ``blob_id`` (a git blob hash: a new version, a new id)."""
    import huggingface_hub
    from fsspec.implementations.memory import MemoryFileSystem

    class FakeHub(MemoryFileSystem):  # type: ignore[misc]
        protocol = "hf"
        store: dict[str, Any] = {}
        pseudo_dirs = [""]

        @classmethod
        def _strip_protocol(cls, path: str) -> str:
            return path.removeprefix("hf://").strip("/")

        def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
            out = dict(super().info(path, **kwargs))
            if out["type"] == "file":
                out["blob_id"] = hashlib.sha1(self.cat_file(path)).hexdigest()
            return out

    hub = FakeHub(skip_instance_cache=True)
    monkeypatch.setattr(huggingface_hub, "HfFileSystem", lambda: hub)
    return hub


def test_hf_reads_through_fsspec(fake_hub: Any) -> None:
    fake_hub.pipe("datasets/u/r/data/a.jsonl", jsonl_bytes([body("a1"), body("a2")]))
    fake_hub.pipe("datasets/u/r/data/b.jsonl", jsonl_bytes([body("b1")]))
    source = Source("hf://datasets/u/r/data")
    assert source.scan().total == 3
    assert [r.custom_id for r in source.requests()] == [
        "a.jsonl:row-1", "a.jsonl:row-2", "b.jsonl:row-1",
    ]  # fmt: skip
    before = source.fingerprint()
    fake_hub.pipe("datasets/u/r/data/b.jsonl", jsonl_bytes([body("b2")]))  # a new revision
    assert Source("hf://datasets/u/r/data").fingerprint() != before
    with pytest.raises(InputError, match="the object changed"):
        list(source.requests())


def test_a_prefix_on_every_store_is_read_once_per_row_and_versioned(
    backend: Backend, fresh_sim: SimThread, tmp_path: Path
) -> None:
    """Inputs on S3, GCS and Azure Blob, through pyarrow.fs and the same variables a
    user sets (AWS_ENDPOINT_URL, STORAGE_EMULATOR_HOST, AZURE_STORAGE_CONNECTION_STRING):
    a prefix of two Parquet files answered once per row, and an object rewritten with
    other bytes (a new ETag or generation) refused as a changed input."""
    location = backend.location("in")
    store = backend.store(location)
    texts = {part: [f"{backend.scheme}{part}-{i}" for i in range(20)] for part in range(2)}
    for part, rows in texts.items():
        store.put(f"part-{part}.parquet", parquet_bytes(rows))
    store.put("_SUCCESS", b"")  # a writer's marker: not input
    out = tmp_path / "run"
    run = batchrun.run(location + "/", out, base_url=fresh_sim.base_url, **KW)
    assert run.status == "complete" and fresh_sim.stats.requests == 40
    assert sent(fresh_sim) == Counter(t for rows in texts.values() for t in rows)
    ids = [r["custom_id"] for r in run.results().to_pylist()]
    assert ids[0] == "part-0.parquet:row-1" and ids[-1] == "part-1.parquet:row-20"
    for secret in backend.secrets:
        assert all(secret.encode() not in f.read_bytes() for f in files_under(out))
    # the same bytes again on S3 keep their ETag; GCS gives every write a new
    # generation: either way, other bytes are a changed input, refused before sending
    before = parquet_bytes(texts[1])
    other = parquet_bytes([t.replace("-", "_") for t in texts[1]])
    assert len(other) == len(before) and other != before  # only the version tells them apart
    store.put("part-1.parquet", other)
    with pytest.raises(batchrun.RunDirError, match="input file differs"):
        batchrun.run(location + "/", out, base_url=fresh_sim.base_url, **KW)
    assert fresh_sim.stats.requests == 40


def test_a_uri_query_is_options_not_a_glob(s3: S3) -> None:
    bucket = s3.bucket()
    s3.put(bucket, "q/a.jsonl", jsonl_bytes([body("a")]))
    s3.put(bucket, "q/b.jsonl", jsonl_bytes([body("b")]))
    source = Source(f"s3://{bucket}/q/*.jsonl?region=us-east-1")
    assert [r.custom_id for r in source.requests()] == ["a.jsonl:row-1", "b.jsonl:row-1"]
    assert [f.name for f in source.files()] == [
        f"s3://{bucket}/q/a.jsonl",
        f"s3://{bucket}/q/b.jsonl",
    ]
    single = Source(f"s3://{bucket}/q/a.jsonl?region=us-east-1")
    assert single.kind == "jsonl" and [r.custom_id for r in single.requests()] == ["row-1"]
