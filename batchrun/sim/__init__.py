"""A built-in OpenAI-compatible server: offline rehearsal of a job, and test bed.

Deterministic replies (same body, same answer), realistic usage counted with the
real tokenizers, and every failure a client must survive on demand: injected
statuses, scripted per-request sequences, torn streams, errors inside 200s,
latency, and OpenAI-style rpm/tpm quotas with x-ratelimit headers. It also serves
OpenAI's Files and Batches API (upload, create, poll, download, list, cancel), with
batch speed, limits and faults in `BatchConfig`.

    async with running_sim(SimConfig(error_rates={429: 0.1})) as sim:
        ...  # POST f"{sim.base_url}/chat/completions"
    with SimThread(SimConfig(rpm=600)) as sim:
        print(sim.base_url, sim.stats.requests)
    with SimThread(SimConfig(batch=BatchConfig(rows_per_second=100))) as sim:
        client = openai.OpenAI(base_url=sim.base_url, api_key="sk-sim")  # files, batches
"""

from __future__ import annotations

from batchrun.sim.config import ApiStep, BatchConfig, ScriptStep, SimConfig
from batchrun.sim.content import make_reply
from batchrun.sim.quota import Quota, TokenBucket, format_reset
from batchrun.sim.server import SimServer, SimThread, running_sim
from batchrun.sim.stats import SimStats

__all__ = [
    "ApiStep",
    "BatchConfig",
    "Quota",
    "ScriptStep",
    "SimConfig",
    "SimServer",
    "SimStats",
    "SimThread",
    "TokenBucket",
    "format_reset",
    "make_reply",
    "running_sim",
]
