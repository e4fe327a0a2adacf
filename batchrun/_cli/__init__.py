"""The ``batchrun`` command line: parse arguments, call the library (`batchrun._api`).

Options are made from the settings' declarations (`batchrun._cli.options`); the rules
of a run (key lookup, the simulator endpoint, merging a job file with options, the
hooks) live in the library, which the Python API calls the same way.

Every error a user can cause becomes one line on stderr and a non-zero exit;
``BATCHRUN_DEBUG=1`` shows the traceback instead.

    $ batchrun run requests.jsonl -o runs/first --base-url sim
    $ batchrun status runs/first --json
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from batchrun._cli.options import command_settings, setting_options
from batchrun._version import __version__
from batchrun.errors import BatchrunError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class _Group(click.Group):
    """Turns BatchrunError into a one-line message (a traceback with BATCHRUN_DEBUG=1).

    Heavy subcommands are imported only when used, so ``batchrun --help`` starts fast.
    """

    lazy = {
        "sim": "batchrun.sim.cli:sim_command",
        "estimate": "batchrun._cli.commands:estimate_command",
        "cancel": "batchrun._cli.commands:cancel_command",
        "eval": "batchrun._cli.commands:eval_command",
        "prices": "batchrun._cli.commands:prices_command",
        "report": "batchrun._report.html.cli:report_command",
        "review": "batchrun._cli.commands:review_command",
        "serve": "batchrun._report.html.cli:serve_command",
    }
    lazy_help = {
        "sim": "Serve the built-in OpenAI-compatible simulator on 127.0.0.1.",
        "estimate": "Count prompt tokens and price a job before sending anything.",
        "cancel": "Cancel a run's batches at the provider (rows they finished are kept).",
        "eval": "Score a run again, sending nothing.",
        "prices": "What a model costs and where the price comes from (--example: a price file).",
        "report": "Report on a run: text, or one HTML file with charts (--html).",
        "review": "Send a run's doubtful rows to people; read their labels back as gold.",
        "serve": "Serve a live report page for a run directory.",
    }

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """Like click's, but lazy commands show their help without being imported."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy:
                rows.append((name, self.lazy_help[name]))
                continue
            command = super().get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 20)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            import importlib

            module, _, attr = self.lazy[name].partition(":")
            command: click.Command = getattr(importlib.import_module(module), attr)
            return command
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BatchrunError as exc:
            if os.environ.get("BATCHRUN_DEBUG") == "1":
                raise
            from batchrun._redact import scrub_text

            raise click.ClickException(scrub_text(str(exc))) from exc


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Run large batches of OpenAI-compatible chat completions, resumably."""


@cli.command(
    "run",
    context_settings=CONTEXT,
    short_help="Send every request (or dataset row through --prompt) and record the answers.",
)
@click.argument("input_path", required=False, metavar="INPUT")
@click.option(
    "-j", "--job", "job_path", metavar="FILE", help="TOML job file (options override it)."
)
@setting_options
@click.option("--dry-run", is_flag=True, help="Estimate tokens and cost; send nothing.")
def run_command(
    input_path: str | None, job_path: str | None, dry_run: bool, **options: Any
) -> None:
    """Send every request in INPUT (JSONL, Parquet, CSV or TSV), or with --prompt every
    row of a dataset through the template, and record the results.

    Rerunning the same command resumes: finished rows are not sent again.
    """
    settings = command_settings(input_path, job_path, options)
    if dry_run:
        from batchrun._cli.commands import print_estimate

        print_estimate(settings)
        return
    if not settings.out_dir:
        raise click.UsageError("no run directory given: -o DIR (or [output] dir in the job file)")
    from batchrun._cli.commands import execute_run

    sys.exit(execute_run(settings))


@cli.command(
    "status",
    context_settings=CONTEXT,
    short_help="Show how far a run got: done, failed, pending, usage, cost.",
)
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(run_dir: str, as_json: bool) -> None:
    """Show how far a run got: done / failed / pending, usage, cost."""
    from batchrun._cli.commands import print_status

    sys.exit(print_status(run_dir, as_json))


def main() -> None:
    try:
        cli(prog_name="batchrun")
    except KeyboardInterrupt:  # a Ctrl-C before a run could set up its own handling
        sys.exit(130)
