"""Stable 64-bit hashes of custom_ids, so sets of a million ids stay small.

The same id hashes to the same number in every process (blake2b, not ``hash()``),
so a resumed run can compare ids against what an earlier process wrote. A hash
collision can only make two ids look alike: duplicate detection confirms on the
real strings before it reports one.

    >>> id_hash("row-1") == id_hash("row-1")
    True
"""

from __future__ import annotations

from hashlib import blake2b


def id_hash(custom_id: str) -> int:
    return int.from_bytes(blake2b(custom_id.encode("utf-8"), digest_size=8).digest(), "little")
