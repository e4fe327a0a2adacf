"""What the CLI's commands do, once their options are parsed (kept out of cli.py so
``batchrun --help`` imports nothing heavy).

    >>> execute_run(cfg, api_key=None)        # doctest: +SKIP
    0
"""

from __future__ import annotations

import sys

import anyio
import click
import orjson

from batchrun.config import RunConfig
from batchrun.engine.runner import CompositeHooks, RunHooks, Runner
from batchrun.errors import ConfigError
from batchrun.redact import scrub_text


def run_hooks(cfg: RunConfig) -> RunHooks:
    """Everything the CLI adds around a run: cost and budget, progress display,
    results.parquet and the evaluation (before the final report, which lists the files)."""
    from batchrun.cost.budget import CostHooks
    from batchrun.jobs.outputs import DatasetOutputHooks
    from batchrun.report.progress import make_hooks

    return CompositeHooks(CostHooks(cfg), DatasetOutputHooks(cfg), make_hooks(cfg))


def execute_run(cfg: RunConfig, api_key: str | None) -> int:
    runner = Runner(cfg, api_key=api_key, handle_signals=True, hooks=run_hooks(cfg))
    result = anyio.run(runner.run)
    for note in result.notes:
        click.echo(scrub_text(f"batchrun: {note}"), err=True)
    return result.exit_code


def print_status(run_dir: str, as_json: bool) -> int:
    """Counts against the input, usage, cost; exit 0 when the run is complete."""
    from batchrun.report.text import status_report

    report = status_report(run_dir)
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        from batchrun.report.text import format_status

        click.echo(format_status(report))
    return 0 if report.get("complete") else 1


def estimate_and_print(cfg: RunConfig, as_json: bool = False) -> None:
    """Dry run: count tokens and price the job; nothing is sent."""
    from batchrun.cost.estimate import estimate, format_estimate, learn_from_run
    from batchrun.cost.pricing import PriceBook
    from batchrun.input.select import source_for

    book = PriceBook.load(cfg.prices_path, job_prices=cfg.job.get("prices"))
    source = source_for(cfg)
    source.scan()  # bad rows and duplicate ids are reported exactly as a run would
    learned = learn_from_run(cfg.out_dir) if cfg.out_dir else {}
    report = estimate(
        source.requests(), book, cfg.model, learned, learned_from=cfg.out_dir if learned else None
    )
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(format_estimate(report))


@click.command("estimate", context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("input_path", required=False, metavar="INPUT")
@click.option("-j", "--job", "job_path", help="TOML job file.")
@click.option(
    "-o",
    "--out",
    "out_dir",
    help="Run directory of an earlier run to learn typical output lengths from.",
)
@click.option("--model", help="Model for rows that name none.")
@click.option("--prices", "prices_path", help="TOML price file adding/overriding model prices.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def estimate_command(
    input_path: str | None, job_path: str | None, as_json: bool, **options: object
) -> None:
    """Count prompt tokens and price a job before sending anything."""
    from batchrun.cli import build_config

    options = {k: v for k, v in options.items() if v is not None}
    cfg = build_config(
        input_path,
        job_path,
        {"out_dir": options.pop("out_dir", None) or "", **options},
        need_out=False,
    )
    estimate_and_print(cfg, as_json)


@click.command("eval", context_settings={"help_option_names": ["-h", "--help"]})
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
    from batchrun.jobs.outputs import rescore

    evaluation = None
    if job_path:
        from batchrun.jobs.jobfile import load_job

        evaluation = load_job(job_path).eval
        if evaluation is None:
            raise ConfigError(f"{job_path}: has no [eval] section")
    if reference_column or compare or field or normalize is not None:
        if not reference_column and evaluation is None:
            evaluation = _recorded_eval(run_dir)
        evaluation = {
            **(evaluation or {}),
            **({"reference_column": reference_column} if reference_column else {}),
            **({"compare": compare} if compare else {}),
            **({"field": field} if field else {}),
            **({"normalize": normalize} if normalize is not None else {}),
        }
        evaluation.setdefault("compare", "json_field" if evaluation.get("field") else "exact")
        evaluation.setdefault("normalize", True)
        evaluation.setdefault("field", None)
        if not evaluation.get("reference_column"):
            raise ConfigError("--reference-column is needed (the run recorded no [eval])")
        if evaluation["compare"] == "json_field" and not evaluation.get("field"):
            raise ConfigError("--compare json_field needs --field")
    report = rescore(run_dir, evaluation)
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(format_eval(report))


def _recorded_eval(run_dir: str) -> dict[str, object] | None:
    import os

    try:
        with open(os.path.join(run_dir, "run.json"), "rb") as f:
            options = orjson.loads(f.read()).get("options") or {}
    except (OSError, orjson.JSONDecodeError):
        return None
    recorded = (options.get("job") or {}).get("eval")
    return dict(recorded) if recorded else None


__all__ = ["estimate_command", "eval_command", "execute_run", "print_status"]
