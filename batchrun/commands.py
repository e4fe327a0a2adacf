"""What the CLI's commands do, once their options are parsed (kept out of cli.py so
``batchrun --help`` imports nothing heavy).

    >>> execute_run(cfg, api_key=None)        # doctest: +SKIP
    0
"""

from __future__ import annotations

import os
import sys

import anyio
import click
import orjson

from batchrun.config import RunConfig
from batchrun.errors import RunDirError
from batchrun.journal import SUMMARY, read_journal
from batchrun.runner import Runner


def execute_run(cfg: RunConfig, api_key: str | None) -> int:
    from batchrun.progress import make_hooks

    hooks = make_hooks(cfg)
    runner = Runner(cfg, api_key=api_key, handle_signals=True, hooks=hooks)
    result = anyio.run(runner.run)
    for note in result.notes:
        click.echo(f"batchrun: {note}", err=True)
    return result.exit_code


def load_summary(run_dir: str) -> dict:
    path = os.path.join(run_dir, SUMMARY)
    try:
        with open(path, "rb") as f:
            data: dict = orjson.loads(f.read())
            return data
    except FileNotFoundError as exc:
        raise RunDirError(f"{run_dir}: no summary.json (is this a batchrun run directory?)") from exc
    except (OSError, orjson.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc})") from exc


def print_status(run_dir: str, as_json: bool) -> int:
    """Counts against the input, usage, cost; exit 0 when the run is complete."""
    from batchrun.report import status_report

    report = status_report(run_dir)
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from batchrun.report import format_status

        click.echo(format_status(report))
    return 0 if report.get("complete") else 1


def estimate_and_print(cfg: RunConfig) -> None:
    raise NotImplementedError


__all__ = ["execute_run", "load_summary", "print_status", "read_journal"]
