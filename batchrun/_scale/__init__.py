"""A run on a Ray cluster (``batchrun run ... --ray [ADDRESS]``, ``ray=`` in Python).

The input is split into shards (`shards`); each shard is the one-process pipeline on
its own run directory under ``RUN_DIR/shards/`` (`worker`), paced by leases from one
quota actor every worker shares (`lease`, `quota`, `budget`); the driver plans, checks,
runs and adds the shards up (`driver`, `aggregate`). Nothing here imports Ray until a
run on a cluster starts. The Ray Data entry point is `batchrun.ray`.
"""
