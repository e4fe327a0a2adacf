"""The Batch API protocol never pays twice (issue 23, items 6 to 9), against the simulator.

Each test makes the simulator misbehave the way providers have been seen to, and
checks what a user pays and gets: a completed batch whose ``output_file_id`` is null
on the first reads (LiteLLM #37713), a create that takes effect after its answer was
lost, output files that repeat a line with another answer, and a row larger than the
provider's queue of enqueued tokens. The simulator counts creates per shard, rows
answered and reads, so "every row answered once" is a count, not a hope.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import httpx
import pytest

from batchrun.sim import BatchConfig, SimConfig, SimThread, running_sim
from tests.test_batch_api import (
    assert_exactly_once,
    assert_summary_is_a_recount,
    ids,
    lines,
    run_batch,
    settings,
    shards_created_once,
    write_rows,
)
from tests.test_sim_batch import T0, Store, jsonl, upload


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # aiohttp runs on asyncio only


def summary_of(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


def with_a_bad_row(path: Path, n: int) -> Path:
    """``n`` good rows and one the provider refuses (400: an unknown role), so a batch
    has an error file as well as an output file."""
    write_rows(path, n)
    bad = {"model": "gpt-4o-mini", "messages": [{"role": "wizard", "content": "hi"}]}
    with open(path, "a") as f:
        f.write(json.dumps({"custom_id": f"id-{n}", "body": bad}) + "\n")
    return path


class FakeTime:
    """The driver's clock and sleep: a sleep moves the clock at once."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await anyio.lowlevel.checkpoint()


# -- item 6: a completed batch whose output file id is null on the first reads ----------------


def test_a_completed_batch_without_its_output_file_yet_is_read_again_not_resubmitted(
    tmp_path: Path,
) -> None:
    n = 40
    inp = with_a_bad_row(tmp_path / "req.jsonl", n)
    with SimThread(SimConfig(seed=2)) as sim:
        reference = run_batch(settings(inp, tmp_path / "reference", sim.base_url))
    assert reference.exit_code == 4  # the bad row
    out = tmp_path / "run"
    config = SimConfig(seed=2, batch=BatchConfig(late_output_reads=3))
    with SimThread(config) as sim:
        result = run_batch(settings(inp, out, sim.base_url))
        stats = sim.snapshot()
    assert result.exit_code == 4, result.notes
    ok, failed = assert_exactly_once(out, n + 1)
    assert len(ok) == n and failed == [f"id-{n}"]
    # read again until the file appeared: one batch, every row answered once
    assert stats["late_output_reads"] == 3
    assert stats["batches_created"] == 1 and stats["rows_processed"] == n + 1
    assert not any("never appeared" in note for note in result.notes)
    assert_summary_is_a_recount(out)
    summary, expected = summary_of(out), summary_of(tmp_path / "reference")
    assert summary["requests"]["succeeded"] == n and summary["requests"]["failed"] == 1
    assert summary["cost_usd"]["total"] > 0
    assert summary["cost_usd"] == expected["cost_usd"]
    assert summary["usage"] == expected["usage"]


def test_an_output_file_that_never_appears_is_waited_for_then_taken_as_lost(
    tmp_path: Path,
) -> None:
    from batchrun._batch.finish import FILES_WAIT_READS, FILES_WAIT_S

    n = 10
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    fake = FakeTime()
    config = SimConfig(batch=BatchConfig(late_output_reads=1_000_000))
    with SimThread(config) as sim:
        cfg = settings(inp, out, sim.base_url, max_attempts=2, poll_interval=30.0)
        result = run_batch(cfg, clock=fake.clock, sleep=fake.sleep)
        stats = sim.snapshot()
    # each batch was read again, with the poll's back-off, for the whole bound; then
    # its rows were resubmitted once and failed for good after the second batch
    assert stats["batches_created"] == 2
    reads = stats["late_output_reads"]
    assert 2 * FILES_WAIT_READS <= reads <= 2 * (FILES_WAIT_READS + 3), reads
    assert fake.now - 1000.0 >= 2 * FILES_WAIT_S
    lost = [note for note in result.notes if "never appeared" in note]
    assert len(lost) == 2 and "output file" in lost[0] and "10 resubmitted" in lost[0]
    assert "0 resubmitted and 10 failed for good" in lost[1]
    assert result.exit_code == 4
    _, failed = assert_exactly_once(out, n)
    assert len(failed) == n
    assert {r["error"]["code"] for r in lines(out / "errors.jsonl")} == {"batch_missing"}
    assert ids(out / "results.jsonl") == []


# -- the simulator's faults for these items ----------------------------------------------------


def test_sim_hides_the_output_file_id_on_the_first_reads_of_a_finished_batch() -> None:
    sim = Store(late_output_reads=2)
    batch = sim.submit(jsonl(3))
    assert sim.store.retrieved(batch)["output_file_id"] is None  # validating: no file yet
    sim.at(T0)
    assert batch.status == "completed" and batch.output_file_id
    shown = [sim.store.retrieved(batch) for _ in range(3)]
    assert [s["output_file_id"] for s in shown] == [None, None, batch.output_file_id]
    assert all(s["status"] == "completed" for s in shown)
    assert shown[0]["request_counts"] == {"total": 3, "completed": 3, "failed": 0}
    assert sim.stats.late_output_reads == 2


def test_sim_repeats_output_lines_with_another_answer() -> None:
    sim = Store(repeat_output_lines=2)
    batch = sim.submit(jsonl(4))
    sim.at(T0)
    out = sim.output(batch)
    assert [line["custom_id"] for line in out] == [f"row-{i}" for i in (0, 1, 2, 3, 0, 1)]
    first, again = out[0], out[4]
    assert again["id"] != first["id"]
    content = [line["response"]["body"]["choices"][0]["message"]["content"] for line in out]
    assert content[4] == "(repeated) " + content[0]
    assert batch.completed == 4 and sim.stats.repeated_output_lines == 2


@pytest.mark.anyio
async def test_sim_a_slow_create_takes_effect_after_the_client_gave_up() -> None:
    config = SimConfig(batch=BatchConfig(scripts={"create": ["slow_lost:0.3"]}))
    async with running_sim(config) as sim, httpx.AsyncClient(base_url=sim.base_url) as client:
        file_id = (await upload(client, jsonl(2))).json()["id"]
        body = {
            "input_file_id": file_id,
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
            "metadata": {"batchrun_shard": "s000001"},
        }
        with pytest.raises(httpx.ReadTimeout):
            await client.post("/batches", json=body, timeout=0.05)
        assert sim.stats.batches_created == 0  # not yet: the client gave up first
        for _ in range(250):  # made 0.3 s after the call arrived
            if sim.stats.batches_created:
                break
            await asyncio.sleep(0.02)
        listed = (await client.get("/batches")).json()["data"]
        assert [b["metadata"] for b in listed] == [{"batchrun_shard": "s000001"}]
        again = await client.post("/batches", json=body)  # the script is played: normal
        assert again.status_code == 200
    assert sim.stats.api_faults == {"create:slow_lost:0.3": 1}
    assert sim.stats.batches_by_metadata["batchrun_shard"]["s000001"] == 2


def test_sim_knobs_are_checked_and_reach_the_cli() -> None:
    from batchrun.sim.cli import batch_config
    from batchrun.sim.config import check_api_step

    assert check_api_step("slow_lost:1.5") == "slow_lost:1.5"
    for bad in ("slow_lost:", "slow_lost:-1", "slow_lost:soon", "slow"):
        with pytest.raises(ValueError, match="slow_lost:SECONDS"):
            check_api_step(bad)
    with pytest.raises(ValueError, match="late_output_reads"):
        BatchConfig(late_output_reads=-1)
    config = batch_config(
        {
            "batch_late_output_reads": 2,
            "batch_repeat_output_lines": 3,
            "batch_scripts": ("create:slow_lost:1.5,ok",),
        }
    )
    assert config.late_output_reads == 2 and config.repeat_output_lines == 3
    assert config.scripts["create"] == ("slow_lost:1.5", "ok")


# -- item 7: a slow create whose answer is lost -------------------------------------------------


def test_a_slow_create_whose_answer_is_lost_is_found_not_created_twice(tmp_path: Path) -> None:
    # the create takes effect 2 s after it was sent; the client gives up after 1 s. The
    # wait before creating again (1.5 s) is shorter than the create's delay counted from
    # when it was sent, but not counted from when its answer was lost (1 s + 1.5 s)
    n = 30
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    config = SimConfig(batch=BatchConfig(scripts={"create": ["slow_lost:2"]}))
    with SimThread(config) as sim:
        cfg = settings(inp, out, sim.base_url, timeout=1.0)
        result = run_batch(cfg, create_grace=1.5)
        stats = sim.snapshot()
    assert result.exit_code == 0, result.notes
    assert stats["api_faults"] == {"create:slow_lost:2": 1}
    assert shards_created_once(stats) == {"s000001": 1}
    assert stats["batches_created"] == 1 and stats["rows_processed"] == n
    assert_exactly_once(out, n)
    steps = [json.loads(line) for line in (out / "batch" / "steps.jsonl").read_text().splitlines()]
    kinds = [s["step"] for s in steps if s.get("shard") == 1]
    assert kinds[kinds.index("create") :][:3] == ["create", "create_lost", "created"]
    lost = next(s for s in steps if s["step"] == "create_lost")
    sent = next(s for s in steps if s["step"] == "create")
    assert lost["at"] - sent["at"] >= 0.9  # the answer was lost when the client gave up
    assert next(s for s in steps if s["step"] == "created")["found"] is True


class Books:
    """What the submitter tells the user, kept."""

    def __init__(self) -> None:
        self.said: list[str] = []
        self.notes: list[str] = []

    def say(self, text: str) -> None:
        self.said.append(text)

    def write_state(self) -> None:
        pass


def test_a_create_left_unanswered_by_a_killed_process_waits_from_the_restart(
    tmp_path: Path,
) -> None:
    from batchrun._batch.client import BatchClient
    from batchrun._batch.intake import Answers
    from batchrun._batch.openshards import OpenShards
    from batchrun._batch.pool import BatchClients
    from batchrun._batch.protocol import metadata_for
    from batchrun._batch.steps import StepJournal
    from batchrun._batch.submit import Submitter
    from batchrun._settings import Settings

    # a process sent shard 1's create at t=100 and was killed; the next starts at t=5000
    path = tmp_path / "batch" / "steps.jsonl"
    path.parent.mkdir()
    path.write_text(
        '{"step":"run","run_id":"r1","at":90.0}\n'
        '{"step":"planned","shard":1,"model":"m","rows":3}\n'
        '{"step":"uploaded","shard":1,"file_id":"file-1"}\n'
        '{"step":"create","shard":1,"file_id":"file-1","at":100.0}\n'
    )
    listed: list[list[dict[str, Any]]] = [[], [], [{"id": "batch_late"}]]

    def api(request: httpx.Request) -> httpx.Response:
        assert request.method == "GET" and request.url.path == "/v1/batches", request.url
        data = [dict(b, metadata=metadata_for("r1", 1, 1), created_at=4999) for b in listed.pop(0)]
        return httpx.Response(200, json={"data": data, "has_more": False})

    now = [5000.0]
    journal = StepJournal(str(path))
    journal.open(wall_time=now[0])
    client = BatchClient(base_url="http://api.test/v1", transport=httpx.MockTransport(api))
    submitter = Submitter(
        cfg=Settings(input="x.jsonl"),
        clients=BatchClients({"default": client}),
        shards=OpenShards(journal, str(tmp_path)),
        answers=Answers(max_attempts=3),
        source=None,  # type: ignore[arg-type]
        books=Books(),  # type: ignore[arg-type]
        stopping=anyio.Event(),
        trouble=pytest.fail,
        wall_clock=lambda: now[0],
        create_grace=10.0,
        write_final=pytest.fail,
    )
    record = journal.ledger.shards[1]

    async def main() -> list[str]:
        phases = []
        for at in (5000.0, 5009.0, 5010.0):
            now[0] = at
            await submitter.settle_creating(drop=False)
            phases.append(record.phase)
        await client.aclose()
        return phases

    # the loss counts from the restart (the create was sent 4,900 s before), so the
    # lists at +0 s and +9 s prove nothing; the one at +10 s finds the batch made late
    assert anyio.run(main) == ["creating", "creating", "submitted"]
    assert record.batch_id == "batch_late" and not listed
    journal.close()
    steps = [json.loads(line)["step"] for line in path.read_text().splitlines()]
    assert steps[4:] == ["create_lost", "created"]


# -- item 8: output files that repeat a line ----------------------------------------------------


def test_repeated_output_lines_are_written_and_counted_once(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    n = 10
    inp = write_rows(tmp_path / "req.jsonl", n)
    with SimThread(SimConfig(seed=4)) as sim:
        reference = run_batch(settings(inp, tmp_path / "reference", sim.base_url))
    assert reference.exit_code == 0
    out = tmp_path / "run"
    config = SimConfig(seed=4, batch=BatchConfig(repeat_output_lines=3))
    with SimThread(config) as sim:
        cfg = settings(inp, out, sim.base_url, write_parquet=True)
        result = run_batch(cfg)
        stats = sim.snapshot()
        assert stats["repeated_output_lines"] == 3 and stats["rows_processed"] == n
        assert result.exit_code == 0, result.notes
        again = run_batch(cfg)  # the rerun sends nothing and counts nothing twice
        assert sim.snapshot()["batches_created"] == 1
    assert again.exit_code == 0
    ok, _ = assert_exactly_once(out, n)
    assert len(ok) == n  # 10 lines for 10 rows, not 13
    anomalies = [note for note in result.notes if "repeats 3 lines" in note]
    assert len(anomalies) == 1 and "provider anomaly" in anomalies[0]
    expected = summary_of(tmp_path / "reference")
    for summary in (summary_of(out), again.summary):
        assert summary["requests"]["succeeded"] == n
        assert summary["usage"] == expected["usage"]  # tokens counted once
        assert summary["cost_usd"] == expected["cost_usd"]
        assert summary["batch"]["provider_anomalies"] == {"repeated_lines": 3}
    assert_summary_is_a_recount(out)
    # the first answer of each row stands, in results.jsonl and in results.parquet
    contents = {
        r["custom_id"]: r["response"]["body"]["choices"][0]["message"]["content"]
        for r in lines(out / "results.jsonl")
    }
    assert not any(c.startswith("(repeated)") for c in contents.values())
    table = pq.read_table(out / "results.parquet").to_pylist()
    assert len(table) == n
    assert {r["custom_id"]: r["content"] for r in table} == contents


def test_a_repeated_line_is_skipped_and_reported_once_across_a_refetch(tmp_path: Path) -> None:
    from batchrun._batch.intake import Answers
    from batchrun._batch.protocol import BatchView
    from batchrun._batch.steps import replay_lines
    from batchrun._batch.workdir import IndexEntry
    from batchrun._ids import id_hash

    def answer(custom_id: str, text: str) -> bytes:
        body = {"choices": [{"message": {"content": text}}], "usage": {"prompt_tokens": 1}}
        response = {"status_code": 200, "request_id": "r", "body": body}
        return json.dumps({"custom_id": custom_id, "response": response}).encode() + b"\n"

    path = tmp_path / "out.jsonl"
    path.write_bytes(answer("a", "first") + answer("b", "x") + answer("a", "second"))
    index = {"a": IndexEntry(1, "00000000000000aa"), "b": IndexEntry(2, "00000000000000bb")}
    view = BatchView("batch_1", "completed", total=2, completed=2, output_file_id="f")
    answers = Answers(max_attempts=3)
    repeated: list[str] = []
    written = list(answers.lines_of(str(path), view, index, 5.0, {}, repeated))
    assert [(o.custom_id, o.body["choices"][0]["message"]["content"]) for o in written] == [
        ("a", "first"),
        ("b", "x"),
    ]
    assert repeated == ["a"]
    # after a crash the file is taken in again: nothing is written twice
    answers.written(written)
    again: list[str] = []
    assert list(answers.lines_of(str(path), view, index, 5.0, {}, again)) == []
    assert again == ["a"] and answers.done[id_hash("a")] == 0xAA
    # the journal counts a file's repeats once, with the step that says it was taken in
    ledger = replay_lines(
        [
            b'{"step":"downloaded","shard":1,"file_id":"f","repeated":1}',
            b'{"step":"downloaded","shard":1,"file_id":"f","repeated":1}',
            b'{"step":"downloaded","shard":2,"file_id":"g","repeated":2}',
        ]
    )
    assert ledger.repeated_lines == 3


# -- item 9: a row larger than the provider's queue of enqueued tokens ---------------------------


def with_a_huge_row(path: Path, n: int, at: int) -> Path:
    """``n`` small rows, the one at index ``at`` with a prompt of ~1,000 tokens."""
    write_rows(path, n)
    rows = path.read_text().splitlines()
    huge = json.loads(rows[at])
    huge["body"]["messages"][0]["content"] = "word " * 1000
    rows[at] = json.dumps(huge)
    path.write_text("\n".join(rows) + "\n")
    return path


def run_within(cfg: Any, seconds: float) -> Any:
    """`run_batch`, failing after ``seconds`` instead of running on."""
    from batchrun._api import make_runner

    async def main() -> Any:
        with anyio.fail_after(seconds):
            return await make_runner(cfg, None).run()

    return anyio.run(main)


def test_a_row_larger_than_the_queue_fails_for_good_and_the_rest_are_answered(
    tmp_path: Path,
) -> None:
    n = 40
    inp = with_a_huge_row(tmp_path / "req.jsonl", n, at=13)
    out = tmp_path / "run"
    # the queue holds 400 prompt tokens: about 30 small rows, never the huge one
    config = SimConfig(batch=BatchConfig(enqueued_token_limit=400))
    with SimThread(config) as sim:
        cfg = settings(inp, out, sim.base_url, batch_max_requests=64)
        result = run_within(cfg, 30)  # before: uploads and creates forever
        stats = sim.snapshot()
        assert result.exit_code == 4, result.notes
        # shards of 64, 32, 16, 8, 4, 2, 1 held it (each refused): a few creates, bounded
        assert stats["batches_created"] <= 16, stats["batches_created"]
        assert stats["files_uploaded"] == stats["batches_created"]
        shards_created_once(stats)
        ok, failed = assert_exactly_once(out, n)
        assert failed == ["id-13"] and len(ok) == n - 1
        error = lines(out / "errors.jsonl")[0]["error"]
        assert error["code"] == "token_limit_exceeded"
        assert "400 enqueued tokens" in error["message"] and "about 1,0" in error["message"]
        assert "without --batch-api" in error["message"]
        assert any("id-13" in note and "token_limit_exceeded" in note for note in result.notes)
        summary = summary_of(out)
        assert summary["status"] == "complete" and summary["requests"]["failed"] == 1
        assert_summary_is_a_recount(out)

        # a rerun sends nothing; --retry-failed tries the row once more, then stops
        created = stats["batches_created"]
        assert run_batch(cfg).exit_code == 4
        assert sim.snapshot()["batches_created"] == created
        retried = run_within(settings(inp, out, sim.base_url, retry_failed=True), 30)
        assert retried.exit_code == 4
        assert sim.snapshot()["batches_created"] == created + 1
    assert ids(out / "errors.jsonl") == ["id-13", "id-13"]  # --retry-failed appends


def test_a_lone_row_well_under_the_limit_waits_for_a_queue_held_elsewhere(
    tmp_path: Path,
) -> None:
    from batchrun._batch.steps import read_ledger
    from batchrun._pacing import tokens

    # another job of the organization holds the queue for 3 s: every shard of this run
    # is refused, down to rows alone; those are far under the limit, so they wait (they
    # are not failed) and go once the other batch is done
    foreign = jsonl(60, prefix="other")
    held = sum(tokens.prompt_tokens(json.loads(line)["body"]) for line in foreign.splitlines())
    config = SimConfig(batch=BatchConfig(rows_per_second=20, enqueued_token_limit=held + 5))
    n = 5
    inp = write_rows(tmp_path / "req.jsonl", n)
    out = tmp_path / "run"
    with SimThread(config) as sim:
        with httpx.Client(base_url=sim.base_url) as other:
            file_id = other.post(
                "/files", files={"file": ("o.jsonl", foreign)}, data={"purpose": "batch"}
            ).json()["id"]
            body = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
            made = other.post("/batches", json={**body, "completion_window": "24h"}).json()
            assert other.get(f"/batches/{made['id']}").json()["status"] == "in_progress"
        result = run_within(settings(inp, out, sim.base_url, batch_max_requests=8), 30)
        stats = sim.snapshot()
    assert result.exit_code == 0, result.notes
    ok, failed = assert_exactly_once(out, n)
    assert len(ok) == n and not failed
    assert not any("token_limit_exceeded" in note for note in result.notes)
    # rows alone were refused while the other batch held the queue, and went later
    ledger = read_ledger(str(out / "batch" / "steps.jsonl"))
    refused_alone = [r for r in ledger.shards.values() if r.rows == 1 and r.status == "token_limit"]
    assert refused_alone and stats["batches_created"] > len(refused_alone)
    assert all(r.prompt_tokens is not None and r.prompt_tokens < 20 for r in refused_alone)


def test_a_lone_row_refused_twice_without_a_named_limit_fails_for_good(tmp_path: Path) -> None:
    from batchrun._batch.intake import Answers
    from batchrun._batch.openshards import OpenShards
    from batchrun._batch.pool import BatchClients
    from batchrun._batch.steps import StepJournal
    from batchrun._batch.submit import Submitter
    from batchrun._batch.workdir import ShardWriter, line_for
    from batchrun._models import Outcome
    from batchrun._settings import Settings

    journal = StepJournal(str(tmp_path / "batch" / "steps.jsonl"))
    journal.open(wall_time=1.0)
    shards = OpenShards(journal, str(tmp_path))
    written: list[Outcome] = []
    submitter = Submitter(
        cfg=Settings(input="x.jsonl", batch_max_requests=8),
        clients=BatchClients({}),  # no call is made
        shards=shards,
        answers=Answers(max_attempts=3),
        source=None,  # type: ignore[arg-type]
        books=Books(),  # type: ignore[arg-type]
        stopping=anyio.Event(),
        trouble=pytest.fail,
        wall_clock=lambda: 50.0,
        create_grace=10.0,
        write_final=written.extend,
    )
    body = {"model": "m", "messages": [{"role": "user", "content": "a long one"}]}

    def submitted_alone(shard: int) -> Any:
        writer = ShardWriter(str(tmp_path), shard)
        line, hashed = line_for("big", body)
        writer.add(line, "big", 7, hashed)
        writer.finish()
        shards.write({"step": "planned", "shard": shard, "model": "m", "rows": 1})
        shards.write({"step": "created", "shard": shard, "batch_id": f"batch_{shard}"})
        return journal.ledger.shards[shard]

    # a provider whose refusal names no limit: the first refusal alone may have met a
    # batch of this run that ended in the same poll, so the row goes again, alone
    reason = "token_limit_exceeded: the queue for m is full"
    submitter.refused(submitted_alone(1), reason)
    assert not written and submitter.needs_plan and submitter.max_requests == 4
    submitter.refused(submitted_alone(2), reason)
    assert [o.custom_id for o in written] == ["big"]
    error = written[0].error or {}
    assert error["code"] == "token_limit_exceeded" and "refused alone 2 times" in error["message"]
    assert written[0].row == 7 and submitter.max_requests == 8  # full-size shards again
    assert not journal.ledger.open_shards()
    journal.close()


# -- together, counted ---------------------------------------------------------------------------


def test_late_output_ids_and_repeated_lines_together_every_row_sent_once(tmp_path: Path) -> None:
    n = 300
    inp = write_rows(tmp_path / "req.jsonl", n, models=("gpt-4o-mini", "gpt-4.1-mini"))
    out = tmp_path / "run"
    batch = BatchConfig(
        late_output_reads=2,
        repeat_output_lines=5,
        row_error_rate=0.05,
        row_error_status=503,
        scripts={"create": ["ok", "slow_lost:0.6"]},
    )
    with SimThread(SimConfig(seed=9, batch=batch)) as sim:
        cfg = settings(inp, out, sim.base_url, batch_max_requests=80, timeout=0.3)
        result = run_batch(cfg, create_grace=1.0)
        stats = sim.snapshot()
        again = run_batch(cfg)
    assert result.exit_code == 0 and again.exit_code == 0, result.notes
    ok, failed = assert_exactly_once(out, n)
    assert len(ok) == n and not failed
    per_shard = shards_created_once(stats)
    # every row sent once, plus once more for each 503 it drew: nothing else resent
    retried = sum(r["batchrun"]["attempts"] - 1 for r in lines(out / "results.jsonl"))
    assert stats["rows_processed"] == n + retried
    assert sum(per_shard.values()) == stats["batches_created"]
    repeats = stats["repeated_output_lines"]
    assert repeats >= 5 * 4 and stats["late_output_reads"] >= 2 * 4
    for summary in (summary_of(out), again.summary):
        assert summary["batch"]["provider_anomalies"] == {"repeated_lines": repeats}
        assert summary["requests"]["succeeded"] == n
    assert_summary_is_a_recount(out)
