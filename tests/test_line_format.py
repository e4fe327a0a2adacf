"""One encoder/decoder pair owns the result-line format (`batchrun._output.lines`), and
the format did not change when an outcome's facts became typed fields (issue 25).

tests/lines_da51636.jsonl holds one line for each way a row gets its line (online,
retried and judged, billed but unread, failed, through the Batch API, from the cache,
copied from another row), written by batchrun 0.1.0 at commit da51636 through that
version's own code paths (`Sender`, `batch.outcomes`, `engine.reuse`). A run directory
of that version must resume: its lines decode to typed outcomes that encode back to the
same bytes (but the random id), and today's writers write those very bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from batchrun._batch.outcomes import failure, success
from batchrun._batch.protocol import RowResult
from batchrun._engine.attempt import Sender
from batchrun._engine.reuse import reused
from batchrun._models import Attempt, BilledUnread, Outcome, Request
from batchrun._output import lines
from batchrun._output.lines import ID_PREFIX, decode, decode_meta, encode, milliseconds
from batchrun._output.tally import Tally

PREVIOUS = Path(__file__).parent / "lines_da51636.jsonl"
ENDPOINT = "https://api.openai.com/v1"
HASH = "9f2c1e0a5b7d3c84"
ASKED = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Say hi"}]}
ASKED["max_tokens"] = 16


def previous_lines() -> dict[str, bytes]:
    """custom_id -> the line batchrun 0.1.0 wrote."""
    return {
        orjson.loads(line)["custom_id"]: line for line in PREVIOUS.read_bytes().splitlines(True)
    }


def same_but_id(ours: bytes, theirs: bytes) -> None:
    """Equal bytes but for the random hex digits of ``id``."""
    at = len(ID_PREFIX)
    assert ours[at + 24 :] == theirs[at + 24 :]
    assert ours[:at] == theirs[:at] == ID_PREFIX


# every key of the ``batchrun`` object -> how a decoded outcome gives it back
META_FIELDS: dict[str, Callable[[Outcome], Any]] = {
    "row": lambda o: o.row,
    "attempts": lambda o: len(o.attempts),
    "latency_ms": lambda o: milliseconds(o.latency_s),
    "wait_ms": lambda o: milliseconds(o.wait_s),
    "ttft_ms": lambda o: milliseconds(o.ttft_s),
    "at": lambda o: o.finished_at,
    "via": lambda o: o.via,
    "batch_id": lambda o: o.batch_id,
    "statuses": lambda o: [a.status for a in o.attempts],
    "asked_model": lambda o: o.asked_model,
    "billed_unread": lambda o: (
        o.billed_unread
        and {
            "attempts": o.billed_unread.attempts,
            "prompt_tokens": o.billed_unread.prompt_tokens,
            "completion_ceiling": o.billed_unread.completion_ceiling,
        }
    ),
    "quality": lambda o: o.quality,
    "quality_detail": lambda o: o.quality_detail,
    "reused": lambda o: o.reused,
    "original_latency_ms": lambda o: o.original_latency_ms,
    "same_as": lambda o: o.same_as,
    "route": lambda o: o.route,
    "endpoint": lambda o: o.endpoint,
    "body_hash": lambda o: o.body_hash,
}


def test_every_line_of_the_previous_version_encodes_back_to_its_bytes() -> None:
    written = previous_lines()
    assert len(written) == 9
    for line in written.values():
        same_but_id(encode(decode(line)), line)
        # the sink names its endpoint: the same one gives the same line
        same_but_id(encode(decode(line), ENDPOINT), line)


def test_every_meta_key_is_a_typed_field() -> None:
    seen: set[str] = set()
    for line in previous_lines().values():
        meta = orjson.loads(line)["batchrun"]
        outcome = decode(line)
        for key, value in meta.items():
            assert META_FIELDS[key](outcome) == value, key
        seen.update(meta)
        assert outcome.other is None  # nothing this version does not know
    # the fixture covers the whole format of its version (a pool's ``route`` came
    # after it: `test_a_pools_route_round_trips`), and the decoder knows exactly these
    assert seen | {"route"} == set(META_FIELDS) == lines._META_KEYS


def test_a_pools_route_round_trips() -> None:
    """The endpoints a pooled row's attempts went to, by their names in the pool."""
    line = next(iter(previous_lines().values()))
    outcome = decode(line)
    outcome.route = ["d", "a"]
    again = decode(encode(outcome))
    assert again.route == ["d", "a"] and again.other is None
    assert orjson.loads(encode(outcome))["batchrun"]["route"] == ["d", "a"]


def test_the_decoded_lines_say_how_each_row_was_answered() -> None:
    got = {cid: decode(line) for cid, line in previous_lines().items()}
    plain, judged, billed, failed = got["row-1"], got["row-2"], got["row-3"], got["row-4"]
    assert plain.ok and plain.latency_s == 0.8125 and plain.wait_s == 0.0421
    assert plain.finished_at == 1764513600.123 and plain.endpoint == ENDPOINT
    assert (plain.reused, plain.via, plain.quality, plain.asked_model) == (None,) * 4
    assert [a.status for a in judged.attempts] == [200, 429, 200]
    assert (judged.quality, judged.quality_detail) == ("truncated", "finish_reason length")
    assert judged.asked_model == "gpt-4o-mini" and judged.ttft_s == 0.2
    assert judged.billed_unread == billed.billed_unread == BilledUnread(1, 9, 16)
    assert not failed.ok and failed.error is not None and failed.status_code == 400
    assert [(a.status, a.code, a.billed) for a in failed.attempts] == [
        (200, "unreadable", True),
        (400, "invalid_request_error", False),
    ]
    batch, expired = got["row-5"], got["row-6"]
    assert (batch.via, batch.batch_id, batch.latency_s, batch.wait_s) == (
        "batch",
        "batch_6f1e",
        None,
        None,
    )
    assert (expired.via, expired.batch_id, expired.ok) == ("batch", None, False)
    cache, copy, copied_failure = got["row-7"], got["row-8"], got["row-9"]
    assert (cache.reused, cache.original_latency_ms, cache.finished_at) == ("cache", 640.5, None)
    assert (copy.reused, copy.same_as, copy.original_latency_ms) == ("run", "row-2", 812.5)
    assert copy.quality == "truncated" and copy.attempts == []
    assert (copied_failure.reused, copied_failure.ok) == ("run", False)


def test_todays_writers_write_the_lines_the_previous_version_wrote() -> None:
    written = previous_lines()
    chosen = dict(ASKED, model="gpt-4o-mini")  # the answer names the model asked for
    other = "gpt-4o-mini-2024-07-18"
    answer = orjson.loads(written["row-2"])["response"]["body"]
    assert answer["model"] == other
    same_model = dict(answer, model="gpt-4o-mini")

    def online(cid: str, row: int, attempts: list[Attempt], body: Any, **facts: Any) -> Outcome:
        out = Outcome.success(
            Request(cid, chosen, row=row),
            status=200,
            request_id="req_abc",
            body=body,
            attempts=attempts,
            latency_s=0.8125,
            ttft_s=facts.pop("ttft_s", None),
            wait_s=0.0421,
            body_hash=HASH,
        )
        out.finished_at = 1764513600.1234
        for name, value in facts.items():
            setattr(out, name, value)
        return out

    unread = Attempt(200, "unreadable", billed=True)
    ok = Attempt(200, "ok")
    judged = online(
        "row-2",
        2,
        [unread, Attempt(429, "rate_limited"), ok],
        answer,
        asked_model="gpt-4o-mini",
        ttft_s=0.2,
        quality="truncated",
        quality_detail="finish_reason length",
    )
    Sender._mark_billed(judged, chosen, 1)
    billed = online("row-3", 3, [unread, ok], same_model)
    Sender._mark_billed(billed, chosen, 1)
    failed = Outcome.failure(
        Request("row-4", chosen, row=4),
        code="invalid_request_error",
        message="bad",
        attempts=[
            Attempt(200, "unreadable", "not JSON", billed=True),
            Attempt(400, "invalid_request_error", "bad"),
        ],
        status=400,
        request_id="req_x",
        body=orjson.loads(written["row-4"])["response"]["body"],
        latency_s=0.5,
        wait_s=0.1,
        body_hash=HASH,
    )
    failed.finished_at = 1764513601.5
    assert failed.error is not None
    failed.error.update(type="invalid_request_error", param="messages")
    Sender._mark_billed(failed, chosen, 1)
    via_batch = success(
        RowResult("row-5", True, 200, "req_b", answer),
        row=5,
        body_hash=HASH,
        batch_id="batch_6f1e",
        attempts_before=1,
        at=1764513700.25,
    )
    via_batch.asked_model = "gpt-4o-mini"
    via_batch.quality, via_batch.quality_detail = "truncated", "finish_reason length"
    expired = failure(
        "row-6",
        code="batch_expired",
        message="the batch was expired before it ran this row",
        row=6,
        body_hash=HASH,
        batch_id=None,
        attempts_before=0,
        at=1764513700.5,
    )
    cached = Outcome.success(
        Request("row-7", chosen, row=7),
        status=200,
        request_id=None,
        body=answer,
        attempts=[],
        latency_s=None,
        wait_s=None,
        body_hash=HASH,
    )
    cached.reused, cached.original_latency_ms, cached.asked_model = "cache", 640.5, "gpt-4o-mini"
    leader = online(
        "row-2",
        2,
        [ok],
        answer,
        asked_model="gpt-4o-mini",
        quality="truncated",
        quality_detail="finish_reason length",
    )
    copy = reused(Request("row-8", chosen, row=8), leader, "run", same_as="row-2")
    copy.body_hash = HASH
    bad = Outcome.failure(
        Request("row-4", chosen, row=4),
        code="invalid_request_error",
        message="bad",
        attempts=[Attempt(400, "invalid_request_error", "bad")],
        status=400,
        body={"error": {}},
    )
    copied_failure = reused(Request("row-9", chosen, row=9), bad, "run", same_as="row-4")
    today = [
        online("row-1", 1, [ok], same_model),
        judged,
        billed,
        failed,
        via_batch,
        expired,
        cached,
        copy,
        copied_failure,
    ]
    for outcome in today:
        same_but_id(encode(outcome, ENDPOINT), written[outcome.custom_id])


def test_keys_of_a_newer_version_are_kept_and_written_back() -> None:
    line = previous_lines()["row-8"]
    record = orjson.loads(line)
    meta = record["batchrun"]
    tail = {"endpoint": meta.pop("endpoint"), "body_hash": meta.pop("body_hash")}
    meta.update({"lane": {"kind": "ray", "worker": 3}, "tenant": "t1"}, **tail)
    newer = orjson.dumps(record) + b"\n"
    outcome = decode(newer)
    assert outcome.other == {"lane": {"kind": "ray", "worker": 3}, "tenant": "t1"}
    assert outcome.reused == "run" and outcome.endpoint == ENDPOINT
    same_but_id(encode(outcome), newer)
    # a copy made from it is this version's line: the newer facts were the leader's
    assert reused(Request("row-10", ASKED, row=10), outcome, "run").other is None


def test_a_line_from_before_lines_named_their_endpoint_or_time() -> None:
    # an early reused line: 0 ms on the wire, no finish time, no endpoint, no body hash
    meta = {"row": 4, "attempts": 0, "latency_ms": 0.0, "wait_ms": 0.0, "ttft_ms": None}
    meta.update(reused="run", same_as="row-1")
    old = orjson.dumps(
        {
            "id": "batch_req_" + "0" * 24,
            "custom_id": "row-4",
            "response": {"status_code": 200, "request_id": None, "body": {}},
            "error": None,
            "batchrun": meta,
        }
    )
    old += b"\n"
    outcome = decode(old)
    assert (outcome.latency_s, outcome.finished_at, outcome.endpoint) == (0.0, None, None)
    assert outcome.body_hash is None and outcome.reused == "run"
    same_but_id(encode(outcome), old)


def test_a_known_key_of_the_wrong_type_reads_as_absent() -> None:
    record = orjson.loads(previous_lines()["row-1"])
    record["batchrun"].update(row="one", quality=5, latency_ms="slow", billed_unread=[1])
    outcome = decode(orjson.dumps(record))
    assert (outcome.row, outcome.quality, outcome.latency_s) == (0, None, None)
    assert outcome.billed_unread is None and outcome.other is None


@pytest.mark.parametrize("line", [b'{"custom_id":"a","respo', b"[1,2]\n", b'{"id":"x"}\n', b"\n"])
def test_a_torn_or_foreign_line_is_refused(line: bytes) -> None:
    with pytest.raises(ValueError):
        decode(line)


def test_the_tail_read_agrees_with_the_full_decode() -> None:
    for line in previous_lines().values():
        full, tail = decode(line), decode_meta(line)
        for key in orjson.loads(line)["batchrun"]:  # (an answer's lone status is not read)
            assert META_FIELDS[key](tail) == META_FIELDS[key](full), key
        assert (tail.custom_id, tail.ok) == (full.custom_id, full.ok)


def test_a_line_read_back_counts_as_it_counted_when_written() -> None:
    written, read_back = Tally(), Tally()
    leader = Outcome.success(
        Request("a", ASKED, row=1),
        status=200,
        request_id=None,
        body={"model": "m", "usage": {"prompt_tokens": 3, "completion_tokens": 1}},
        attempts=[Attempt(429, "rate_limited"), Attempt(200, "ok")],
    )
    leader.asked_model, leader.quality = "gpt-4o-mini", "truncated"
    outcomes = [leader, reused(Request("b", ASKED, row=2), leader, "run", same_as="a")]
    for outcome in outcomes:
        written.count_outcome(outcome)
        read_back.count_outcome(decode(encode(outcome)))
    assert written.to_state() == read_back.to_state()
    assert written.retries == 1 and written.reused == {"run": 1}
