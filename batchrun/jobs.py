"""Pick the Source for a run: a request file, or a dataset through a prompt template.

>>> source_for(RunConfig("requests.jsonl", "runs/a"))   # doctest: +SKIP
"""

from __future__ import annotations

from batchrun.config import RunConfig
from batchrun.sources import Source


def source_for(cfg: RunConfig) -> Source:
    from batchrun.dataset import dataset_mapper, request_defaults_mapper

    if cfg.job.get("prompt"):
        return Source(
            cfg.input_path, mapper=dataset_mapper(cfg), dataset=True, skip_invalid=cfg.skip_invalid
        )
    if cfg.job.get("request"):
        return Source(
            cfg.input_path, mapper=request_defaults_mapper(cfg), skip_invalid=cfg.skip_invalid
        )
    return Source(cfg.input_path, default_model=cfg.model, skip_invalid=cfg.skip_invalid)
