"""The simulator's file store: uploaded inputs and the output/error files batches write.

In memory (it is a simulator): each file keeps its bytes and is described by the
object OpenAI's Files API returns. Ids look like OpenAI's (``file-`` and 22 letters
or digits); listing is newest first by upload order, not by id. Time is passed in by
the caller, so the store itself has no clock.

    >>> store = FileStore()
    >>> f = store.add(b'{"x": 1}\\n', "in.jsonl", "batch", now=1_700_000_000.0)
    >>> f.to_dict()["bytes"], f.to_dict()["purpose"], f.id.startswith("file-")
    (9, 'batch', True)
"""

from __future__ import annotations

import hashlib
import itertools
import random
from dataclasses import dataclass
from typing import Any

_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
BATCH_FILE_TTL = 30 * 86_400
"""Files uploaded for ``purpose=batch`` expire after 30 days unless told otherwise."""


@dataclass(slots=True)
class StoredFile:
    id: str
    serial: int
    filename: str
    purpose: str
    created_at: float
    content: bytes
    expires_at: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The File object, field for field as OpenAI returns it."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.content),
            "created_at": int(self.created_at),
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None if self.expires_at is None else int(self.expires_at),
            "status_details": None,
        }


class FileStore:
    """Files by id, in upload order; `add` never fails (checks belong to the API edge)."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._serial = itertools.count(1)
        self._rng = random.SystemRandom()

    def add(
        self,
        content: bytes,
        filename: str,
        purpose: str,
        *,
        now: float,
        expires_after: float | None = None,
        file_id: str | None = None,
    ) -> StoredFile:
        """Store `content`; `expires_after` seconds (None: the purpose's default);
        `file_id` given: under that id (a batch's output, a replayed upload)."""
        if expires_after is None and purpose == "batch":
            expires_after = BATCH_FILE_TTL
        stored = StoredFile(
            id=file_id or "file-" + "".join(self._rng.choices(_ALNUM, k=22)),
            serial=next(self._serial),
            filename=filename,
            purpose=purpose,
            created_at=now,
            content=content,
            # whole seconds from the whole-second creation time, as the API shows them
            expires_at=None if expires_after is None else int(now) + int(expires_after),
        )
        self._files[stored.id] = stored
        return stored

    def derived_id(self, seed: str) -> str:
        """A file id that follows from ``seed`` (a batch's id and the file's role), so
        a simulator replaying its calls makes a batch's output under the same id."""
        digest = hashlib.blake2b(seed.encode(), digest_size=22).digest()
        return "file-" + "".join(_ALNUM[b % len(_ALNUM)] for b in digest)

    def get(self, file_id: str) -> StoredFile | None:
        return self._files.get(file_id)

    def delete(self, file_id: str) -> bool:
        return self._files.pop(file_id, None) is not None

    def listed(self, purpose: str | None = None, newest_first: bool = True) -> list[StoredFile]:
        files = [f for f in self._files.values() if purpose is None or f.purpose == purpose]
        # dicts keep insertion order, which is upload order
        return files[::-1] if newest_first else files

    def __len__(self) -> int:
        return len(self._files)
