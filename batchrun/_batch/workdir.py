"""The ``batch/`` folder of a run directory: the journal, the shard files, the last states.

    batch/steps.jsonl      the step journal (`batchrun._batch.steps`)
    batch/state.json       the last state of each batch seen (for `batchrun status`)
    batch/s000003.jsonl    shard 3's input file, byte for byte what is uploaded
    batch/s000003.idx      one line per request of shard 3: [custom_id, row, body hash]
    batch/sim/             the built-in simulator's files and batches (``--base-url sim``,
                           `batchrun.sim.persist`), so they outlive its process

A shard's input file is written and fsynced before its ``planned`` step, so a crash
before the upload can send the same bytes again; it is removed once the batch exists
(the provider has the bytes). The index stays until the shard is done: it tells which
rows the shard holds, the row number and the hash of the body each line will answer.

    >>> shard_paths("runs/a", 3).input
    'runs/a/batch/s000003.jsonl'
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from batchrun._apis import CHAT, api_of_url, batch_url
from batchrun._batch.protocol import CHAT_ENDPOINT, input_line
from batchrun._ids import body_hash
from batchrun._output.ledger import BATCH_DIR, shard_tag, state_path, steps_path
from batchrun.errors import RunDirError

SIM = "sim"


@dataclass(frozen=True)
class ShardPaths:
    input: str
    index: str


def batch_dir(run_dir: str) -> str:
    return os.path.join(run_dir, BATCH_DIR)


def sim_state_path(run_dir: str) -> str:
    """Where the built-in simulator of a run keeps its files and batches."""
    return os.path.join(run_dir, BATCH_DIR, SIM)


def shard_paths(run_dir: str, shard: int) -> ShardPaths:
    base = os.path.join(run_dir, BATCH_DIR, shard_tag(shard))
    return ShardPaths(base + ".jsonl", base + ".idx")


@dataclass(frozen=True)
class IndexEntry:
    row: int
    body_hash: str


class ShardWriter:
    """Writes one shard's input file and index; `finish` makes both durable."""

    def __init__(self, run_dir: str, shard: int) -> None:
        self.shard = shard
        self.paths = shard_paths(run_dir, shard)
        self.requests = 0
        self.bytes = 0
        try:
            self._input = open(self.paths.input, "wb")  # noqa: SIM115 - closed in finish
            self._index = open(self.paths.index, "wb")  # noqa: SIM115 - closed in finish
        except OSError as exc:
            raise RunDirError(f"{self.paths.input}: cannot write ({exc.strerror})") from exc

    def add(self, line: bytes, custom_id: str, row: int, hashed: str) -> None:
        """One request: its input line (see `line_for`) and what the index keeps."""
        self._input.write(line)
        self._index.write(orjson.dumps([custom_id, row, hashed], option=orjson.OPT_APPEND_NEWLINE))
        self.requests += 1
        self.bytes += len(line)

    def finish(self) -> None:
        try:
            for f in (self._input, self._index):
                f.flush()
                os.fsync(f.fileno())
                f.close()
        except OSError as exc:
            raise RunDirError(f"{self.paths.input}: cannot write ({exc.strerror})") from exc

    def discard(self) -> None:
        for f in (self._input, self._index):
            f.close()
        remove_shard_files(self.paths)


def line_for(
    custom_id: str, body: Mapping[str, Any], api: str = CHAT, *, model: str | None = None
) -> tuple[bytes, str]:
    """A request's input line (to ``api``'s endpoint) and the hash of its body as it
    is sent (the hash an answer line records, the same as an online send records).
    ``model``: the endpoint's name for the body's model (a pool's deployment, alias),
    written into the line; the hash stays the job's body's, as online."""
    sent = body if model is None or model == body.get("model") else {**body, "model": model}
    return input_line(custom_id, sent, batch_url(api)), body_hash(orjson.dumps(body))


def _first_line(run_dir: str, shard: int) -> dict[str, Any]:
    """The first line of a shard's input file ({}: no such file, or not a JSON object)."""
    try:
        with open(shard_paths(run_dir, shard).input, "rb") as f:
            line = orjson.loads(f.readline())
    except (OSError, ValueError):
        return {}
    return line if isinstance(line, dict) else {}


def first_body(run_dir: str, shard: int) -> dict[str, Any] | None:
    """The body of the first request in a shard's input file (None: no such file)."""
    body = _first_line(run_dir, shard).get("body")
    return body if isinstance(body, dict) else None


def shard_endpoint(run_dir: str, shard: int) -> str:
    """The endpoint a shard's batch is created for: the ``url`` of its first line (every
    line of a shard has the same; a shard of chat requests when unreadable)."""
    url = _first_line(run_dir, shard).get("url")
    return url if isinstance(url, str) and api_of_url(url) is not None else CHAT_ENDPOINT


def read_index(run_dir: str, shard: int) -> dict[str, IndexEntry]:
    """custom_id -> (row, body hash) of every request of a shard."""
    path = shard_paths(run_dir, shard).index
    out: dict[str, IndexEntry] = {}
    try:
        with open(path, "rb") as f:
            for line in f:
                if line.endswith(b"\n"):
                    custom_id, row, hashed = orjson.loads(line)
                    out[str(custom_id)] = IndexEntry(int(row), str(hashed))
    except (OSError, ValueError) as exc:
        raise RunDirError(f"{path}: cannot read the shard's index ({exc})") from exc
    return out


def index_ids(run_dir: str, shard: int) -> Iterator[str]:
    """The custom_ids of a shard's requests, streamed."""
    yield from read_index(run_dir, shard)


def remove_shard_files(paths: ShardPaths, *, keep_index: bool = False) -> None:
    for path in (paths.input,) if keep_index else (paths.input, paths.index):
        try:
            os.unlink(path)
        except OSError:
            pass


def leftover_files(run_dir: str, keep: set[int]) -> list[str]:
    """Shard files (and temp files) in ``batch/`` that belong to no shard in ``keep``:
    written by a process killed before it recorded the shard, or done with."""
    folder = batch_dir(run_dir)
    try:
        names = os.listdir(folder)
    except OSError:
        return []
    out = []
    for name in names:
        stem, _, ext = name.partition(".")
        if name.startswith(".tmp-"):
            out.append(os.path.join(folder, name))
        elif ext in ("jsonl", "idx") and stem.startswith("s") and stem[1:].isdigit():
            if int(stem[1:]) not in keep:
                out.append(os.path.join(folder, name))
    return out


__all__ = [
    "BATCH_DIR",
    "IndexEntry",
    "ShardWriter",
    "batch_dir",
    "first_body",
    "leftover_files",
    "line_for",
    "read_index",
    "remove_shard_files",
    "shard_paths",
    "sim_state_path",
    "state_path",
    "steps_path",
]
