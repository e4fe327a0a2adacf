"""A run on a Ray cluster: the engine (`batchrun._engine.lifecycle`) with the Ray lane
(`batchrun._scale.lane`: plan the shards, run them on workers, add them up).

`RayDriver` has every engine's interface (``await run()``, ``interrupt()``), so
`batchrun._api.make_runner` hands it out when ``settings.ray`` is set and the CLI,
`run` and `arun` need to know nothing else.

    driver = RayDriver(settings, api_key)
    result = anyio.run(driver.run)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from batchrun._engine.lifecycle import Engine
from batchrun._scale.lane import INSTALL_HINT, RayLane, connect, import_ray, unwrap
from batchrun._settings import Settings
from batchrun.errors import ConfigError

__all__ = ["INSTALL_HINT", "RayDriver", "connect", "import_ray", "unwrap"]


class RayDriver(Engine):
    """``served``: the endpoint's model list, asked only for a model without a price
    (`batchrun._cost.modelnames`); ``err``: where progress lines go; ``api_keys``: a
    pool's keys, each endpoint's (`batchrun._api.endpoint_keys`)."""

    def __init__(
        self,
        cfg: Settings,
        api_key: str | None = None,
        *,
        handle_signals: bool = False,
        err: Any = None,
        served: Callable[[], list[str] | None] | None = None,
        api_keys: Mapping[str, str | None] | None = None,
    ) -> None:
        if not cfg.out_dir:
            raise ConfigError("no run directory given (-o DIR)")
        if cfg.ray is None:
            raise ConfigError("RayDriver needs settings.ray (an address, or 'local')")
        cfg.validate()  # variants, a pilot, a cache nodes cannot share: refused
        self.cluster = RayLane(cfg, api_key, err=err, served=served, api_keys=api_keys)
        super().__init__(cfg, self.cluster, handle_signals=handle_signals)
