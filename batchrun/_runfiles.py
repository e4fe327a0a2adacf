"""The run directory as a place only one process writes: its lock and its leftovers.

A run directory has exactly one writer. Two processes appending to the same
results.jsonl would both send every pending row (paying twice) and both count
what they wrote (summary.json under-reports). So before a run reads the journal
it takes an OS lock (`fcntl.flock`, exclusive, non-blocking) on ``.lock`` in the
directory and writes its pid there; a second process is refused at once, naming
that pid. The kernel drops the lock when the process dies however it dies
(``kill -9`` included), so a stale lock never blocks a rerun, and `holder` tells
a live run ("running, pid N") from one that stopped without a word.

    >>> with RunDirLock("runs/a"):     # doctest: +SKIP
    ...     ...                         # read the journal, send, write
    >>> holder("runs/a") is None        # doctest: +SKIP
    True
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import threading
from collections.abc import Iterator

from batchrun.errors import BatchrunError, RunDirError

LOCK = ".lock"
TMP_PREFIX = ".tmp-"
"""Prefix of the temporary files `batchrun._output.summary.atomic_file` renames into place."""
RUN_INFO = "run.json"
"""Written once the checks before sending have passed: a directory without it never sent."""
INVALID = "invalid.jsonl"
"""The rows --skip-invalid set aside."""
NEW_FILE = 0o666
"""The mode every file of a run directory is created with, less the umask (as open()
does): one rule for results.jsonl, summary.json, results.parquet, the lock, batch/..."""

_umask_lock = threading.Lock()


def file_mode() -> int:
    """The mode a new file gets here: 0o666 less the process's umask (0o644 under 022,
    0o600 under 077). For files made another way first (a private temporary file
    renamed into place), which then get this one with chmod."""
    try:
        with open("/proc/self/status", "rb") as f:  # Linux: read without changing it
            for line in f:
                if line.startswith(b"Umask:"):
                    return NEW_FILE & ~int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _umask_lock:  # elsewhere the umask is only read by setting it (and back)
        mask = os.umask(0o077)
        os.umask(mask)
    return NEW_FILE & ~mask


class RunDirLock:
    """Exclusive, non-blocking lock on a run directory, held for a whole run."""

    def __init__(self, run_dir: str) -> None:
        self.run_dir = run_dir
        self.path = os.path.join(run_dir, LOCK)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, NEW_FILE)
        except OSError as exc:
            raise RunDirError(f"{self.path}: cannot create the lock file ({exc.strerror})") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            who = f"pid {pid}" if pid else "another process"
            raise RunDirError(
                f"{self.run_dir} is in use by another batchrun run ({who}); "
                "wait for it to finish or stop it, or use another -o directory"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise RunDirError(f"{self.path}: cannot lock ({exc.strerror})") from exc
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        # the file stays: unlinking a lock file lets a third process lock a new inode
        # while a second still waits on the old one
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> RunDirLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def holder(run_dir: str) -> int | None:
    """The pid of the process running in ``run_dir`` now, or None when none is.

    Reads without disturbing a live run: a shared lock is taken (and dropped at
    once) only when nobody holds the exclusive one.
    """
    path = os.path.join(run_dir, LOCK)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return _read_pid(fd) or -1
    except OSError:
        return None
    finally:
        os.close(fd)
    return None


def remove_stray_temp_files(run_dir: str) -> list[str]:
    """Delete temp files a killed process left behind (call with the lock held)."""
    removed: list[str] = []
    try:
        names = os.listdir(run_dir)
    except OSError:
        return removed
    for name in names:
        if name.startswith(TMP_PREFIX):
            try:
                os.unlink(os.path.join(run_dir, name))
                removed.append(name)
            except OSError:
                pass
    return removed


def create_run_dir(run_dir: str) -> bool:
    """Make the run directory if needed; True when this call created it."""
    existed = os.path.isdir(run_dir)
    try:
        os.makedirs(run_dir, exist_ok=True)
    except OSError as exc:
        raise RunDirError(f"{run_dir}: cannot create the run directory ({exc.strerror})") from exc
    if not os.access(run_dir, os.W_OK):
        raise RunDirError(f"{run_dir}: run directory is not writable")
    return not existed


def remove_unused_run_dir(run_dir: str, *, keep_invalid: bool = False) -> None:
    """Undo `create_run_dir` when the run was refused before it sent anything
    (bad input, bad options): a mistake leaves no empty directory behind. With
    ``keep_invalid``, a directory holding the rows --skip-invalid set aside stays."""
    if keep_invalid and _has_content(os.path.join(run_dir, INVALID)):
        return
    shutil.rmtree(run_dir, ignore_errors=True)


@contextlib.contextmanager
def removed_if_refused(run_dir: str, created: bool) -> Iterator[None]:
    """The checks before anything is sent: when they fail, a directory this process
    created (``created``) is removed again, keeping one that holds the rows
    --skip-invalid set aside when the input was the problem (a `BatchrunError`)."""
    try:
        yield
    except Exception as exc:
        if created:
            remove_unused_run_dir(run_dir, keep_invalid=isinstance(exc, BatchrunError))
        raise


@contextlib.contextmanager
def undone_unless_started(
    run_dir: str, *, made_dir: str | None = None, made_file: str | None = None
) -> Iterator[None]:
    """Around a whole run for which the caller made something before the run took its
    directory (rows held in memory written there: ``made_file``, and ``made_dir``, the
    run directory or the first of its parents that did not exist). When the block
    fails (a refusal before sending, a missing key, a Ctrl-C while checking) and the
    run never started (no run.json: nothing was sent), what was made is removed again,
    as `removed_if_refused` does for a directory the run made itself; the rows
    --skip-invalid set aside stay when the input was the problem. Done under the
    directory's lock, so a run another process holds there now is never touched."""
    try:
        yield
    except BaseException as exc:
        if made_dir is not None or made_file is not None:
            _undo(run_dir, made_dir, made_file, keep_invalid=isinstance(exc, BatchrunError))
        raise


def _undo(run_dir: str, made_dir: str | None, made_file: str | None, *, keep_invalid: bool) -> None:
    lock = RunDirLock(run_dir)
    try:
        lock.acquire()
    except RunDirError:
        return  # gone already, or in use by another run: theirs now
    try:
        if os.path.exists(os.path.join(run_dir, RUN_INFO)):
            return  # the run started: everything here belongs to it
        keep = keep_invalid and _has_content(os.path.join(run_dir, INVALID))
        if made_dir is None or keep:
            if made_file is not None:
                with contextlib.suppress(OSError):
                    os.unlink(made_file)
            return
        shutil.rmtree(run_dir, ignore_errors=True)
    finally:
        lock.release()
    # the parents made for it, while empty (another run may have made its own there)
    remove_empty_dirs(os.path.dirname(os.path.abspath(run_dir)), os.path.abspath(made_dir))


def remove_empty_dirs(path: str, top: str) -> None:
    """Remove ``path`` and its parents up to ``top`` (absolute) while they are empty."""
    current = os.path.abspath(path)
    while current == top or current.startswith(top + os.sep):
        try:
            os.rmdir(current)
        except OSError:
            return
        current = os.path.dirname(current)


@contextlib.contextmanager
def taken(run_dir: str) -> Iterator[tuple[RunDirLock, bool]]:
    """The run directory, made if needed and locked for this process, for the block:
    (its lock, whether this call created it). Refused (another process holds it): a
    directory this call made is removed again and RunDirError raised.

        with taken("runs/a") as (lock, created):
            ...
    """
    created = create_run_dir(run_dir)
    lock = RunDirLock(run_dir)
    try:
        lock.acquire()
    except RunDirError:
        if created:
            remove_unused_run_dir(run_dir)
        raise
    try:
        yield lock, created
    finally:
        lock.release()


def _has_content(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except OSError:
        return False


__all__ = [
    "LOCK",
    "NEW_FILE",
    "RunDirLock",
    "create_run_dir",
    "file_mode",
    "holder",
    "remove_stray_temp_files",
    "remove_unused_run_dir",
    "taken",
    "undone_unless_started",
]
