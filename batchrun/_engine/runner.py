"""An online run: the engine (`batchrun._engine.lifecycle`) with the online lane
(`batchrun._engine.online`), built from what a caller injects.

    >>> runner = Runner(Settings(input="req.jsonl", out_dir="runs/a"))  # doctest: +SKIP
    >>> result = anyio.run(runner.run)  # doctest: +SKIP
    >>> result.exit_code  # doctest: +SKIP
    0
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping

import anyio
import httpx

from batchrun._engine.hooks import RunHooks
from batchrun._engine.lifecycle import Engine
from batchrun._engine.online import OnlineLane
from batchrun._input.sources import Source
from batchrun._pacing.pool import Pool
from batchrun._pacing.scheduler import Accounts
from batchrun._runfiles import RunDirLock
from batchrun._settings import Settings
from batchrun.errors import ConfigError

__all__ = ["Runner"]

Sleep = Callable[[float], Awaitable[None]]


class Runner(Engine):
    """Everything an online run needs, injected: transport, clock, sleep, API key,
    and the quota accounts (a shard of a cluster run paces by leases from a shared
    one)."""

    def __init__(
        self,
        cfg: Settings,
        *,
        api_key: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        source: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = anyio.sleep,
        handle_signals: bool = False,
        hooks: RunHooks | None = None,
        wall_clock: Callable[[], float] = time.time,
        held_lock: RunDirLock | None = None,
        accounts: Accounts | Pool | None = None,
        api_keys: Mapping[str, str | None] | None = None,
    ) -> None:
        if not cfg.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        self.online = OnlineLane(
            cfg,
            api_key=api_key,
            transport=transport,
            source=source,
            accounts=accounts,
            clock=clock,
            api_keys=api_keys,
        )
        super().__init__(
            cfg,
            self.online,
            hooks=hooks,
            clock=clock,
            sleep=sleep,
            wall_clock=wall_clock,
            handle_signals=handle_signals,
            held_lock=held_lock,
        )

    @property
    def accounts(self) -> Accounts | Pool:
        """Each model's quotas, concurrency and 429s (`batchrun._pacing`)."""
        return self.online.accounts
