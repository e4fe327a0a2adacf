"""Who watches the scan of an online run, and what they decide before sending.

The pilot's picker (``limit`` / ``sample``: `batchrun._input.pilot`) chooses the rows a
pilot sends; the response cache and the in-run dedupe (`batchrun._engine.reuse`) learn
every body, then adopt the answers earlier runs wrote. Both see each valid request of
the one validating pass (`batchrun._input.scan`), so neither reads the input again.

    watch = ScanWatch(cfg, api_key=key)
    prepared = await prepare_input(cfg, ..., observe=watch.observer())
    await watch.after_scan()
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import anyio.to_thread

from batchrun._engine.reuse import EarlierLines, Reuse
from batchrun._input.pilot import PilotPicker, Selection
from batchrun._input.scan import ScanObserver, ScanResult
from batchrun._models import Request
from batchrun._settings import Settings


class ScanWatch:
    """The pilot's picker and the response cache / dedupe of one online run."""

    def __init__(
        self,
        cfg: Settings,
        *,
        api_key: str | None,
        api_keys: Mapping[str, str | None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.api_key = api_key
        self.api_keys = api_keys
        """A pool's keys by endpoint name (the cache's scope of each endpoint)."""
        self.picker: PilotPicker | None = None
        self.selection: Selection | None = None
        """A pilot's rows (``limit`` / ``sample``); None: every row."""
        self.reuse: Reuse | None = None
        """The response cache and in-run dedupe (`batchrun._engine.reuse`), when on."""
        self._earlier: EarlierLines | None = None

    def observer(self) -> ScanObserver | None:
        """What the scan tells the pilot's picker and the dedupe (None: nobody asks)."""
        cfg = self.cfg
        watchers: list[ScanObserver] = []
        if cfg.is_pilot:
            from batchrun._input.variants import plan_variants

            self.picker = PilotPicker(
                limit=cfg.limit,
                sample=None if cfg.limit is not None else cfg.sample,
                seed=cfg.seed,
                variants=[v.name for v in plan_variants(cfg)],
            )
            watchers.append(self.picker.observe)
        if (cfg.cache or cfg.dedupe) and cfg.cache_policy != "off":
            earlier = self._earlier = EarlierLines(str(cfg.out_dir), cfg.endpoint)
            self.reuse = Reuse(
                cfg,
                api_key=self.api_key,
                api_keys=self.api_keys,
                read_line=earlier.line,
                read_hashed=earlier.hashed,
            )
            watchers.append(self.reuse.observe)
        if len(watchers) <= 1:
            return watchers[0] if watchers else None

        def both(req: Request, payload: bytes) -> None:
            for watch in watchers:
                watch(req, payload)

        return both

    async def after_scan(self) -> None:
        """The pilot's rows are chosen; the dedupe groups what it saw (and goes when it
        found nothing to share)."""
        if self.picker is not None:
            self.selection = self.picker.finish()
        if self.reuse is not None:
            await anyio.to_thread.run_sync(self.reuse.after_scan)
            if not self.reuse.active:
                self.reuse = None

    async def adopt(
        self, scan: ScanResult, answered: bool, done_for: Callable[[int, int], bool]
    ) -> None:
        """The dedupe takes in the answers earlier runs wrote (``answered``: the run
        directory holds some; ``done_for(id hash, body hash)``: that row's is there)."""
        if self.reuse is None or not answered:
            return
        hashes, bodies = scan.hashes, scan.bodies

        def answered_before(index: int) -> int | None:
            h = hashes[index]
            return h if done_for(h, bodies[index]) else None

        await anyio.to_thread.run_sync(self.reuse.adopt, answered_before)

    def summary_extra(self) -> dict[str, Any]:
        """The pilot's selection and the in-run dedupe, for summary.json."""
        out: dict[str, Any] = {}
        if self.selection is not None and self.picker is not None:
            cfg = self.cfg
            out["pilot"] = {
                "limit": cfg.limit,
                "sample": cfg.sample if cfg.limit is None else None,
                "seed": cfg.seed if cfg.limit is None else None,
                "rows": self.selection.rows,
                "input_rows": self.picker.rows_seen,
            }
        if self.reuse is not None:
            out["dedupe"] = self.reuse.summary()
        return out

    def close(self) -> None:
        if self.reuse is not None:
            self.reuse.close()
        if self._earlier is not None:
            self._earlier.close()
