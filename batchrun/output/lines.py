"""One output line per finished request, in the OpenAI Batch API output format.

    {"id": "batch_req_...", "custom_id": "row-1",
     "response": {"status_code": 200, "request_id": "req_...", "body": {...}},
     "error": null,
     "batchrun": {"row": 1, "attempts": 1, "latency_ms": 812.5, "wait_ms": 0.0,
                  "ttft_ms": null, "at": 1764513600.123,
                  "endpoint": "https://api.openai.com/v1", "body_hash": "9f2c..."}}

``response.body`` is the server's response, unmodified. ``error`` is null on success;
on failure it is ``{"code", "message", "attempts": [{"status", "code", "message"}]}``
and ``response`` still holds the last HTTP status and body when there was one. The
extra ``batchrun`` object carries per-request facts (row, attempts, time on the
wire and time spent waiting to send, which endpoint answered, the hash of the body
sent) that the Batch API format has no place for; Batch API readers ignore it.
``endpoint`` is `batchrun.endpoint.endpoint_identity` of the run that wrote the line
(``"sim"``: the built-in simulator): a simulated answer never counts as done for a
real endpoint (`simulated_line`).

Pure functions: encoding, decoding, and the fast custom_id extraction used on resume.
Readers rely on the key order: `custom_id_of` finds the id at a fixed offset
after the fixed-width ``id``, `batchrun.report.statistics.meta_of` reads the ``batchrun``
object from the end of the line, and `body_hash_of` finds the body hash at a fixed
offset from the end. Keep ``id`` first, ``custom_id`` second, ``batchrun`` last,
``body_hash`` the last key of ``batchrun`` and ``endpoint`` just before it.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from batchrun.endpoint import SIM
from batchrun.models import Outcome

_ID_PREFIX = b'{"id":"batch_req_'
_ID_HEX = 24
# Every line we write starts with this many bytes before the custom_id's JSON string.
_CUSTOM_ID_AT = len(_ID_PREFIX) + _ID_HEX + len(b'","custom_id":')
# For the journal's hot loop: a line we wrote starts with ID_PREFIX and its id's
# characters start at ID_AT (after the opening quote).
ID_PREFIX = _ID_PREFIX
ID_AT = _CUSTOM_ID_AT + 1
# A line we wrote ends with `"body_hash":"<16 hex>"}}\n`.
BODY_HASH_KEY = b'"body_hash":"'
BODY_HASH_FROM_END = 20  # the hex digits are line[-20:-4]
_BODY_HASH_KEY_AT = BODY_HASH_FROM_END + len(BODY_HASH_KEY)
# A line the simulator answered has `"endpoint":"sim",` just before its body hash.
_SIM_MARK = b'"endpoint":"' + SIM.encode() + b'",'
_SIM_MARK_AT = _BODY_HASH_KEY_AT + len(_SIM_MARK)
_ENDPOINT_KEY = b'"endpoint":"'


def encode(outcome: Outcome, endpoint: str | None = None) -> bytes:
    """The complete JSONL line (with trailing newline) for one outcome; ``endpoint``:
    the identity of the endpoint that answered (`batchrun.endpoint.endpoint_identity`)."""
    response = None
    if outcome.status_code is not None:
        response = {
            "status_code": outcome.status_code,
            "request_id": outcome.request_id,
            "body": outcome.body,
        }
    meta: dict[str, Any] = {
        "row": outcome.row,
        "attempts": len(outcome.attempts),
        "latency_ms": round(outcome.latency_s * 1000, 1),
        "wait_ms": round(outcome.wait_s * 1000, 1),
        "ttft_ms": None if outcome.ttft_s is None else round(outcome.ttft_s * 1000, 1),
    }
    if outcome.finished_at is not None:
        meta["at"] = round(outcome.finished_at, 3)
    if outcome.extra:
        meta.update(outcome.extra)
    if endpoint is not None:
        meta.pop("endpoint", None)
        meta["endpoint"] = endpoint
    if outcome.body_hash is not None:
        meta.pop("body_hash", None)
        meta["body_hash"] = outcome.body_hash
    line = {
        "id": "batch_req_" + os.urandom(_ID_HEX // 2).hex(),
        "custom_id": outcome.custom_id,
        "response": response,
        "error": outcome.error,
        "batchrun": meta,
    }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line. Raises ValueError on a torn or foreign line."""
    record = orjson.loads(line)
    if not isinstance(record, dict) or not isinstance(record.get("custom_id"), str):
        raise ValueError("not a batchrun output line")
    return record


def custom_id_of(line: bytes) -> str:
    """The custom_id of a line, without parsing its (possibly large) body.

    Lines we wrote have a fixed-width prefix, so the id's JSON string starts at a
    known offset; anything else falls back to a full parse.
    """
    if line.startswith(_ID_PREFIX) and line[_CUSTOM_ID_AT - 1 : _CUSTOM_ID_AT] == b":":
        end = line.find(b'"', _CUSTOM_ID_AT + 1)
        raw_id = line[_CUSTOM_ID_AT + 1 : end]
        if end > 0 and b"\\" not in raw_id:
            return raw_id.decode("utf-8")
        # an escape inside the id (\\, \", \n, \u0001...): let the JSON parser decode it
        return str(orjson.loads(line)["custom_id"])
    return str(decode(line)["custom_id"])


def body_hash_of(line: bytes) -> int | None:
    """The body hash a line records, as an int, read from the line's end; None for a
    line written before batchrun recorded it (or not by batchrun).

    >>> body_hash_of(b'{"batchrun":{"body_hash":"00000000000000ff"}}\\n')
    255
    """
    if line[-_BODY_HASH_KEY_AT:-BODY_HASH_FROM_END] == BODY_HASH_KEY:
        try:
            return int(line[-BODY_HASH_FROM_END:-4], 16)
        except ValueError:
            return None
    return None


_META_KEY = b'"batchrun":{'
_QUALITY_KEY = b'"quality":"'


def endpoint_mark(endpoint: str) -> bytes:
    """The bytes a line answered by ``endpoint`` has just before its body hash (for
    `marked`: a slice comparison, no search)."""
    return orjson.dumps({"endpoint": endpoint})[1:-1] + b","


def marked(line: bytes, mark: bytes) -> bool:
    """True when ``line`` carries ``mark`` (`endpoint_mark`) at its fixed place."""
    return line[-(_BODY_HASH_KEY_AT + len(mark)) : -_BODY_HASH_KEY_AT] == mark


def simulated_line(line: bytes) -> bool | None:
    """Whether the built-in simulator wrote this answer: True or False as the line's
    ``endpoint`` says, None for a line that names no endpoint (written before lines
    recorded it). Reads only the end of the line (a fixed offset for the simulator's
    lines, the meta object for the others).

    >>> simulated_line(b'{"batchrun":{"endpoint":"sim","body_hash":"00000000000000ff"}}\\n')
    True
    >>> simulated_line(b'{"batchrun":{"endpoint":"https://x/v1","body_hash":"00"}}\\n')
    False
    """
    if line[-_SIM_MARK_AT:-_BODY_HASH_KEY_AT] == _SIM_MARK:
        return True
    at = line.rfind(_META_KEY)
    if at < 0:
        return None
    found = line.find(_ENDPOINT_KEY, at)
    if found < 0:
        return None
    return line.startswith(_SIM_MARK[:-1], found)


def bad_answer_of(line: bytes) -> bool:
    """True when a result line's meta marks its answer as unusable (`batchrun.output.quality`:
    truncated, refused, not valid against the schema...). Reads only the meta."""
    at = line.rfind(_META_KEY)
    return at >= 0 and line.find(_QUALITY_KEY, at) >= 0
