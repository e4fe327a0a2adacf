"""What the user sees while a run goes and when it ends (hooks into the Runner).

    >>> hooks = make_hooks(cfg)     # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

import click

from batchrun.config import RunConfig
from batchrun.runner import Runner, RunHooks


class ConsoleHooks(RunHooks):
    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg

    def on_stop(self, runner: Runner, reason: str) -> None:
        if reason in ("SIGINT", "SIGTERM"):
            click.echo(
                f"batchrun: {reason}: no new requests; waiting up to "
                f"{self.cfg.drain_timeout:g} s for those in flight (Ctrl-C again to quit now)",
                err=True,
            )

    def on_end(self, runner: Runner, summary: dict[str, Any]) -> None:
        if self.cfg.quiet:
            return
        req = summary["requests"]
        usage = summary["usage"]
        click.echo(
            f"batchrun: {summary['status']}: {req['succeeded']} succeeded, {req['failed']} failed, "
            f"{req['pending']} pending of {req['total']}; "
            f"{usage['total_tokens']} tokens; results in {self.cfg.out_dir}",
            err=True,
        )
        if summary["status"] not in ("complete",):
            if req["pending"]:
                click.echo("batchrun: rerun the same command to resume", err=True)


def make_hooks(cfg: RunConfig) -> RunHooks:
    return ConsoleHooks(cfg)
