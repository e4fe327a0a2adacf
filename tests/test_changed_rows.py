"""An answer is tied to the request that produced it (issue 13, items 2 and 3).

Every output line records the hash of the body it answered. On resume a row is
done only when its id was answered *for the body it has now*: with ``--force``
after an edit, changed rows are sent again and answers are never re-paired with
another row's prompt by position. And a run sends exactly the rows it validated,
even when the input grows while it runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pyarrow.parquet as pq

from batchrun._api import hooks_for as run_hooks
from batchrun._engine.hooks import RunHooks
from batchrun._engine.runner import Runner
from batchrun._ids import body_hash
from batchrun._settings import Settings
from tests.conftest import FakeTime, completion
from tests.test_resume import Server, lines_of, run, summary_of


def echo_server() -> Any:
    """Answers each request with its own prompt, so a mismatch is visible."""
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        payload = json.loads(request.content)
        text = payload["messages"][-1]["content"]
        sent.append(text)
        return httpx.Response(200, json=completion(f"answer to: {text}"))

    handler.sent = sent  # type: ignore[attr-defined]
    return handler


def run_dataset(
    tmp_path: Path, inp: Path, handler: Any, extra: tuple[RunHooks, ...] = (), **kw: Any
) -> Any:
    import anyio

    cfg = Settings(
        input=str(inp),
        out_dir=str(tmp_path / "run"),
        base_url="http://test/v1",
        concurrency=4,
        quiet=True,
        prompt="{text}",
        model="gpt-4o-mini",
        **kw,
    )
    fake = FakeTime()
    runner = Runner(
        cfg,
        transport=httpx.MockTransport(handler),
        clock=fake.clock,
        sleep=fake.sleep,
        hooks=run_hooks(cfg, extra),
    )
    return anyio.run(runner.run)


def write_texts(path: Path, texts: list[str], *, ids: bool = False) -> Path:
    with open(path, "w") as f:
        for i, text in enumerate(texts):
            row: dict[str, Any] = {"text": text}
            if ids:
                row = {"custom_id": f"c{i}", "text": text}
            f.write(json.dumps(row) + "\n")
    return path


def parquet_pairs(tmp_path: Path) -> dict[str, tuple[str, str | None]]:
    table = pq.read_table(tmp_path / "run" / "results.parquet")
    return {r["custom_id"]: (r["text"], r["content"]) for r in table.to_pylist()}


def test_every_line_records_the_hash_of_the_body_it_answered(tmp_path: Path) -> None:
    inp = write_texts(tmp_path / "in.jsonl", ["a", "b"])
    handler = echo_server()
    run_dataset(tmp_path, inp, handler)
    for line in lines_of(tmp_path / "run" / "results.jsonl"):
        sent = {
            "model": "gpt-4o-mini",
            "messages": [
                {
                    "role": "user",
                    "content": line["response"]["body"]["choices"][0]["message"][
                        "content"
                    ].removeprefix("answer to: "),
                }
            ],
        }
        import orjson

        assert line["batchrun"]["body_hash"] == body_hash(orjson.dumps(sent))
        assert list(line["batchrun"])[-1] == "body_hash"


def test_force_after_inserting_a_row_never_pairs_answers_by_position(tmp_path: Path) -> None:
    texts = [f"prompt {i}" for i in range(10)]
    inp = write_texts(tmp_path / "in.jsonl", texts)
    first = echo_server()
    assert run_dataset(tmp_path, inp, first).exit_code == 0
    assert len(first.sent) == 10

    write_texts(inp, ["a new first row", *texts])  # every row-<n> now names another prompt
    second = echo_server()
    result = run_dataset(tmp_path, inp, second, force=True)
    assert result.exit_code == 0
    # every row's body changed (or is new): all are sent, none keeps a stale answer
    assert sorted(second.sent) == sorted(["a new first row", *texts])
    assert any("10 rows changed since they were answered" in n for n in result.notes)
    pairs = parquet_pairs(tmp_path)
    assert len(pairs) == 11
    for text, content in pairs.values():
        assert content == f"answer to: {text}"
    summary = summary_of(tmp_path / "run")
    assert summary["requests"]["succeeded"] == 11 and summary["requests"]["total"] == 11


def test_force_with_explicit_ids_resends_only_the_rows_whose_body_changed(tmp_path: Path) -> None:
    texts = [f"prompt {i}" for i in range(6)]
    inp = write_texts(tmp_path / "in.jsonl", texts, ids=True)
    assert run_dataset(tmp_path, inp, echo_server(), id_column="custom_id").exit_code == 0

    texts[2] = "prompt 2, edited"
    write_texts(inp, texts, ids=True)
    again = echo_server()
    result = run_dataset(tmp_path, inp, again, force=True, id_column="custom_id")
    assert again.sent == ["prompt 2, edited"]
    assert any("1 rows changed" in n for n in result.notes)
    assert parquet_pairs(tmp_path)["c2"] == ("prompt 2, edited", "answer to: prompt 2, edited")
    # a rerun now sends nothing: the new answer is the row's
    third = echo_server()
    assert run_dataset(tmp_path, inp, third, id_column="custom_id").exit_code == 0
    assert third.sent == []


def test_an_interrupted_force_run_shows_changed_rows_as_pending_not_stale(tmp_path: Path) -> None:
    texts = [f"prompt {i}" for i in range(4)]
    inp = write_texts(tmp_path / "in.jsonl", texts, ids=True)
    assert run_dataset(tmp_path, inp, echo_server(), id_column="custom_id").exit_code == 0
    texts[1] = "prompt 1, edited"
    write_texts(inp, texts, ids=True)

    def refuse(request: httpx.Request) -> httpx.Response:
        return httpx.Response(400, json={"error": {"message": "no", "code": "nope"}})

    run_dataset(tmp_path, inp, refuse, force=True, id_column="custom_id")
    table = {
        r["custom_id"]: r for r in pq.read_table(tmp_path / "run" / "results.parquet").to_pylist()
    }
    # the stale answer to "prompt 1" is not shown next to the edited prompt
    assert table["c1"]["status"] == "failed" and table["c1"]["content"] is None
    assert table["c0"]["content"] == "answer to: prompt 0"


def test_rows_appended_during_a_run_are_not_sent(tmp_path: Path) -> None:
    inp = tmp_path / "req.jsonl"
    rows = [{"custom_id": f"id-{i}", "body": _body(i)} for i in range(50)]
    inp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    appended = False
    server = Server()

    def grow_then_answer(request: httpx.Request) -> httpx.Response:
        nonlocal appended
        if not appended:
            appended = True
            with open(inp, "a") as f:  # 10 existing ids again, then 11 invalid rows
                for r in rows[:10]:
                    f.write(json.dumps(r) + "\n")
                for _ in range(11):
                    f.write('{"not": "a request"}\n')
        return server(request)

    cfg = Settings(
        input=str(inp), out_dir=str(tmp_path / "run"), base_url="http://test/v1", concurrency=2
    )
    result = run(cfg, grow_then_answer)  # type: ignore[arg-type]
    assert appended
    assert server.total == 50
    ids = [line["custom_id"] for line in lines_of(tmp_path / "run" / "results.jsonl")]
    assert sorted(ids) == sorted(r["custom_id"] for r in rows)  # once each
    summary = summary_of(tmp_path / "run")
    assert summary["requests"]["succeeded"] == 50 and summary["requests"]["total"] == 50
    assert result.exit_code == 0
    assert any("grew while the run was going" in n for n in result.notes)


def _body(i: int) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q-{i}"}]}


class _ScanSeen(RunHooks):
    """Records how many body hashes the scan handed to the checks before sending."""

    def __init__(self) -> None:
        self.bodies: list[int] = []

    def before_send(self, state: Any, scan: Any) -> list[str] | None:
        self.bodies.append(len(scan.bodies))
        return None


def test_body_hashes_are_kept_only_when_there_are_answers_to_compare_them_with(
    tmp_path: Path,
) -> None:
    """A fresh run keeps 8 bytes a row fewer (issue 25's memory bar); a resumed run
    keeps them and still finds the edited row."""
    texts = [f"prompt {i}" for i in range(6)]
    inp = write_texts(tmp_path / "in.jsonl", texts, ids=True)

    def go(handler: Any, **kw: Any) -> tuple[Any, _ScanSeen]:
        seen = _ScanSeen()
        return run_dataset(tmp_path, inp, handler, (seen,), id_column="custom_id", **kw), seen

    result, seen = go(echo_server())
    assert result.exit_code == 0 and seen.bodies == [0]

    texts[4] = "prompt 4, edited"
    write_texts(inp, texts, ids=True)
    again = echo_server()
    result, seen = go(again, force=True)
    assert seen.bodies == [6]
    assert again.sent == ["prompt 4, edited"]
    assert any("1 rows changed" in n for n in result.notes)
