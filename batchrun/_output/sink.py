"""Append finished requests to results.jsonl / errors.jsonl, group-committed.

Files are written with unbuffered ``os.write`` (no Python-side buffer that could
flush half a line later). The writer takes every outcome that is ready, encodes
them, writes each file with one ``write`` call, and only *then* reports them as
done (the caller counts them). A crash can tear at most the last line, which the
journal cuts off on resume. ``sync()`` adds an fsync, done at each summary
checkpoint so the byte offsets a checkpoint records are on disk before the
summary that names them.

Every byte goes through `batchrun._redact.scrub` first (no API key reaches a
line, whatever the server echoed). Writing into a file that was deleted
(``rm -r`` of the run directory mid-run) succeeds on Linux and loses every line,
so after each write the file's link count is checked: a deleted output file is a
failed write, and the runner stops sending at the first one.

    >>> with JsonlSink("runs/a") as sink:                  # doctest: +SKIP
    ...     sink.write([outcome])
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from batchrun._models import Outcome
from batchrun._output.journal import ERRORS, RESULTS
from batchrun._output.lines import encode
from batchrun._redact import scrub
from batchrun._runfiles import NEW_FILE
from batchrun.errors import RunDirError


class JsonlSink:
    def __init__(self, run_dir: str, endpoint: str | None = None) -> None:
        self.run_dir = run_dir
        self.endpoint = endpoint
        """The identity of the endpoint answering, recorded on every line."""
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT
        try:
            self._results = os.open(os.path.join(run_dir, RESULTS), flags, NEW_FILE)
            self._errors = os.open(os.path.join(run_dir, ERRORS), flags, NEW_FILE)
        except OSError as exc:
            raise RunDirError(f"{run_dir}: cannot open output files ({exc.strerror})") from exc
        self.results_bytes = os.fstat(self._results).st_size
        self.errors_bytes = os.fstat(self._errors).st_size

    def write(self, outcomes: Sequence[Outcome]) -> None:
        """Write and flush ``outcomes``; when this returns they are on the OS's side."""
        endpoint = self.endpoint
        ok = scrub(b"".join(encode(o, endpoint) for o in outcomes if o.ok))
        failed = scrub(b"".join(encode(o, endpoint) for o in outcomes if not o.ok))
        try:
            if ok:
                _write_all(self._results, ok)
                self.results_bytes += len(ok)
                _check_linked(self._results, RESULTS)
            if failed:
                _write_all(self._errors, failed)
                self.errors_bytes += len(failed)
                _check_linked(self._errors, ERRORS)
        except OSError as exc:
            raise RunDirError(
                f"{self.run_dir}: cannot write results ({exc.strerror or exc}); "
                "what was written stays valid, rerun to resume"
            ) from exc

    def sync(self) -> None:
        try:
            os.fsync(self._results)
            os.fsync(self._errors)
        except OSError as exc:
            raise RunDirError(f"{self.run_dir}: cannot sync results ({exc.strerror})") from exc

    def close(self) -> None:
        for fd in (self._results, self._errors):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> JsonlSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_linked(fd: int, name: str) -> None:
    if os.fstat(fd).st_nlink == 0:
        raise OSError(f"{name} was deleted while the run was writing it")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]
