"""Disk trouble: an output directory that cannot be used, and a disk that fills up
mid-run. The run must stop with a clear message and a non-zero exit, never count a
torn line as done, and a rerun (once there is room) must finish with exactly one
line per id.

Disk-full is simulated two ways: by injecting ENOSPC into the sink's ``os.write``
after a byte budget (in-process, always runs), and -- when the test runs as root
and may ``unshare`` a mount namespace -- with a real 32 KiB tmpfs.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

import batchrun._engine.commit
import batchrun._engine.runinfo
import batchrun._engine.runner
import batchrun._output.sink
from batchrun._cli import cli
from tests.faultserver import FaultServer

pytest_plugins = ["tests.conftest_fault"]  # fault_server, shared_fault_server

BATCHRUN = f"{sys.executable} -m batchrun"


def write_requests(path: Path, n: int, prefix: str = "id") -> list[str]:
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    path.write_text(
        "".join(
            json.dumps(
                {
                    "custom_id": i,
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": i}],
                }
            )
            + "\n"
            for i in ids
        )
    )
    return ids


def run_cli(args: list[str]) -> Result:
    return CliRunner().invoke(cli, args, env={"BATCHRUN_DEBUG": None})


def lines_of(path: Path) -> tuple[list[dict[str, Any]], bytes]:
    """(complete lines, torn tail)."""
    data = path.read_bytes() if path.exists() else b""
    complete, _, tail = data.rpartition(b"\n")
    lines = [json.loads(x) for x in complete.split(b"\n") if x] if complete else []
    return lines, tail


class FullDisk:
    """Stands in for the ``os`` module inside batchrun._output.sink: ``write`` stores only
    ``budget`` more bytes (a short write first, as a real full disk does), then
    raises ENOSPC. Everything else is the real ``os``."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def write(self, fd: int, data: Any) -> int:
        if self.budget <= 0:
            self.refused += 1
            raise OSError(errno.ENOSPC, "No space left on device")
        chunk = bytes(data[: self.budget])
        written = os.write(fd, chunk)
        self.budget -= written
        return written


# -- a directory that cannot be used ----------------------------------------------------


def test_run_dir_below_a_regular_file(fault_server: FaultServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "r.jsonl", 2)
    blocker = tmp_path / "file.txt"
    blocker.write_text("I am a file")
    result = run_cli(
        [
            "run",
            str(tmp_path / "r.jsonl"),
            "-o",
            str(blocker / "run"),
            "--base-url",
            fault_server.base_url,
            "--auth",
            "none",
        ]
    )
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message == f"Error: {blocker / 'run'}: cannot create the run directory (Not a directory)"
    assert fault_server.requests == 0


def test_run_dir_is_a_regular_file(fault_server: FaultServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "r.jsonl", 2)
    blocker = tmp_path / "run"
    blocker.write_text("I am a file")
    result = run_cli(
        [
            "run",
            str(tmp_path / "r.jsonl"),
            "-o",
            str(blocker),
            "--base-url",
            fault_server.base_url,
            "--auth",
            "none",
        ]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert result.stderr.startswith(f"Error: {blocker}: ")
    assert result.stderr.strip().count("\n") == 0
    assert fault_server.requests == 0


@pytest.mark.skipif(
    os.geteuid() == 0,
    reason="root writes through chmod 0o500; the read-only "
    "case runs on a read-only tmpfs in test_real_full_tmpfs_* instead",
)
def test_run_dir_not_writable(fault_server: FaultServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "r.jsonl", 2)
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o500)
    try:
        result = run_cli(
            [
                "run",
                str(tmp_path / "r.jsonl"),
                "-o",
                str(out),
                "--base-url",
                fault_server.base_url,
                "--auth",
                "none",
            ]
        )
    finally:
        out.chmod(0o700)
    assert result.exit_code == 1
    assert result.stderr.strip() == f"Error: {out}: run directory is not writable"
    assert fault_server.requests == 0


def test_output_file_that_is_a_directory(fault_server: FaultServer, tmp_path: Path) -> None:
    write_requests(tmp_path / "r.jsonl", 2)
    (tmp_path / "run" / "results.jsonl").mkdir(parents=True)
    result = run_cli(
        [
            "run",
            str(tmp_path / "r.jsonl"),
            "-o",
            str(tmp_path / "run"),
            "--base-url",
            fault_server.base_url,
            "--auth",
            "none",
        ]
    )
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "results.jsonl" in result.stderr and result.stderr.strip().count("\n") == 0
    assert fault_server.requests == 0


# -- disk full while writing (injected) ----------------------------------------------


@pytest.mark.parametrize("target", ["results", "errors"])
@pytest.mark.parametrize("budget", [0, 1, 1000, 2500])
def test_disk_full_stops_cleanly_and_resumes(
    fault_server: FaultServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    budget: int,
) -> None:
    ids = write_requests(tmp_path / "r.jsonl", 40)
    if target == "errors":
        for i in ids:
            fault_server.script(i, "status:400", "status:400")  # the rerun fails too
    out = tmp_path / "run"
    args = [
        "run",
        str(tmp_path / "r.jsonl"),
        "-o",
        str(out),
        "--base-url",
        fault_server.base_url,
        "--auth",
        "none",
        "-c",
        "1",
        "-q",
    ]
    disk = FullDisk(budget)
    monkeypatch.setattr(batchrun._output.sink, "os", disk)
    result = run_cli(args)
    monkeypatch.undo()

    assert disk.refused >= 1, "the injected fault never fired"
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert "No space left on device" in result.stderr
    assert "rerun to resume" in result.stderr
    assert fault_server.requests < len(ids), "the run did not stop"

    written, tail = lines_of(out / f"{target}.jsonl")
    assert len(written) * 100 < budget + 100  # only what fit on the disk
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "disk_error"
    counted = summary["requests"]["succeeded"] + summary["requests"]["failed"]
    assert counted <= len(written), "a line that is not on disk was counted as done"
    if tail:  # a torn line is never counted: status reads the files without repairing
        status = run_cli(["status", str(out), "--json"])
        report = json.loads(status.stdout)
        assert report["requests"]["succeeded"] + report["requests"]["failed"] == len(written)
        assert (out / f"{target}.jsonl").read_bytes().endswith(tail)  # status changed nothing

    # room again: the rerun repairs the torn line and finishes every id exactly once
    again = run_cli(args)
    assert again.exit_code == (0 if target == "results" else 4), again.output
    if tail:
        assert "dropped a torn last line" in again.stderr
    final, final_tail = lines_of(out / f"{target}.jsonl")
    assert final_tail == b""
    assert Counter(r["custom_id"] for r in final) == Counter(ids)
    other = "errors" if target == "results" else "results"
    assert lines_of(out / f"{other}.jsonl") == ([], b"")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["requests"]["pending"] == 0
    assert summary["requests"]["succeeded" if target == "results" else "failed"] == len(ids)
    # ids whose lines were complete before the fault were not sent again
    assert fault_server.requests <= len(ids) + (len(ids) - len(written))


def _no_room_for(name: str) -> Any:
    real = batchrun._engine.commit.write_json_atomic

    def write(path: str, data: Any) -> None:
        if os.path.basename(path) == name:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)

    return write


def test_disk_full_while_writing_the_summary(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = write_requests(tmp_path / "r.jsonl", 4)
    out = tmp_path / "run"
    args = [
        "run",
        str(tmp_path / "r.jsonl"),
        "-o",
        str(out),
        "--base-url",
        fault_server.base_url,
        "--auth",
        "none",
        "-q",
    ]
    monkeypatch.setattr(batchrun._engine.commit, "write_json_atomic", _no_room_for("summary.json"))
    result = run_cli(args)
    monkeypatch.undo()
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    assert "summary.json" in result.stderr and "No space left on device" in result.stderr
    # every line is on disk; a rerun sends nothing and writes the summary
    again = run_cli(args)
    assert again.exit_code == 0
    assert fault_server.requests == len(ids)
    assert json.loads((out / "summary.json").read_text())["requests"]["succeeded"] == len(ids)


def test_disk_full_before_the_run_starts(
    fault_server: FaultServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_requests(tmp_path / "r.jsonl", 4)
    out = tmp_path / "run"
    monkeypatch.setattr(batchrun._engine.runinfo, "write_json_atomic", _no_room_for("run.json"))
    result = run_cli(
        [
            "run",
            str(tmp_path / "r.jsonl"),
            "-o",
            str(out),
            "--base-url",
            fault_server.base_url,
            "--auth",
            "none",
            "-q",
        ]
    )
    monkeypatch.undo()
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 1
    message = result.stderr.strip()
    assert message.startswith("Error: ") and "\n" not in message
    assert "run.json" in message and "No space left on device" in message
    assert fault_server.requests == 0


# -- a real full filesystem (root + unshare only) ------------------------------------


@dataclass
class TmpfsRun:
    ids: list[str]
    first_rc: int
    first_err: str
    first_dir: Path
    second_rc: int
    second_err: str
    second_dir: Path
    ro_rc: int
    ro_err: str
    ro_resume_rc: int
    ro_resume_err: str


def _can_unshare() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
        capture_output=True,
        timeout=10,
    )
    return probe.returncode == 0


@pytest.fixture(scope="module")
def tmpfs_run(
    shared_fault_server: FaultServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TmpfsRun]:
    """Run batchrun on a 32 KiB tmpfs until it is full, copy the run directory out,
    grow the tmpfs, rerun; and try a read-only tmpfs. One private mount namespace."""
    if not _can_unshare():
        pytest.skip("needs root and unshare -m to mount a tiny tmpfs")
    shared_fault_server.reset()
    base = tmp_path_factory.mktemp("tmpfs")
    ids = write_requests(base / "r.jsonl", 150)
    mnt, ro, keep = base / "mnt", base / "ro", base / "keep"
    for d in (mnt, ro, keep):
        d.mkdir()
    run = (
        f"{BATCHRUN} run {base / 'r.jsonl'} --base-url {shared_fault_server.base_url} "
        "--auth none -c 4 -q"
    )
    script = f"""
set -u
mount -t tmpfs -o size=32k tmpfs {mnt} || exit 99
{run} -o {mnt}/run 2> {keep}/err1; echo $? > {keep}/rc1
cp -r {mnt}/run {keep}/run1
mount -o remount,size=4m {mnt}
{run} -o {mnt}/run 2> {keep}/err2; echo $? > {keep}/rc2
cp -r {mnt}/run {keep}/run2
mount -t tmpfs -o ro,size=16k tmpfs {ro}
{run} -o {ro}/run 2> {keep}/err3; echo $? > {keep}/rc3
mount -o remount,rw {ro} && mkdir {ro}/run && mount -o remount,ro {ro}
{run} -o {ro}/run 2> {keep}/err4; echo $? > {keep}/rc4
"""
    proc = subprocess.run(
        ["unshare", "-m", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=50,
        cwd=Path(__file__).parent.parent,
    )
    if proc.returncode == 99:
        pytest.skip("mounting a tmpfs failed")

    def read(name: str) -> str:
        return (keep / name).read_text()

    yield TmpfsRun(
        ids,
        int(read("rc1")),
        read("err1"),
        keep / "run1",
        int(read("rc2")),
        read("err2"),
        keep / "run2",
        int(read("rc3")),
        read("err3"),
        int(read("rc4")),
        read("err4"),
    )


@pytest.mark.slow
def test_real_full_tmpfs_loses_nothing_and_resumes(tmpfs_run: TmpfsRun) -> None:
    assert tmpfs_run.first_rc != 0
    written, tail = lines_of(tmpfs_run.first_dir / "results.jsonl")
    assert len(written) < len(tmpfs_run.ids), "the disk never filled up"
    assert tmpfs_run.second_rc == 0, tmpfs_run.second_err
    final, final_tail = lines_of(tmpfs_run.second_dir / "results.jsonl")
    assert final_tail == b""
    assert Counter(r["custom_id"] for r in final) == Counter(tmpfs_run.ids)
    summary = json.loads((tmpfs_run.second_dir / "summary.json").read_text())
    assert summary["status"] == "complete"
    assert summary["requests"]["succeeded"] == len(tmpfs_run.ids)


@pytest.mark.slow
def test_real_full_tmpfs_stops_with_a_clear_message(tmpfs_run: TmpfsRun) -> None:
    assert tmpfs_run.first_rc == 1
    assert "Traceback" not in tmpfs_run.first_err, tmpfs_run.first_err[-2000:]
    assert "No space left on device" in tmpfs_run.first_err


@pytest.mark.slow
def test_read_only_filesystem(tmpfs_run: TmpfsRun) -> None:
    assert tmpfs_run.ro_rc == 1
    assert tmpfs_run.ro_err.strip().endswith(
        "/run: cannot create the run directory (Read-only file system)"
    )
    assert tmpfs_run.ro_err.strip().count("\n") == 0
    assert tmpfs_run.ro_resume_rc == 1
    assert tmpfs_run.ro_resume_err.strip().endswith("/run: run directory is not writable")


def test_removing_the_run_directory_mid_run_stops_sending_at_once(tmp_path: Path) -> None:
    """Issue 13, item 8: writes into deleted files succeed on Linux; 5,000 rows were
    sent into them. The first write into a deleted file stops the run."""
    import anyio
    import httpx

    from batchrun._engine.runner import Runner
    from batchrun._engine.stops import EXIT_ERROR
    from batchrun._settings import Settings
    from tests.conftest import FakeTime, completion

    inp = tmp_path / "requests.jsonl"
    write_requests(inp, 2000)
    run_dir = tmp_path / "run"
    sent = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        sent += 1
        if sent == 50:
            shutil.rmtree(run_dir)
        return httpx.Response(200, json=completion("ok"))

    cfg = Settings(input=str(inp), out_dir=str(run_dir), base_url="http://t/v1", concurrency=8)
    fake = FakeTime()
    runner = Runner(cfg, transport=httpx.MockTransport(handler), clock=fake.clock, sleep=fake.sleep)
    result = anyio.run(runner.run)
    assert result.exit_code == EXIT_ERROR
    assert result.status == "disk_error"
    assert any("was deleted while the run was writing it" in n for n in result.notes)
    # one group commit's worth at most after the deletion, not the other 1,950 rows
    assert sent < 50 + 300, sent
