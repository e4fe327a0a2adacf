"""What kind of file an input is, by its name: JSONL (gzipped or not), Parquet, CSV or
TSV. Named by the locations (which list a directory's inputs) and by the readers."""

from __future__ import annotations

DELIMITED_KINDS = ("csv", "csv.gz", "tsv", "tsv.gz")
SUFFIXES = {".csv": "csv", ".csv.gz": "csv.gz", ".tsv": "tsv", ".tsv.gz": "tsv.gz"}


def delimited_kind(path: str) -> str | None:
    """'csv', 'csv.gz', 'tsv' or 'tsv.gz' by the file's name; None for other files.

    >>> delimited_kind("a.TSV.gz"), delimited_kind("a.jsonl")
    ('tsv.gz', None)
    """
    lowered = path.lower()
    for suffix, kind in SUFFIXES.items():
        if lowered.endswith(suffix):
            return kind
    return None


def input_kind(path: str) -> str:
    """'jsonl', 'jsonl.gz', 'parquet', or one of `DELIMITED_KINDS` ('csv', 'tsv.gz', ...)."""
    lowered = path.lower()
    delimited = delimited_kind(lowered)
    if delimited is not None:
        return delimited
    if lowered.endswith((".parquet", ".pq")):
        return "parquet"
    if lowered.endswith(".gz"):
        return "jsonl.gz"
    return "jsonl"
