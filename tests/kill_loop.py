"""One kill -9 loop for the tests that need one: start the command, wait until it has
written a new result line, let it run a random moment more, SIGKILL it, check that no
row was written twice; then one last run to the end."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from pathlib import Path

from tests.test_kill import _complete_ids, _size, _stop


def kill_loop(
    cmd: list[str],
    results: Path,
    log_path: Path,
    *,
    kills: int,
    rng: random.Random,
    first_line_s: float = 20.0,
    finish_s: float = 60.0,
) -> list[int]:
    """Run ``cmd`` ``kills`` times, each SIGKILLed after it wrote a line, then once to
    the end (exit 0). Returns the complete lines after each kill."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("OPENAI_API_KEY", None)
    log = open(log_path, "wb")  # noqa: SIM115 - closed in finally
    proc: subprocess.Popen[bytes] | None = None
    progress: list[int] = []
    try:
        for _ in range(kills):
            before = _size(results)
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
            deadline = time.monotonic() + first_line_s
            while _size(results) <= before and proc.poll() is None:
                assert time.monotonic() < deadline, f"the run wrote nothing in {first_line_s} s"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.05, 0.4))
            assert proc.poll() is None, "the run finished before its kill; make it longer"
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=10) == -signal.SIGKILL
            ids = _complete_ids(results)
            assert len(ids) == len(set(ids)), "a row was written twice"
            progress.append(len(ids))
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, env=env)
        assert proc.wait(timeout=finish_s) == 0, log_path.read_text()[-2000:]
    finally:
        if proc is not None:
            _stop(proc)
        log.close()
    return progress
