"""``batchrun sim``: serve the simulator until SIGINT/SIGTERM.

$ batchrun sim --port 0 --latency-ms 200 --jitter-ms 100 --error-rate 429=0.05
batchrun sim listening on http://127.0.0.1:41237/v1
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import click

from batchrun.sim.config import SimConfig
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


@click.command("sim", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True, envvar="BATCHRUN_SIM_HOST")
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
@click.option("--seed", default=0, type=int, show_default=True)
def sim_command(
    host: str,
    port: int,
    latency_ms: float,
    jitter_ms: float,
    jitter: str,
    error_rates: tuple[str, ...],
    rpm: int | None,
    tpm: int | None,
    retry_after: float,
    truncate_rate: float,
    stream_error_rate: float,
    first_token_ms: float,
    chunk_delay_ms: float,
    require_key_env: str | None,
    seed: int,
) -> None:
    """Serve a simulated OpenAI-compatible API (for offline rehearsals)."""
    require_key = None
    if require_key_env:
        require_key = os.environ.get(require_key_env)
        if not require_key:
            raise click.ClickException(f"environment variable {require_key_env} is not set")
    try:
        config = SimConfig(
            seed=seed,
            latency_ms=latency_ms,
            jitter_ms=jitter_ms,
            jitter="lognormal" if jitter == "lognormal" else "uniform",
            error_rates=_parse_rates(error_rates),
            retry_after=retry_after,
            rpm=rpm,
            tpm=tpm,
            require_key=require_key,
            truncate_rate=truncate_rate,
            stream_error_rate=stream_error_rate,
            first_token_ms=first_token_ms,
            chunk_delay_ms=chunk_delay_ms,
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        asyncio.run(_serve(config, host, port))
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from None


async def _serve(config: SimConfig, host: str, port: int) -> None:
    server = SimServer(config)
    await server.start(host, port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread / Windows
            pass
    click.echo(f"batchrun sim listening on {server.base_url}")
    sys.stdout.flush()
    try:
        await stop.wait()
    finally:
        await server.stop()
