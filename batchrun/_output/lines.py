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
``endpoint`` is `batchrun._endpoint.endpoint_identity` of the run that wrote the line
(``"sim"``: the built-in simulator): a simulated answer never counts as done for a
real endpoint (`simulated_line`). In a pool of endpoints it is the identity of the
endpoint that answered, and ``route`` names (by their names in the pool) the
endpoint each attempt went to, the last the one that answered:
``"route": ["d", "a"]``.

Pure functions: `encode` and `decode` (the one pair that owns the format: an `Outcome`
in, the same `Outcome` back), and the fast reads of one field used on resume.
Readers rely on the key order: `custom_id_of` finds the id at a fixed offset
after the fixed-width ``id``, `decode_meta` reads the ``batchrun`` object from the
end of the line, and `body_hash_of` finds the body hash at a fixed
offset from the end. Keep ``id`` first, ``custom_id`` second, ``batchrun`` last,
``body_hash`` the last key of ``batchrun`` and ``endpoint`` just before it.
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from batchrun._endpoint import SIM
from batchrun._models import Attempt, BilledUnread, Outcome
from batchrun._output.usage import model_of

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
_POOL_SIM_MARK = b'"endpoint":"' + SIM.encode() + b":"
_ENDPOINT_KEY = b'"endpoint":"'
_META_KEY = b'"batchrun":{'
_QUALITY_KEY = b'"quality":"'
# An answer's line ends with `"error":null,"batchrun":{...}}`: `decode_meta` reads that.
_TAIL_KEY = b',"batchrun":'
_NO_ERROR = b'"error":null'

_CACHE = "cache"
_SENT_KEYS = frozenset(
    {"row", "attempts", "latency_ms", "wait_ms", "ttft_ms", "at", "statuses", "endpoint",
     "body_hash"}
)  # fmt: skip
"""The meta of a row sent online with a usable answer: all that most lines hold."""
_META_KEYS = _SENT_KEYS | {
    "via", "batch_id", "asked_model", "billed_unread", "quality", "quality_detail", "reused",
    "original_latency_ms", "same_as", "route",
}  # fmt: skip
_ANSWERED: dict[int | None, Attempt] = {200: Attempt(200, "ok"), None: Attempt(None, "ok")}
"""The attempt of an answer that came at once (shared: an `Attempt` is immutable);
None: its status was not read (`decode_meta`)."""


def encode(outcome: Outcome, endpoint: str | None = None) -> bytes:
    """The complete JSONL line (with trailing newline) for one outcome; ``endpoint``:
    the identity of the endpoint that answered (`batchrun._endpoint.endpoint_identity`;
    None: the one the outcome records, if any).

    The meta keys come in the order earlier versions wrote them, so a line read back
    (`decode`) encodes to the same bytes: ``row``, ``attempts``, the times (null when
    not timed), ``at``; then how the row was answered (a sent row: ``via``,
    ``batch_id``, ``statuses``, ``asked_model`` / ``billed_unread``, ``quality``,
    ``quality_detail``; a reused one: see `_reused_meta`); keys of a newer version
    (``other``) after ``route`` (a pool's); ``endpoint`` and ``body_hash`` last.

    >>> from batchrun._models import Request
    >>> out = Outcome.success(Request("r", {}, row=2), status=200, request_id=None,
    ...     body={}, attempts=[], latency_s=0.5, body_hash="00000000000000ff")
    >>> orjson.loads(encode(out, "sim"))["batchrun"]  # doctest: +NORMALIZE_WHITESPACE
    {'row': 2, 'attempts': 0, 'latency_ms': 500.0, 'wait_ms': 0.0, 'ttft_ms': None,
     'endpoint': 'sim', 'body_hash': '00000000000000ff'}
    """
    response = None
    if outcome.status_code is not None:
        response = {
            "status_code": outcome.status_code,
            "request_id": outcome.request_id,
            "body": outcome.body,
        }
    # once per finished request: `milliseconds` inlined
    latency, wait, ttft = outcome.latency_s, outcome.wait_s, outcome.ttft_s
    meta: dict[str, Any] = {
        "row": outcome.row,
        "attempts": len(outcome.attempts),
        "latency_ms": None if latency is None else round(latency * 1000, 1),
        "wait_ms": None if wait is None else round(wait * 1000, 1),
        "ttft_ms": None if ttft is None else round(ttft * 1000, 1),
    }
    if outcome.finished_at is not None:
        meta["at"] = round(outcome.finished_at, 3)
    if outcome.reused is not None:
        _reused_meta(meta, outcome)
    else:
        if outcome.via is not None:
            meta["via"] = outcome.via
            meta["batch_id"] = outcome.batch_id
        if outcome.ok and len(outcome.attempts) > 1:
            meta["statuses"] = [a.status for a in outcome.attempts]
        if (
            outcome.asked_model is not None
            or outcome.billed_unread is not None
            or outcome.quality is not None
        ):
            _answer_meta(meta, outcome)
    if outcome.route is not None:
        meta["route"] = outcome.route
    if outcome.other:
        meta.update(outcome.other)
    if endpoint is None:
        endpoint = outcome.endpoint
    if endpoint is not None:
        meta["endpoint"] = endpoint
    if outcome.body_hash is not None:
        meta["body_hash"] = outcome.body_hash
    line = {
        "id": "batch_req_" + os.urandom(_ID_HEX // 2).hex(),
        "custom_id": outcome.custom_id,
        "response": response,
        "error": outcome.error,
        "batchrun": meta,
    }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def milliseconds(seconds: float | None) -> float | None:
    """A time as a line holds it: milliseconds to 0.1 (None: not timed).

    >>> milliseconds(0.81234), milliseconds(None)
    (812.3, None)
    """
    return None if seconds is None else round(seconds * 1000, 1)


def _answer_meta(meta: dict[str, Any], outcome: Outcome) -> None:
    """What a sent row's answer says: the model asked for, attempts paid for but
    unread, the quality verdict. ``asked_model`` comes after ``billed_unread`` when it
    is there only for the unread attempts (a failure, or an answer that names the
    model asked for), as the sender has always written it."""
    asked, unread = outcome.asked_model, outcome.billed_unread
    asked_last = unread is not None and (not outcome.ok or model_of(outcome.body, None) == asked)
    if asked is not None and not asked_last:
        meta["asked_model"] = asked
    if unread is not None:
        meta["billed_unread"] = {
            "attempts": unread.attempts,
            "prompt_tokens": unread.prompt_tokens,
            "completion_ceiling": unread.completion_ceiling,
        }
        if asked is not None and asked_last:
            meta["asked_model"] = asked
    if outcome.quality is not None:
        meta["quality"] = outcome.quality
        if outcome.quality_detail is not None:
            meta["quality_detail"] = outcome.quality_detail


def _reused_meta(meta: dict[str, Any], outcome: Outcome) -> None:
    """A reused answer's meta. A cache hit says first that it is one, then the answer's
    original time and the model asked for; a copy of another row's answer carries
    that answer's verdict and model first, then how it was reused and from which row."""
    asked, original = outcome.asked_model, outcome.original_latency_ms
    if outcome.reused == _CACHE:
        meta["reused"] = _CACHE
        if original is not None:
            meta["original_latency_ms"] = original
        if asked is not None:
            meta["asked_model"] = asked
    if outcome.quality is not None:
        meta["quality"] = outcome.quality
        if outcome.quality_detail is not None:
            meta["quality_detail"] = outcome.quality_detail
    if outcome.reused != _CACHE:
        if asked is not None:
            meta["asked_model"] = asked
        meta["reused"] = outcome.reused
        if original is not None:
            meta["original_latency_ms"] = original
    if outcome.same_as is not None:
        meta["same_as"] = outcome.same_as


def decode(line: bytes) -> Outcome:
    """The outcome one line records (what `encode` wrote: ``encode(decode(line))`` is
    ``line`` but for its random ``id``). Raises ValueError on a torn or foreign line.

    ``ok`` is whether the line has no error (a line of results.jsonl); attempts come
    back with their statuses (a success's earlier attempts have no code: only their
    statuses are written); meta keys this version does not know are kept in
    ``other``, and a known key whose value has the wrong type reads as absent.

    >>> out = decode(b'{"custom_id":"a","response":null,"error":null,'
    ...     b'"batchrun":{"row":3,"attempts":2,"latency_ms":5.0,"statuses":[429,200],'
    ...     b'"reused":"cache","soon":1}}')
    >>> out.row, [a.status for a in out.attempts], out.latency_s, out.reused, out.other
    (3, [429, 200], 0.005, 'cache', {'soon': 1})
    """
    record = orjson.loads(line)
    custom_id = record.get("custom_id") if type(record) is dict else None
    if type(custom_id) is not str:
        raise ValueError("not a batchrun output line")
    response = record.get("response")
    error = record.get("error")
    if type(error) is not dict:
        error = None
    outcome = (
        Outcome(
            custom_id,
            error is None,
            _int(response.get("status_code")),
            _str(response.get("request_id")),
            response.get("body"),
            error,
            [],
        )
        if type(response) is dict
        else Outcome(custom_id, error is None, None, None, None, error, [])
    )
    meta = record.get("batchrun")
    _read_meta(outcome, meta if type(meta) is dict else {})
    return outcome


def _read_meta(outcome: Outcome, meta: dict[str, Any]) -> None:
    """Fill ``outcome`` from a line's ``batchrun`` object (`decode`). A known key with a
    value of the wrong type (not one batchrun wrote) reads as absent."""
    # once per line read back (a resume's tail, a report, the results index): the
    # common line's keys first, with the type checks inlined
    get = meta.get
    row = get("row")
    if type(row) is int:
        outcome.row = row
    ms = get("latency_ms")
    outcome.latency_s = ms / 1000 if type(ms) is float or type(ms) is int else None
    ms = get("wait_ms")
    outcome.wait_s = ms / 1000 if type(ms) is float or type(ms) is int else None
    ms = get("ttft_ms")
    outcome.ttft_s = ms / 1000 if type(ms) is float or type(ms) is int else None
    at = get("at")
    if type(at) is float or type(at) is int:
        outcome.finished_at = at
    statuses = get("statuses")
    if outcome.error is None and statuses is None and get("attempts") == 1:
        answered = _ANSWERED.get(outcome.status_code)
        outcome.attempts = [answered or Attempt(outcome.status_code, "ok")]
    else:
        outcome.attempts = _attempts(outcome, get("attempts"), statuses)
    body_hash = get("body_hash")
    if type(body_hash) is str:
        outcome.body_hash = body_hash
    endpoint = get("endpoint")
    if type(endpoint) is str:
        outcome.endpoint = endpoint
    keys = meta.keys()
    if keys <= _SENT_KEYS:
        return  # the common line: a row sent online and answered as it should be
    outcome.asked_model = _str(get("asked_model"))
    outcome.billed_unread = _billed_unread(get("billed_unread"))
    outcome.quality = _str(get("quality"))
    outcome.quality_detail = _str(get("quality_detail"))
    outcome.reused = _str(get("reused"))
    outcome.same_as = _str(get("same_as"))
    outcome.original_latency_ms = _number(get("original_latency_ms"))
    outcome.via = _str(get("via"))
    outcome.batch_id = _str(get("batch_id"))
    route = get("route")
    if type(route) is list and all(type(name) is str for name in route):
        outcome.route = route
    if not keys <= _META_KEYS:
        outcome.other = {key: value for key, value in meta.items() if key not in _META_KEYS}


def _attempts(outcome: Outcome, count: Any, statuses: Any) -> list[Attempt]:
    """A line's attempts: a failure's from its error (status, code, message), an
    answer's from its statuses (written after retries) or its count."""
    error = outcome.error
    if error is not None:
        listed = error.get("attempts")
        return [
            Attempt(
                _int(a.get("status")),
                _str(a.get("code")) or "",
                _str(a.get("message")) or "",
                a.get("billed") is True,
            )
            for a in (listed if isinstance(listed, list) else ())
            if isinstance(a, dict)
        ]
    if isinstance(statuses, list) and statuses:
        *earlier, last = statuses
        return [*(Attempt(_int(s), "") for s in earlier), Attempt(_int(last), "ok")]
    n = _int(count)
    return [Attempt(outcome.status_code, "ok")] * (1 if n is None else max(0, n))


def _billed_unread(value: Any) -> BilledUnread | None:
    if not isinstance(value, dict):
        return None
    return BilledUnread(
        _int(value.get("attempts")) or 0,
        _int(value.get("prompt_tokens")) or 0,
        _int(value.get("completion_ceiling")) or 0,
    )


def _int(value: Any) -> int | None:
    return value if type(value) is int else None


def _str(value: Any) -> str | None:
    return value if type(value) is str else None


def _number(value: Any) -> float | None:
    return value if type(value) is float or type(value) is int else None


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
    return decode(line).custom_id


def decode_meta(line: bytes) -> Outcome:
    """`decode` without the response, for figures that need only the meta (times,
    retries, reuse) of answers whose bodies may be megabytes: the ``batchrun`` object
    is read from the line's end, and ``status_code``, ``request_id`` and ``body`` are
    left None. The bytes ``,"batchrun":`` cannot occur unescaped inside a JSON string,
    so the last ones start the meta. A failure (its attempts are in its error) and
    anything not shaped like our line are decoded in full.

    >>> out = decode_meta(b'{"custom_id":"a","response":{"body":"..."},"error":null,'
    ...     b'"batchrun":{"latency_ms":5.0}}\\n')
    >>> out.ok, out.latency_s, out.body
    (True, 0.005, None)
    """
    at = line.rfind(_TAIL_KEY)
    if at >= 0 and line[at - len(_NO_ERROR) : at] == _NO_ERROR:
        tail = line[at + len(_TAIL_KEY) :].rstrip()
        if tail.endswith(b"}"):
            try:
                meta = orjson.loads(tail[:-1])
            except orjson.JSONDecodeError:
                meta = None
            if isinstance(meta, dict):
                outcome = Outcome(custom_id_of(line), True, None, None, None, None, [])
                _read_meta(outcome, meta)
                return outcome
    return decode(line)


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
    >>> simulated_line(b'{"batchrun":{"endpoint":"sim:fast","body_hash":"00"}}\\n')
    True
    """
    if line[-_SIM_MARK_AT:-_BODY_HASH_KEY_AT] == _SIM_MARK:
        return True
    at = line.rfind(_META_KEY)
    if at < 0:
        return None
    found = line.find(_ENDPOINT_KEY, at)
    if found < 0:
        return None
    # "sim", or "sim:NAME" for a simulated endpoint of a pool
    return line.startswith(_SIM_MARK[:-1], found) or line.startswith(_POOL_SIM_MARK, found)


def bad_answer_of(line: bytes) -> bool:
    """True when a result line's meta marks its answer as unusable (`batchrun._output.quality`:
    truncated, refused, not valid against the schema...). Reads only the meta."""
    at = line.rfind(_META_KEY)
    return at >= 0 and line.find(_QUALITY_KEY, at) >= 0
