"""64-bit hashes of custom_ids, so sets of a million ids stay small.

Hashes are compared only inside one process (the input scan, the journal and the
runner's skip set), so Python's keyed SipHash of the id's UTF-8 bytes is enough:
about 20x cheaper than blake2b, which matters when a resume hashes a million ids.
Never store these numbers: they change from one process to the next. A collision
can only make two ids look alike: duplicate detection confirms on the real strings.

    >>> id_hash("row-1") == id_hash_bytes(b"row-1")
    True
"""

from __future__ import annotations

from hashlib import blake2b

_MASK = (1 << 64) - 1


def id_hash(custom_id: str) -> int:
    return hash(custom_id.encode("utf-8")) & _MASK


def id_hash_bytes(utf8_id: bytes) -> int:
    """Same as ``id_hash`` for an id already in UTF-8 (as read from an output line)."""
    return hash(utf8_id) & _MASK


def body_hash(payload: bytes) -> str:
    """The stable hash of a request body as sent (its JSON bytes), 16 hex digits.

    Every output line records it, tying the answer to the exact request that
    produced it: unlike `id_hash` it is the same in every process, so a resume
    can tell a row whose body changed from one already answered.

    >>> body_hash(b'{"model":"m"}') == format(body_hash_int(b'{"model":"m"}'), "016x")
    True
    """
    return blake2b(payload, digest_size=8).hexdigest()


def body_hash_int(payload: bytes) -> int:
    """`body_hash` as a 64-bit int (what the journal and the scan keep in memory)."""
    return int.from_bytes(blake2b(payload, digest_size=8).digest(), "big")
