"""The ``batchrun`` command line: parse, build a frozen RunConfig, ``anyio.run``.

Every error a user can cause becomes one line on stderr and a non-zero exit;
``BATCHRUN_DEBUG=1`` shows the traceback instead.

    $ batchrun run requests.jsonl -o runs/first --base-url sim
    $ batchrun status runs/first --json
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import Any

import click

from batchrun import __version__
from batchrun.config import DEFAULT_BASE_URL, RunConfig
from batchrun.errors import BatchrunError, ConfigError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")


class _Group(click.Group):
    """Turns BatchrunError into a one-line message (a traceback with BATCHRUN_DEBUG=1).

    Heavy subcommands are imported only when used, so ``batchrun --help`` starts fast.
    """

    lazy = {
        "sim": "batchrun.sim.cli:sim_command",
        "estimate": "batchrun.cli.commands:estimate_command",
        "eval": "batchrun.cli.commands:eval_command",
    }
    lazy_help = {
        "sim": "Serve the built-in OpenAI-compatible simulator on 127.0.0.1.",
        "estimate": "Count prompt tokens and price a job before sending anything.",
        "eval": "Score a run again, sending nothing.",
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
            from batchrun.redact import scrub_text

            raise click.ClickException(scrub_text(str(exc))) from exc


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="batchrun")
def cli() -> None:
    """Run large batches of OpenAI-compatible chat completions, resumably."""


def _parse_header(value: str) -> tuple[str, str]:
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise ConfigError(f"header {value!r} must look like 'Name: value'")
    return name.strip(), rest.strip()


def _parse_limits(
    name: str, values: tuple[str, ...]
) -> tuple[float | None, tuple[tuple[str, float], ...]]:
    """``--rpm 500 --rpm gpt-4.1=30`` -> (500.0, (("gpt-4.1", 30.0),))."""
    default: float | None = None
    by_model: list[tuple[str, float]] = []
    for value in values:
        model, sep, number = value.rpartition("=")
        try:
            amount = float(number)
            if not amount > 0 or amount == float("inf"):
                raise ValueError
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: expected a positive number, or MODEL=N", param_hint=f"'--{name}'"
            ) from None
        if sep and model:
            by_model.append((model, amount))
        elif sep:
            raise click.BadParameter(
                f"{value!r}: a model name goes before '='", param_hint=f"'--{name}'"
            )
        else:
            default = amount
    return default, tuple(by_model)


def _api_key(cfg: RunConfig) -> str | None:
    key = os.environ.get(cfg.api_key_env) or None
    if cfg.api_key_file:
        try:
            with open(os.path.expanduser(cfg.api_key_file), encoding="utf-8") as f:
                key = f.read().strip() or None
        except OSError as exc:
            raise ConfigError(
                f"{cfg.api_key_file}: cannot read the API key file ({exc.strerror})"
            ) from exc
    if key is not None and (not key.isascii() or not key.isprintable()):
        # a stray quote or CR/LF would fail every request with a traceback; name the
        # source of the key, never its value
        source = cfg.api_key_file or f"environment variable {cfg.api_key_env}"
        raise ConfigError(
            f"{source}: the API key holds a non-ASCII or control character "
            "(a stray quote or line end?)"
        )
    if key is None and cfg.auth != "none" and cfg.base_url != "sim":
        host = cfg.base_url.split("://", 1)[-1].split("/", 1)[0].rsplit(":", 1)[0]
        if host not in LOOPBACK_HOSTS:
            raise ConfigError(
                f"environment variable {cfg.api_key_env} is not set "
                "(set it, name another with --api-key-env, or use --auth none)"
            )
    return key


@contextlib.contextmanager
def _endpoint(cfg: RunConfig) -> Iterator[RunConfig]:
    """Start the built-in simulator for ``--base-url sim``; otherwise pass through."""
    if cfg.base_url != "sim":
        yield cfg
        return
    from dataclasses import replace

    from batchrun.sim import SimConfig, SimThread

    with SimThread(SimConfig(latency_ms=20.0, jitter_ms=10.0)) as sim:
        yield replace(cfg, base_url=sim.base_url)


@cli.command("run", context_settings=CONTEXT)
@click.argument("input_path", required=False, metavar="INPUT")
@click.option("-j", "--job", "job_path", help="TOML job file (CLI options override it).")
@click.option("-o", "--out", "out_dir", help="Run directory (results, errors, summary).")
@click.option(
    "--base-url",
    envvar="OPENAI_BASE_URL",
    help=f"API base URL, or 'sim' for the built-in simulator [default: {DEFAULT_BASE_URL}].",
)
@click.option(
    "--api-key-env",
    help="Name of the environment variable holding the API key [default: OPENAI_API_KEY].",
)
@click.option(
    "--auth",
    type=click.Choice(["bearer", "raw", "none"]),
    help="'bearer': Authorization: Bearer KEY; 'raw': Authorization: KEY; 'none'.",
)
@click.option("--auth-header", help="Header that carries the key, e.g. api-key (Azure).")
@click.option(
    "-H", "--header", "headers", multiple=True, help="Extra header 'Name: value' (repeatable)."
)
@click.option("--model", help="Model for rows that name none.")
@click.option(
    "-c",
    "--concurrency",
    type=click.IntRange(min=1, max=100_000),
    help="Max requests in flight [default: 64].",
)
@click.option(
    "--rpm",
    multiple=True,
    metavar="[MODEL=]N",
    help="Requests per minute for each model, or for one (repeatable: --rpm 500 --rpm gpt-4.1=30).",
)
@click.option("--tpm", multiple=True, metavar="[MODEL=]N", help="Tokens per minute, like --rpm.")
@click.option(
    "--max-attempts",
    type=click.IntRange(min=1),
    help="Attempts per request, the first included [default: 10].",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds to wait for a response; for streams, between chunks [default: 120].",
)
@click.option(
    "--total-timeout",
    type=click.FloatRange(min=0, min_open=True),
    help="Overall cap on one attempt in seconds [default: 1800].",
)
@click.option("--stream/--no-stream", default=None, help="Force streaming for every row.")
@click.option(
    "--retry-failed", is_flag=True, help="Retry rows that failed for good in an earlier run."
)
@click.option(
    "--retry-bad-answers",
    is_flag=True,
    help="Send again the rows whose answer was unusable (truncated, refused, off-schema).",
)
@click.option(
    "--quality-breaker",
    type=click.FloatRange(min=0, max=1),
    help="Stop when this share of the first 20+ answers is unusable; 0 turns it off "
    "[default: 0.8].",
)
@click.option(
    "--force",
    is_flag=True,
    help="Resume even if the input or request options changed (changed rows are sent again).",
)
@click.option(
    "--drain-timeout",
    type=click.FloatRange(min=0),
    help="Seconds in-flight requests get after Ctrl-C [default: 30].",
)
@click.option(
    "--max-cost", type=click.FloatRange(min=0), help="Stop before spending more than this many USD."
)
@click.option("--prices", "prices_path", help="TOML price file adding/overriding model prices.")
@click.option(
    "--parquet/--no-parquet",
    "write_parquet",
    default=None,
    help="Write results.parquet, one row per input row [default: on].",
)
@click.option(
    "--skip-invalid", is_flag=True, help="Write bad input rows to invalid.jsonl and run the rest."
)
@click.option(
    "--max-response-bytes",
    type=click.IntRange(min=1024),
    help="Largest response body accepted [default: 64 MiB].",
)
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.1),
    help="Seconds between progress lines when not on a terminal [default: 10].",
)
@click.option("-q", "--quiet", is_flag=True, default=None, help="Print nothing but errors.")
@click.option("--dry-run", is_flag=True, help="Estimate tokens and cost; send nothing.")
def run_command(
    input_path: str | None, job_path: str | None, dry_run: bool, **options: Any
) -> None:
    """Send every request in INPUT (JSONL, JSONL.gz or Parquet) and record the results.

    Rerunning the same command resumes: finished rows are not sent again.
    """
    cfg = build_config(input_path, job_path, options)
    if dry_run:
        from batchrun.cli.commands import estimate_and_print

        estimate_and_print(cfg)
        return
    from batchrun.cli.commands import execute_run

    with _endpoint(cfg) as live_cfg:
        code = execute_run(live_cfg, _api_key(live_cfg))
    sys.exit(code)


def build_config(
    input_path: str | None, job_path: str | None, options: dict[str, Any], *, need_out: bool = True
) -> RunConfig:
    """CLI values win over job-file values, which win over defaults."""
    given = {k: v for k, v in options.items() if v is not None and v != ()}
    if "headers" in given:
        given["headers"] = tuple(_parse_header(h) for h in given["headers"])
    for name in ("rpm", "tpm"):
        if name in given:
            default, by_model = _parse_limits(name, given.pop(name))
            if default is not None:
                given[name] = default
            if by_model:
                given[f"model_{name}"] = by_model
    values: dict[str, Any] = {}
    if job_path:
        from batchrun.jobs.jobfile import load_job, merge_options

        values = merge_options(load_job(job_path).to_run_options(), given)
    else:
        values = given
    if input_path:
        values["input_path"] = input_path
    if not values.get("input_path"):
        raise ConfigError("no INPUT given (pass a request file, or -j JOB)")
    if not values.get("out_dir"):
        if need_out:
            raise ConfigError("no run directory given (-o DIR)")
        values["out_dir"] = ""
    base_url = values.get("base_url")
    if base_url and base_url != "sim" and not base_url.startswith(("http://", "https://")):
        raise ConfigError(
            f"--base-url {base_url!r} must start with http:// or https:// (or be 'sim')"
        )
    if base_url and base_url != "sim":
        from urllib.parse import urlsplit

        if not urlsplit(base_url).hostname or any(c.isspace() for c in base_url):
            raise ConfigError(f"--base-url {base_url!r} has no valid host name")
    return RunConfig(**values)


@cli.command("status", context_settings=CONTEXT)
@click.argument("run_dir")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(run_dir: str, as_json: bool) -> None:
    """Show how far a run got: done / failed / pending, usage, cost."""
    from batchrun.cli.commands import print_status

    sys.exit(print_status(run_dir, as_json))


def main() -> None:
    try:
        cli(prog_name="batchrun")
    except KeyboardInterrupt:  # a Ctrl-C before a run could set up its own handling
        sys.exit(130)
