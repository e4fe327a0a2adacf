"""Issue 23, item 10: a ``--sample`` pilot, then the full run in the same directory, pay
for each distinct request once across both processes.

A pilot that picks a copy of a request but not its first occurrence sends the copy in
the first one's place; the full run must then give that answer to the first one and
to every other copy, not send the request again. Against the loopback simulator,
which records every body it is sent.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun.sim import SimConfig, SimThread

ROWS, TEXTS = 200, 60


@pytest.fixture
def sim() -> Iterator[SimThread]:
    with SimThread(SimConfig(record_bodies=5000)) as server:
        yield server


def rows_with_copies() -> list[dict[str, Any]]:
    """200 rows asking 60 texts (most of them several times, in no order)."""
    pick = random.Random(7)
    return [{"id": f"r{i}", "text": f"review number {pick.randrange(TEXTS)}"} for i in range(ROWS)]


def sent_bodies(sim: SimThread) -> Counter[str]:
    return Counter(json.dumps(body, sort_keys=True) for body in sim.snapshot()["bodies"])


def lines(run_dir: Path) -> list[dict[str, Any]]:
    return [
        json.loads(x)
        for name in ("results.jsonl", "errors.jsonl")
        if (run_dir / name).exists()
        for x in (run_dir / name).read_text().splitlines()
    ]


def test_a_sample_pilot_then_the_full_run_sends_each_request_once(
    sim: SimThread, tmp_path: Path
) -> None:
    rows = rows_with_copies()
    distinct = len({r["text"] for r in rows})
    out = tmp_path / "run"
    common = {"prompt": "Label: {text}", "id_column": "id", "model": "gpt-4o-mini",
              "quiet": True, "base_url": sim.base_url, "temperature": 0}  # fmt: skip

    # two pilots of different samples, then everything: three processes, one directory
    first = batchrun.run(rows, out, sample=40, seed=3, **common)
    assert first.status == "partial"
    after_first = sim.stats.requests
    second = batchrun.run(rows, out, sample=80, seed=11, **common)
    assert second.status == "partial"
    full = batchrun.run(rows, out, **common)
    assert full.status == "complete"

    # at the server: every distinct request once, nothing more
    sent = sent_bodies(sim)
    assert sim.stats.requests == sum(sent.values())
    assert max(sent.values()) == 1, [c for c in sent.values() if c > 1]
    assert len(sent) == distinct
    # the pilot sent copies in place of first occurrences it did not pick (the case
    # that made the full run pay again): the test covers it
    picked = {x["custom_id"] for x in lines(out) if "reused" not in x["batchrun"]}
    first_of = {}
    for row in rows:
        first_of.setdefault(row["text"], row["id"])
    assert picked - set(first_of.values()), "no copy was sent in place of its first"
    assert after_first < distinct

    # in the directory: every row answered once, with its text's one answer
    written = lines(out)
    assert sorted(x["custom_id"] for x in written) == sorted(r["id"] for r in rows)
    text_of = {r["id"]: r["text"] for r in rows}
    answer_of: dict[str, set[str]] = {}
    for line in written:
        content = line["response"]["body"]["choices"][0]["message"]["content"]
        answer_of.setdefault(text_of[line["custom_id"]], set()).add(content)
    assert all(len(contents) == 1 for contents in answer_of.values())
    # the summary says the same: rows sent (paid) plus rows reused is every row
    summary = full.summary
    assert summary["requests"]["succeeded"] == ROWS
    paid = sum(1 for x in written if "reused" not in x["batchrun"])
    assert paid == distinct
    assert summary["reused"]["run"] == ROWS - distinct
