"""What the CLI's commands do once their arguments are parsed: call the library and
print. Kept out of `batchrun._cli` so ``batchrun --help`` imports nothing heavy.

    >>> execute_run(settings)        # doctest: +SKIP
    0
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import click
import orjson

from batchrun._checks import COMPARES
from batchrun._cli.options import command_settings, given_settings, setting_options
from batchrun._jobs.review import FORMATS as REVIEW_FORMATS
from batchrun._redact import scrub_text
from batchrun._settings import Settings
from batchrun._values import Evaluation
from batchrun.errors import ConfigError

CONTEXT = {"help_option_names": ["-h", "--help"]}


def execute_run(settings: Settings) -> int:
    """Run in the foreground: signals drain the run, notes go to stderr."""
    import anyio

    from batchrun._api import api_key, make_runner, surroundings

    with surroundings(settings) as live:
        runner = make_runner(live, api_key(live), handle_signals=True)
        result = anyio.run(runner.run)
    # the report has printed why the run stopped already (unless --quiet)
    shown = None if live.quiet else result.summary.get("stop_note")
    for note in result.notes:
        if note != shown:
            click.echo(scrub_text(f"batchrun: {note}"), err=True)
    return result.exit_code


def print_status(run_dir: str, as_json: bool) -> int:
    """Counts against the input, usage, cost; exit 0 when the run is complete."""
    from batchrun._report.text import format_status, status_report

    report = status_report(run_dir)
    if as_json:
        sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(format_status(report))
    return 0 if report.get("complete") else 1


def print_estimate(settings: Settings, as_json: bool = False) -> None:
    """Dry run: count tokens and price the job; nothing is sent."""
    from batchrun._cost.estimate import estimate_settings, format_estimate

    report = estimate_settings(settings)
    if as_json:
        sys.stdout.write(orjson.dumps(report.to_dict(), option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        click.echo(format_estimate(report))


ESTIMATE_SETTINGS = (
    "prices",
    "base_url",
    "endpoints",
    "rpm",
    "tpm",
    "model",
    "out_dir",
    "limit",
    "sample",
    "seed",
    "dedupe",
    "cache_policy",
    "context_window",
    "skip_invalid",
)


def _estimate_options(command: Any) -> Any:
    """The run's options that shape what is sent (every setting of the resume
    fingerprint, and `ESTIMATE_SETTINGS`): a dry run prices just that."""
    from batchrun._cli.options import setting_options

    specs = []
    for name, spec in Settings.specs():
        if not (spec.fingerprint or name in ESTIMATE_SETTINGS):
            continue
        if name == "out_dir":
            spec = replace(
                spec, help="Run directory of an earlier run to learn typical output lengths from."
            )
        specs.append((name, spec))
    return setting_options(command, specs)


def _price_option(command: Any) -> Any:
    from batchrun._cli.options import setting_option

    return setting_option("prices", Settings.spec("prices"))(command)


@click.command("estimate", context_settings=CONTEXT)
@click.argument("input_path", required=False, metavar="INPUT")
@click.option("-j", "--job", "job_path", metavar="FILE", help="TOML job file.")
@_estimate_options
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def estimate_command(
    input_path: str | None, job_path: str | None, as_json: bool, **options: Any
) -> None:
    """Count prompt tokens and price a job before sending anything."""
    settings = command_settings(input_path, job_path, options)
    print_estimate(settings, as_json)


@click.command("prices", context_settings=CONTEXT)
@click.argument("models", nargs=-1, metavar="[MODEL]...")
@click.option(
    "--example", is_flag=True, help="Print a commented example price file, to start one from."
)
@click.option(
    "-j", "--job", "job_path", metavar="FILE", help="Use the prices of this job file ([prices])."
)
@_price_option
def prices_command(
    models: tuple[str, ...], example: bool, job_path: str | None, **options: Any
) -> None:
    """What batchrun charges for each MODEL (USD per million tokens) and where that
    price comes from: --prices FILE or the job's [prices] first, then genai-prices.

        batchrun prices --example > prices.toml
        batchrun prices gpt-4o-mini my-model --prices prices.toml
    """
    from batchrun._cost.pricefile import example_price_file
    from batchrun._cost.prices import PriceBook
    from batchrun._report.tables import format_price_table

    if example:
        click.echo(example_price_file(), nl=False)
        return
    if not models:
        raise click.UsageError("name a MODEL (or --example for a price file to start from)")
    source = given_settings(options).get("prices")
    if source is None and job_path:
        from batchrun._jobs.jobfile import load_job

        source = load_job(job_path).values.get("prices")
    book = PriceBook.load(source)
    click.echo(format_price_table([(model, book.price_for(model)) for model in models]))


@click.command("cancel", context_settings=CONTEXT)
@click.argument("run_dir")
def cancel_command(run_dir: str) -> None:
    """Cancel the batches a --batch-api run left at the provider.

    Waits until they are cancelled and keeps the rows they finished; the rest stay
    pending (rerun the run's command to send them). Says what it cancelled, kept and
    left pending in a few lines (`batchrun status RUN_DIR` shows the whole run). The
    key comes from the variable the run was started with.
    """
    from batchrun._api import cancel_run
    from batchrun._batch.state import iter_open_batches

    running = sum(1 for _, batch_id in iter_open_batches(run_dir) if batch_id)
    if running:
        click.echo(
            f"batchrun: cancelling {running} batch{'es' if running > 1 else ''} of {run_dir} "
            "at the provider and waiting for them to end (a provider may take minutes)",
            err=True,
        )
    result = cancel_run(run_dir)
    for note in result.notes:
        click.echo(scrub_text(f"batchrun: {note}"), err=True)
    sys.exit(result.exit_code)


@click.command("eval", context_settings=CONTEXT)
@click.argument("run_dir")
@click.option(
    "-j", "--job", "job_path", metavar="FILE", help="Take the [eval] section from this job file."
)
@click.option("--reference-column", metavar="COLUMN", help="Input column holding the right answer.")
@click.option("--compare", type=click.Choice(COMPARES), help="What to compare with it.")
@click.option("--field", metavar="FIELD", help="The JSON field compared (json_field, number).")
@click.option(
    "--tolerance", type=float, metavar="FLOAT", help="compare number: correct within this much."
)
@click.option("--normalize/--no-normalize", default=None, help="Ignore case, spaces, end dots.")
@click.option(
    "--variant",
    "variants",
    multiple=True,
    metavar="NAME",
    help="Compare only these variants (repeatable).",
)
@click.option(
    "--suggest-threshold",
    is_flag=True,
    help="Suggest the lowest confidence threshold whose rows meet --target-accuracy on "
    "the labelled rows, with its bootstrap interval (runs with a confidence).",
)
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1, min_open=True),
    help="The accuracy the accepted rows must reach [default: 0.95]; implies --suggest-threshold.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def eval_command(
    run_dir: str,
    job_path: str | None,
    reference_column: str | None,
    compare: str | None,
    field: str | None,
    tolerance: float | None,
    normalize: bool | None,
    variants: tuple[str, ...],
    suggest_threshold: bool,
    target_accuracy: float | None,
    as_json: bool,
) -> None:
    """Score a run again, sending nothing (the recorded [eval], or another one; all
    variants, or some). Labels imported with `batchrun review --import` are the
    reference of their rows."""
    from batchrun._jobs.evaluate import format_eval
    from batchrun._jobs.outputs import evaluation_from, recorded_evaluation, rescore

    evaluation: Evaluation | None = None
    if job_path:
        from batchrun._jobs.jobfile import load_job

        evaluation = load_job(job_path).values.get("eval")
        if evaluation is None:
            raise ConfigError(f"{job_path}: has no [eval] section")
    changes = (reference_column, compare, field, tolerance, normalize)
    if any(v is not None for v in changes):
        evaluation = evaluation_from(
            evaluation or recorded_evaluation(run_dir),
            reference_column=reference_column,
            compare=compare,
            field=field,
            normalize=normalize,
            tolerance=tolerance,
        )
    if suggest_threshold and target_accuracy is None:
        target_accuracy = DEFAULT_TARGET_ACCURACY
    report = rescore(run_dir, evaluation, variants=variants, target_accuracy=target_accuracy)
    if target_accuracy is not None:
        _check_thresholds(run_dir, report)
    if as_json:
        # without variants, the evaluation itself (as summary.json's "eval")
        shown = report if report.get("variants") else report["eval"]
        sys.stdout.write(orjson.dumps(shown, option=orjson.OPT_INDENT_2).decode() + "\n")
    elif report.get("variants"):
        from batchrun._jobs.compare import format_comparison

        click.echo(format_comparison(report["variants"], report.get("comparison") or {}))
        if target_accuracy is not None:
            from batchrun._jobs.calibration import format_threshold

            by_variant = (report.get("eval") or {}).get("variants") or {}
            for name, one in by_variant.items():
                found = (one.get("calibration") or {}).get("threshold")
                if found:
                    click.echo(f"{name}: {format_threshold(found)}")
    else:
        click.echo(format_eval(report["eval"]))


DEFAULT_TARGET_ACCURACY = 0.95


@click.command("review", context_settings=CONTEXT)
@click.argument("run_dir")
@click.option(
    "--below",
    type=click.FloatRange(0, 1),
    help="Queue the answers whose confidence is below this (unusable answers always).",
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many rows.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(REVIEW_FORMATS),
    default="jsonl",
    show_default=True,
    help="Label Studio tasks, Argilla records, or plain JSONL.",
)
@click.option("-o", "--out", "out", metavar="FILE", help="Write the queue here [default: stdout].")
@click.option(
    "--text-column",
    metavar="COLUMN",
    help="The input column people read [default: text, else the first text column].",
)
@click.option(
    "--import",
    "import_path",
    metavar="FILE",
    help="Read people's labels back instead (a Label Studio or Argilla export, or JSONL "
    "of custom_id and label): they become the reference of `batchrun eval`.",
)
def review_command(
    run_dir: str,
    below: float | None,
    limit: int | None,
    fmt: str,
    out: str | None,
    text_column: str | None,
    import_path: str | None,
) -> None:
    """Write the doubtful rows of RUN_DIR (least confident first, with their inputs, the
    model's label and confidence) for people to label, or with --import read their
    labels back into RUN_DIR/gold.jsonl."""
    from batchrun._jobs import review

    if import_path is not None:
        found = review.import_labels(run_dir, import_path)
        skipped = ", ".join(f"{n} {why}" for why, n in sorted(found.skipped.items()))
        click.echo(
            f"batchrun: {found.imported} labels imported from {import_path} ({found.format})"
            + (f"; {found.changed} changed an earlier label" if found.changed else "")
            + (f"; left out: {skipped}" if skipped else "")
            + f". `batchrun eval {run_dir}` scores against them.",
            err=True,
        )
        return
    report, data = review.write_review(
        run_dir, out, below=below, limit=limit, format=fmt, text_column=text_column
    )
    if out is None:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    for note in report.notes:
        click.echo(f"batchrun: {note}", err=True)
    where = report.path or "stdout"
    click.echo(
        f"batchrun: {report.rows} of {report.doubtful} doubtful rows ({report.answered} "
        f"answered) written to {where} as {fmt}",
        err=True,
    )
    if report.config_path:
        click.echo(
            f"batchrun: Label Studio labelling config in {report.config_path} (control "
            f"{report.question!r} on text {report.text_column!r})",
            err=True,
        )


def _check_thresholds(run_dir: str, report: dict[str, Any]) -> None:
    """A threshold needs confidences: say so rather than print nothing."""
    flat = report.get("eval") or {}
    evals = [flat, *(flat.get("variants") or {}).values()]
    if not any(isinstance(e.get("calibration"), dict) for e in evals):
        raise ConfigError(
            f"{run_dir}: no labelled answer has a confidence to set a threshold on "
            "(run with --confidence logprobs|agreement|self, and an [eval] reference or "
            "imported labels)"
        )


__all__ = [
    "cancel_command",
    "estimate_command",
    "eval_command",
    "execute_run",
    "print_estimate",
    "print_status",
    "prices_command",
    "review_command",
    "setting_options",
]
