"""Run a job through the provider's Batch API (issue 16): the same input, run directory,
resume and report as an online run, at the Batch API's price.

Modules, in the order a row passes through them: `prepare` (the online run's checks),
`shards` (pending rows into input files within the limits), `workdir` (the shard files
in ``DIR/batch/``), `steps` (the crash-safe step journal), `openshards` (what a run
knows of its open shards), `client` (Files and Batches over HTTP), `submit` (planning
shards, uploading them, creating their batches), `reconcile` (finding a batch whose
create answer was lost), `protocol` (the wire format), `finish` (taking a finished
batch in), `intake` (which of its lines are written), `outcomes` (a batch's lines as
the run's outcomes), `cancel` (cancelling the open batches), `bookkeeping` (summary.json,
batch/state.json, progress, exit code), `state` (batch/state.json, and the rule that
keeps open batches' rows from being sent online; `batchrun._output.ledger` reads it back),
`driver` (the loop over the shards, the deadline fallback).

    run = batchrun.run("requests.jsonl", "runs/a", mode="batch", deadline="6h")
    batchrun.open("runs/a").cancel()
"""

from __future__ import annotations

from batchrun._batch.driver import BatchDriver

__all__ = ["BatchDriver"]
