"""The engine: one run from start to end. ``runner`` (the pool of workers, the writer,
checkpoints, signals), ``rundir`` (the run directory's lock and leftovers)."""
