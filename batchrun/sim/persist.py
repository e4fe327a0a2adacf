"""The simulated Files and Batches kept in a folder, so a simulator started again carries on.

A real provider keeps a batch running when the process that created it dies; a
simulator living inside that process (``--base-url sim``) would lose it, and the
rerun would ask for a batch nobody knows (``404 No such Batch object``). So a
simulator given a state folder appends every call that changed its files or batches
(upload, create, cancel, delete) to ``log.jsonl`` there, fsynced before the call is
answered, with each upload's bytes in a file of its own. A simulator started on the
same folder replays the log at its first Files/Batches call: each call at its time,
every batch advanced to it first. A batch's rows are answered deterministically (the
same body gets the same reply, row faults draw from the batch's own seeded RNG, and
output file ids derive from the batch id), so the replayed batches are the ones the
dead simulator had, moved on by the time it was away. Output files are not stored:
they are made again.

The log holds ids, names, times and metadata; never a key (the simulator never
stores one), and the uploaded inputs only as the client sent them.

    log = StateLog("runs/a/batch/sim")
    log.record({"op": "delete", "id": "file-abc", "at": 1.7e9})
    [op["op"] for op in log.read()]
"""

from __future__ import annotations

import os
from typing import Any

import orjson

from batchrun._output.ledger import json_objects

LOG = "log.jsonl"
BLOBS = "files"


class StateLog:
    """Append-only, fsynced log of the calls that changed a simulator's files and
    batches, and the uploaded contents (see the module docstring)."""

    def __init__(self, folder: str) -> None:
        self.folder = folder
        self.path = os.path.join(folder, LOG)
        self._fd: int | None = None

    def read(self) -> list[dict[str, Any]]:
        """Every complete line (a torn last line never finished its call: skipped)."""
        try:
            with open(self.path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return []
        return list(json_objects(data[: data.rfind(b"\n") + 1].splitlines()))

    def content(self, file_id: str) -> bytes | None:
        try:
            with open(self._blob(file_id), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def record(self, op: dict[str, Any], content: bytes | None = None) -> None:
        """Keep one call (with an upload's ``content``): on disk when this returns."""
        if content is not None:
            path = self._blob(str(op["id"]))
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(content)
                f.flush()
                os.fsync(f.fileno())
        fd = self._open()
        view = memoryview(orjson.dumps(op, option=orjson.OPT_APPEND_NEWLINE))
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)

    def forget_content(self, file_id: str) -> None:
        try:
            os.unlink(self._blob(file_id))
        except FileNotFoundError:
            pass

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def _open(self) -> int:
        """The log for appending, opened at the first call kept (by then the run that
        owns the folder holds its directory's lock): a torn last line is cut first."""
        if self._fd is None:
            os.makedirs(self.folder, exist_ok=True)
            # 0666 less the umask, as every file of the run directory it lives in
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            size = os.fstat(fd).st_size
            # a few hundred bytes a call: the whole log is small enough to read
            kept = os.pread(fd, size, 0).rfind(b"\n") + 1 if size else 0
            if kept < size:
                os.ftruncate(fd, kept)
            self._fd = fd
        return self._fd

    def _blob(self, file_id: str) -> str:
        return os.path.join(self.folder, BLOBS, os.path.basename(file_id))


__all__ = ["StateLog"]
