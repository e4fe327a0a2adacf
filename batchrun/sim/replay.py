"""The simulator's Files/Batches calls kept in its state folder, and played again.

Every call that changed a file or a batch is kept (`batchrun.sim.persist.StateLog`)
before it is answered; a simulator started on the folder replays them, each at its own
time, so its batches outlive its process. A batch that ended with every file of it
deleted is kept as it was last shown, and its input's bytes go.

    kept = KeptCalls(state, files, batches)
    kept.keep({"op": "delete", "id": file_id, "at": now})
    kept.replay()      # at the first call of the next simulator
"""

from __future__ import annotations

from typing import Any

from batchrun.sim.batch_state import LIVE
from batchrun.sim.batches import BatchStore
from batchrun.sim.files import FileStore
from batchrun.sim.persist import StateLog
from batchrun.sim.stats import SimStats


class KeptCalls:
    """Keeps the calls that change state (none without a state folder) and replays them."""

    def __init__(self, state: StateLog | None, files: FileStore, batches: BatchStore) -> None:
        self.state = state
        """Where the calls that change files and batches are kept (None: memory only)."""
        self.files = files
        self.batches = batches
        self.replayed = state is None

    def replay(self) -> None:
        """Play the calls a simulator before this one kept, each at its own time (at
        the first call, not at start: by then the run owning the folder holds its
        directory's lock, so the log is complete)."""
        assert self.state is not None
        self.replayed = True
        store, files = self.batches, self.files
        ops = self.state.read()
        ended = {str(op["id"]): op for op in ops if op["op"] == "ended"}
        counted, store.stats = store.stats, SimStats()  # replayed rows are not news
        try:
            for op in ops:
                at = float(op["at"])
                store.advance(at)
                kind, ident = op["op"], str(op["id"])
                if kind == "create" and ident in ended:
                    store.restore_ended(ended[ident]["batch"], int(op["serial"]))
                    continue
                if kind == "upload":
                    content = self.state.content(ident)
                    if content is not None:
                        files.add(
                            content,
                            str(op["filename"]),
                            str(op["purpose"]),
                            now=at,
                            expires_after=op.get("expires_after"),
                            file_id=ident,
                        )
                elif kind == "create":
                    store.create(
                        input_file_id=str(op["input_file_id"]),
                        endpoint=str(op["endpoint"]),
                        completion_window=str(op["completion_window"]),
                        metadata=op.get("metadata"),
                        output_expires_after=op.get("output_expires_after"),
                        now=at,
                        replayed=(ident, int(op["serial"]), str(op["fate"])),
                    )
                elif kind == "cancel":
                    batch = store.get(ident)
                    if batch is not None:
                        store.cancel(batch, at)
                elif kind == "delete":
                    files.delete(ident)
        finally:
            store.stats = counted

    def keep(self, op: dict[str, Any], content: bytes | None = None) -> None:
        if self.state is not None:
            self.state.record(op, content)

    def forget(self, file_id: str, now: float) -> None:
        """After a delete: a batch that ended with every file of it deleted is kept as
        it was last shown, and its input's bytes go (no replay needs them again)."""
        state = self.state
        if state is None:
            return
        users = self.batches.using(file_id)
        if not users:  # an upload no batch was made from
            state.forget_content(file_id)
        files = self.files
        for batch in users:
            mine = (batch.input_file_id, batch.output_file_id, batch.error_file_id)
            if batch.status in LIVE:
                continue
            if any(f is not None and files.get(f) is not None for f in mine):
                continue
            shown = batch.to_dict()
            state.record({"op": "ended", "id": batch.id, "batch": shown, "at": now})
            state.forget_content(batch.input_file_id)

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
