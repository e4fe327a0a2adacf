"""Output: what a run writes and how it reads it back. ``lines`` (one line per result),
``sink`` (group-committed appends), ``journal`` (what is done), ``tally`` and ``usage``
(counting), ``quality`` and ``answers`` (is an answer usable, its typed fields),
``summary`` (summary.json), ``parquet`` (results.parquet), ``rundir`` (the one reader
of a whole run directory, online, Batch API or sharded) and ``ledger`` (a Batch API
run's step journal and batches, read back)."""
