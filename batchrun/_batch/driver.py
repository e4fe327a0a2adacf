"""A run through the provider's Batch API: the engine (`batchrun._engine.lifecycle`)
with the Batch API lane (`batchrun._batch.lane`), built from what a caller injects.

A run that reaches its ``deadline`` (and an online rerun that first takes in what the
batches an earlier run left have finished: ``settle_only``) hands the rows left to an
online engine on the same directory, under the same lock (``online``).

    driver = BatchDriver(settings, api_key=key, hooks=hooks)
    result = anyio.run(driver.run)
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TextIO

import anyio
import httpx

from batchrun._batch.lane import BatchLane
from batchrun._batch.reconcile import CREATE_GRACE_S
from batchrun._batch.state import iter_open_batches
from batchrun._batch.steps import Ledger
from batchrun._engine.hooks import RunHooks
from batchrun._engine.lifecycle import Engine
from batchrun._engine.runinfo import settings_of
from batchrun._input.sources import Source
from batchrun._runfiles import RunDirLock
from batchrun._settings import Settings
from batchrun.errors import ConfigError

Sleep = Callable[[float], Awaitable[None]]


class BatchDriver(Engine):
    """A run through the Batch API; everything it needs is injected (see the module
    doc). ``cancel_only``: `batchrun cancel`; ``settle_only``: take in what open
    batches finished and hand the rest to ``online`` (refused while one runs)."""

    def __init__(
        self,
        cfg: Settings,
        *,
        api_key: str | None = None,
        api_keys: Mapping[str, str | None] | None = None,
        hooks: RunHooks | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        source: Source | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = anyio.sleep,
        wall_clock: Callable[[], float] = time.time,
        handle_signals: bool = False,
        online: Callable[[RunDirLock], Engine] | None = None,
        cancel_only: bool = False,
        stream: TextIO | None = None,
        create_grace: float = CREATE_GRACE_S,
        settle_only: bool = False,
    ) -> None:
        if not cfg.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        if not settle_only:  # settling hands over to an online run, which checks its own
            cfg.validate()
        self.batches = BatchLane(
            cfg,
            api_key=api_key,
            api_keys=api_keys,
            transport=transport,
            source=source,
            cancel_only=cancel_only,
            settle_only=settle_only,
            stream=stream,
            create_grace=create_grace,
        )
        super().__init__(
            cfg,
            self.batches,
            hooks=hooks,
            clock=clock,
            sleep=sleep,
            wall_clock=wall_clock,
            handle_signals=handle_signals,
            then=online,
        )

    @property
    def ledger(self) -> Ledger:
        return self.batches.ledger


__all__ = ["BatchDriver", "iter_open_batches", "settings_of"]
