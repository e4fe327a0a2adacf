"""Run a job through the provider's Batch API (issue 16): the same input, run directory,
resume and report as an online run, at the Batch API's price.

Modules, in the order a row passes through them: `prepare` (the online run's checks),
`shards` (pending rows into input files within the limits), `workdir` (the shard files
in ``DIR/batch/``), `steps` (the crash-safe step journal), `client` (Files and Batches
over HTTP), `reconcile` (finding a batch whose create answer was lost), `protocol`
(the wire format), `outcomes` (a batch's lines as the run's outcomes), `state` (what
`batchrun status` shows), `driver` (the loop, the deadline fallback, cancel).

    run = batchrun.run("requests.jsonl", "runs/a", mode="batch", deadline="6h")
    batchrun.batch.cancel_run("runs/a")
"""

from __future__ import annotations

from batchrun.batch.driver import BatchDriver

__all__ = ["BatchDriver"]
