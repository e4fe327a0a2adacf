"""Input: rows in, requests out. ``sources`` (JSONL, gzip, Parquet; the validating scan),
``rows`` (dataset rows -> requests), ``templates`` (prompt templates), ``select`` (which
source a run reads)."""
