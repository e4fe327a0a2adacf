"""What the CLI's commands do once their arguments are parsed: call the library and
print. Kept out of `batchrun.cli` so ``batchrun --help`` imports nothing heavy.

    >>> execute_run(settings)        # doctest: +SKIP
    0
"""

from __future__ import annotations

import sys
from typing import Any

import click
import orjson

from batchrun.cli.options import given_settings, setting_options
from batchrun.errors import ConfigError
from batchrun.redact import scrub_text
from batchrun.settings import Evaluation, Settings

CONTEXT = {"help_option_names": ["-h", "--help"]}


def execute_run(settings: Settings) -> int:
    """Run in the foreground: signals drain the run, notes go to stderr."""
    import anyio

    from batchrun._api import api_key, make_runner, surroundings

    with surroundings(settings) as live:
        runner = make_runner(live, api_key(live), handle_signals=True)
        result = anyio.run(runner.run)
    for note in result.notes:
        click.echo(scrub_text(f"batchrun: {note}"), err=True)
    return result.exit_code


def print_status(run_dir: str, as_json: bool) -> int:
    """Counts against the input, usage, cost; exit 0 when the run is complete."""
    from batchrun.report.text import format_status, status_report

    report = status_report(run_dir)
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(format_status(report))
    return 0 if report.get("complete") else 1


def print_estimate(settings: Settings, as_json: bool = False) -> None:
    """Dry run: count tokens and price the job; nothing is sent."""
    from batchrun.cost.estimate import estimate_settings, format_estimate

    report = estimate_settings(settings)
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(format_estimate(report))


def _estimate_options(command: Any) -> Any:
    """The run's options that shape what is sent (a dry run prices just that)."""
    for name in ("prices", "model", "out_dir"):
        spec = Settings.spec(name)
        help_text = spec.help
        if name == "out_dir":
            help_text = "Run directory of an earlier run to learn typical output lengths from."
        command = click.option(*spec.flags, name, help=help_text)(command)
    return command


@click.command("estimate", context_settings=CONTEXT)
@click.argument("input_path", required=False, metavar="INPUT")
@click.option("-j", "--job", "job_path", help="TOML job file.")
@_estimate_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def estimate_command(
    input_path: str | None, job_path: str | None, as_json: bool, **options: Any
) -> None:
    """Count prompt tokens and price a job before sending anything."""
    from batchrun._api import settings_for

    settings = settings_for(input_path, job=job_path, given=given_settings(options))
    print_estimate(settings, as_json)


@click.command("cancel", context_settings=CONTEXT)
@click.argument("run_dir")
def cancel_command(run_dir: str) -> None:
    """Cancel the batches a --batch-api run left at the provider.

    Waits until they are cancelled and keeps the rows they finished; the rest stay
    pending (rerun the run's command to send them). The key comes from the variable
    the run was started with.
    """
    from batchrun._api import cancel_run

    result = cancel_run(run_dir)
    for note in result.notes:
        click.echo(scrub_text(f"batchrun: {note}"), err=True)
    sys.exit(result.exit_code)


@click.command("eval", context_settings=CONTEXT)
@click.argument("run_dir")
@click.option("-j", "--job", "job_path", help="Take the [eval] section from this job file.")
@click.option("--reference-column", help="Input column holding the right answer.")
@click.option(
    "--compare", type=click.Choice(["exact", "json_field"]), help="What to compare with it."
)
@click.option("--field", help="The JSON field compared (--compare json_field).")
@click.option("--normalize/--no-normalize", default=None, help="Ignore case, spaces, end dots.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def eval_command(
    run_dir: str,
    job_path: str | None,
    reference_column: str | None,
    compare: str | None,
    field: str | None,
    normalize: bool | None,
    as_json: bool,
) -> None:
    """Score a run again, sending nothing (the recorded [eval], or another one)."""
    from batchrun.jobs.evaluate import format_eval
    from batchrun.jobs.outputs import recorded_evaluation, rescore

    evaluation: Evaluation | None = None
    if job_path:
        from batchrun.jobs.jobfile import load_job

        evaluation = load_job(job_path).values.get("eval")
        if evaluation is None:
            raise ConfigError(f"{job_path}: has no [eval] section")
    if reference_column or compare or field or normalize is not None:
        base = evaluation or recorded_evaluation(run_dir)
        reference = reference_column or (base.reference_column if base else None)
        if not reference:
            raise ConfigError("--reference-column is needed (the run recorded no [eval])")
        chosen_field = field or (base.field if base and not compare else None)
        kind = compare or ("json_field" if chosen_field else "exact")
        if kind == "json_field" and not chosen_field:
            raise ConfigError("--compare json_field needs --field")
        keep = normalize if normalize is not None else (base.normalize if base else True)
        chosen_field = chosen_field if kind == "json_field" else None
        evaluation = Evaluation(reference, kind, chosen_field, keep)
    report = rescore(run_dir, evaluation)
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(format_eval(report))


__all__ = [
    "cancel_command",
    "estimate_command",
    "eval_command",
    "execute_run",
    "print_estimate",
    "print_status",
    "setting_options",
]
