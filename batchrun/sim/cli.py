"""``batchrun sim``: serve the simulator until SIGINT/SIGTERM.

$ batchrun sim --port 0 --latency-ms 200 --jitter-ms 100 --error-rate 429=0.05
batchrun sim listening on http://127.0.0.1:41237/v1
$ batchrun sim --batch-rows-per-second 50 --batch-fate ok --batch-fate expire \
      --batch-fault retrieve:503=0.1 --batch-script upload:hang,ok
$ batchrun sim --pool 3 --pool-rpm 600,1200,300 --port 0 --start-drained
batchrun sim: a pool of 3 simulators (600 rpm, 1200 rpm, 300 rpm)
batchrun sim listening on http://127.0.0.1:41237/v1
...
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import click

from batchrun.sim.config import (
    BATCH_FATES,
    LABELLING_MODELS,
    ApiStep,
    BatchConfig,
    SimConfig,
    Skill,
)
from batchrun.sim.server import SimServer


def _parse_rates(values: tuple[str, ...]) -> dict[int, float]:
    rates: dict[int, float] = {}
    for value in values:
        status, sep, rate = value.partition("=")
        try:
            if not sep:
                raise ValueError
            rates[int(status)] = float(rate)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected STATUS=P, e.g. 429=0.1") from None
    return rates


def _parse_model_limits(values: tuple[str, ...], what: str) -> dict[str, int]:
    limits: dict[str, int] = {}
    for value in values:
        model, sep, number = value.rpartition("=")
        try:
            if not sep or not model:
                raise ValueError
            limits[model] = int(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected MODEL=N, e.g. gpt-4o={what}") from None
    return limits


def _parse_skills(values: tuple[str, ...]) -> dict[str, Skill]:
    """``MODEL=SURE,RIGHT[,UNSURE]`` -> Skill (UNSURE left out: a guess)."""
    skills = dict(LABELLING_MODELS)
    for value in values:
        model, sep, numbers = value.rpartition("=")
        try:
            parts = [float(x) for x in numbers.split(",")]
            if not sep or not model or len(parts) not in (2, 3):
                raise ValueError
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: expected MODEL=SURE,RIGHT[,UNSURE], e.g. cheap=0.7,0.97"
            ) from None
        unsure = parts[2] if len(parts) == 3 else None
        try:
            skills[model] = Skill(
                sure_share=parts[0], right_when_sure=parts[1], right_when_unsure=unsure
            )
        except ValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}") from None
    return skills


def _parse_step(text: str) -> ApiStep:
    return int(text) if text.isdigit() else text


def _parse_faults(values: tuple[str, ...]) -> dict[str, dict[ApiStep, float]]:
    faults: dict[str, dict[ApiStep, float]] = {}
    for value in values:
        operation, _, rest = value.partition(":")
        step, sep, rate = rest.partition("=")
        try:
            if not (operation and step and sep):
                raise ValueError
            faults.setdefault(operation, {})[_parse_step(step)] = float(rate)
        except ValueError:
            raise click.BadParameter(
                f"{value!r}: expected OP:STEP=P, e.g. upload:503=0.1 or retrieve:hang=0.05"
            ) from None
    return faults


def _parse_scripts(values: tuple[str, ...]) -> dict[str, list[ApiStep]]:
    scripts: dict[str, list[ApiStep]] = {}
    for value in values:
        operation, sep, steps = value.partition(":")
        if not (operation and sep and steps):
            raise click.BadParameter(
                f"{value!r}: expected OP:STEP[,STEP...], e.g. retrieve:503,hang,ok"
            )
        scripts[operation] = [_parse_step(step.strip()) for step in steps.split(",")]
    return scripts


# One declaration per Batch API option: (flag, BatchConfig field, click keywords).
_BATCH_OPTIONS: list[tuple[str, str, dict[str, Any]]] = [
    (
        "--batch-rows-per-second",
        "rows_per_second",
        {"type": float, "default": math.inf, "help": "Rows a batch answers per second."},
    ),
    ("--batch-validation-delay", "validation_delay", {"type": float, "default": 0.0}),
    ("--batch-finalizing-delay", "finalizing_delay", {"type": float, "default": 0.0}),
    ("--batch-cancel-delay", "cancel_delay", {"type": float, "default": 0.0}),
    (
        "--batch-window",
        "window_seconds",
        {
            "type": float,
            "default": 86_400.0,
            "show_default": True,
            "help": "Seconds before an unfinished batch expires.",
        },
    ),
    ("--batch-max-requests", "max_requests", {"type": int, "default": 50_000}),
    ("--batch-max-file-bytes", "max_file_bytes", {"type": int, "default": 200 * 1024 * 1024}),
    (
        "--batch-enqueued-token-limit",
        "enqueued_token_limit",
        {"type": int, "default": None, "help": "Prompt tokens per model in progress at once."},
    ),
    (
        "--batch-row-error-rate",
        "row_error_rate",
        {"type": float, "default": 0.0, "help": "Share of rows answered with an error."},
    ),
    ("--batch-row-error-status", "row_error_status", {"type": int, "default": 500}),
    (
        "--batch-fate",
        "fates",
        {
            "multiple": True,
            "type": click.Choice(sorted(BATCH_FATES)),
            "help": "Outcome of the next batch created (repeatable, in order).",
        },
    ),
    ("--batch-expire-fraction", "expire_fraction", {"type": float, "default": 0.5}),
    (
        "--batch-expired-to-error-file",
        "expired_rows_to_error_file",
        {"is_flag": True, "help": "Write rows an expired batch never ran as batch_expired."},
    ),
    (
        "--batch-late-output-reads",
        "late_output_reads",
        {
            "type": int,
            "default": 0,
            "help": "Retrieves of a finished batch that still show output_file_id null.",
        },
    ),
    (
        "--batch-repeat-output-lines",
        "repeat_output_lines",
        {
            "type": int,
            "default": 0,
            "help": "Lines of each output file repeated at its end with another answer.",
        },
    ),
    (
        "--batch-fault",
        "faults",
        {
            "multiple": True,
            "metavar": "OP:STEP=P",
            "help": "Files/Batches fault at rate P (repeatable), e.g. retrieve:503=0.1.",
        },
    ),
    (
        "--batch-script",
        "scripts",
        {
            "multiple": True,
            "metavar": "OP:STEP,...",
            "help": "Steps for an operation's next calls, e.g. upload:hang,ok.",
        },
    ),
]


def _batch_options(command: Callable[..., Any]) -> Callable[..., Any]:
    for flag, field_name, keywords in reversed(_BATCH_OPTIONS):
        command = click.option(flag, f"batch_{field_name}", **keywords)(command)
    return command


def batch_config(options: dict[str, Any]) -> BatchConfig:
    """A `BatchConfig` from the ``--batch-*`` options (keys ``batch_<field>``)."""
    values = {name.removeprefix("batch_"): value for name, value in options.items()}
    values["faults"] = _parse_faults(values.get("faults", ()))
    values["scripts"] = _parse_scripts(values.get("scripts", ()))
    return BatchConfig(**values)


@click.command("sim", context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="BATCHRUN_SIM_HOST",
    metavar="HOST",
    help="Address to listen on.",
)
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=int,
    envvar="BATCHRUN_SIM_PORT",
    help="0 picks a free port.",
)
@click.option("--latency-ms", default=0.0, type=float, help="Mean time before answering.")
@click.option("--jitter-ms", default=0.0, type=float, help="Spread around the mean latency.")
@click.option(
    "--jitter",
    "jitter",
    default="uniform",
    type=click.Choice(["uniform", "lognormal"]),
    show_default=True,
)
@click.option(
    "--error-rate",
    "error_rates",
    multiple=True,
    metavar="STATUS=P",
    help="Answer with STATUS at probability P (repeatable), e.g. 429=0.1.",
)
@click.option("--rpm", type=int, default=None, help="Requests per minute per API key.")
@click.option("--tpm", type=int, default=None, help="Tokens per minute per API key.")
@click.option(
    "--model-rpm",
    multiple=True,
    metavar="MODEL=N",
    help="A model's own requests per minute (repeatable); quotas are per model.",
)
@click.option(
    "--model-tpm", multiple=True, metavar="MODEL=N", help="A model's own tokens per minute."
)
@click.option(
    "--start-drained", is_flag=True, help="Quotas start used up, as after another client."
)
@click.option("--retry-after", default=1.0, type=float, help="Seconds advertised by injected 429s.")
@click.option("--truncate-rate", default=0.0, type=float, help="Share of streams torn early.")
@click.option(
    "--stream-error-rate", default=0.0, type=float, help="Share of streams with an error object."
)
@click.option("--first-token-ms", default=0.0, type=float, help="Delay before the first chunk.")
@click.option("--chunk-delay-ms", default=0.0, type=float, help="Delay between stream chunks.")
@click.option(
    "--require-key-env",
    metavar="NAME",
    default=None,
    help="Require the API key held in this environment variable.",
)
@click.option(
    "--skill",
    "skills",
    multiple=True,
    metavar="MODEL=SURE,RIGHT[,UNSURE]",
    help="How a model labels: the share of texts it is sure on, how often it is right "
    "there, and elsewhere (left out: a guess); its logprobs are calibrated. 'weak' "
    "(0.7,0.97) and 'strong' (0.9,0.98,0.68) are known already. Gold labels come from a "
    "'[gold: LABEL]' marker in the prompt.",
)
@click.option("--seed", default=0, type=int, show_default=True)
@click.option(
    "--pool",
    type=click.IntRange(min=1, max=64),
    default=None,
    metavar="N",
    help="Serve N simulators, each on its own port (from --port up, or free ports with "
    "--port 0), seeded apart: a pool of endpoints to rehearse against.",
)
@click.option(
    "--pool-rpm",
    metavar="N,N,...",
    default=None,
    help="With --pool: each simulator's requests per minute, in order (one value: all).",
)
@click.option(
    "--pool-tpm",
    metavar="N,N,...",
    default=None,
    help="With --pool: each simulator's tokens per minute, in order (one value: all).",
)
@_batch_options
def sim_command(
    host: str,
    port: int,
    latency_ms: float,
    jitter_ms: float,
    jitter: str,
    error_rates: tuple[str, ...],
    rpm: int | None,
    tpm: int | None,
    model_rpm: tuple[str, ...],
    model_tpm: tuple[str, ...],
    start_drained: bool,
    retry_after: float,
    truncate_rate: float,
    stream_error_rate: float,
    first_token_ms: float,
    chunk_delay_ms: float,
    require_key_env: str | None,
    skills: tuple[str, ...],
    seed: int,
    pool: int | None,
    pool_rpm: str | None,
    pool_tpm: str | None,
    **batch_options: Any,
) -> None:
    """Serve a simulated OpenAI-compatible API (for offline rehearsals); with --pool,
    several, each with its own quotas (--pool 3 --pool-rpm 600,1200,300)."""
    require_key = None
    if require_key_env:
        require_key = os.environ.get(require_key_env)
        if not require_key:
            raise click.ClickException(f"environment variable {require_key_env} is not set")
    try:
        batch = batch_config(batch_options)
        config = SimConfig(
            seed=seed,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            jitter="lognormal" if jitter == "lognormal" else "uniform",
            error_rates=_parse_rates(error_rates),
            retry_after=retry_after,
            rpm=rpm,
            tpm=tpm,
            model_rpm=_parse_model_limits(model_rpm, "500"),
            model_tpm=_parse_model_limits(model_tpm, "30000"),
            start_drained=start_drained,
            require_key=require_key,
            truncate_rate=truncate_rate,
            stream_error_rate=stream_error_rate,
            first_token_ms=first_token_ms,
            chunk_delay_ms=chunk_delay_ms,
            batch=batch,
            skills=_parse_skills(skills),
        )
        configs = pool_configs(config, pool, pool_rpm, pool_tpm)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(_serve(configs, host, port))
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None


def pool_configs(
    config: SimConfig, size: int | None, rpms: str | None, tpms: str | None
) -> list[SimConfig]:
    """The configs of ``--pool N``: ``config`` N times, each seeded apart and with its
    own quotas from ``--pool-rpm``/``--pool-tpm`` (N values, or one for all).

    >>> [c.rpm for c in pool_configs(SimConfig(), 3, "600,1200,300", None)]
    [600, 1200, 300]
    """
    if size is None:
        if rpms is not None or tpms is not None:
            raise ValueError("--pool-rpm and --pool-tpm need --pool N")
        return [config]

    def per_instance(values: str | None, flag: str, default: int | None) -> list[int | None]:
        if values is None:
            return [default] * size
        try:
            numbers: list[int | None] = [int(v) for v in values.split(",")]
        except ValueError:
            raise ValueError(f"{flag}: expected whole numbers N,N,... (got {values!r})") from None
        if len(numbers) == 1:
            return numbers * size
        if len(numbers) != size:
            raise ValueError(f"{flag}: {len(numbers)} values for --pool {size}")
        return list(numbers)

    rpm = per_instance(rpms, "--pool-rpm", config.rpm)
    tpm = per_instance(tpms, "--pool-tpm", config.tpm)
    return [replace(config, seed=config.seed + i, rpm=rpm[i], tpm=tpm[i]) for i in range(size)]


async def _serve(configs: list[SimConfig], host: str, port: int) -> None:
    """Serve every config (a pool: on ``port``, ``port + 1``, ...; 0: free ports) until
    SIGINT/SIGTERM; one "listening on URL" line each, in order."""
    servers: list[SimServer] = []
    try:
        for i, config in enumerate(configs):
            server = SimServer(config)
            await server.start(host, port + i if port else 0)
            servers.append(server)
        await _until_stopped(servers, pooled=len(configs) > 1)
    finally:
        for server in servers:
            await server.stop()


async def _until_stopped(servers: list[SimServer], *, pooled: bool) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / Windows
            pass
    if pooled:
        quotas = ", ".join(
            f"{s.config.rpm or 'unlimited'} rpm" + (f"/{s.config.tpm} tpm" if s.config.tpm else "")
            for s in servers
        )
        click.echo(f"batchrun sim: a pool of {len(servers)} simulators ({quotas})")
    for server in servers:
        click.echo(f"batchrun sim listening on {server.base_url}")
    sys.stdout.flush()
    await stop.wait()
