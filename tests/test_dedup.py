"""batchrun._cache.dedup: leaders and followers, against a plain dict doing the same job."""

from __future__ import annotations

import random

import pytest

from batchrun._cache.dedup import DedupPlan, RequestGroups
from batchrun._cache.store import cache_key


def reference_plan(keys: list[bytes]) -> dict[int, int]:
    """follower row -> leader row, the obvious way (a dict of every key)."""
    first: dict[bytes, int] = {}
    out = {}
    for row, key in enumerate(keys):
        if key in first:
            out[row] = first[key]
        else:
            first[key] = row
    return out


def plan_for(keys: list[bytes]) -> DedupPlan:
    groups = RequestGroups()
    groups.add_many(keys)
    return groups.finish()


def check(keys: list[bytes]) -> DedupPlan:
    plan = plan_for(keys)
    expected = reference_plan(keys)
    assert plan.rows == len(keys)
    assert plan.followers == len(expected)
    assert plan.leaders == len(set(expected.values()))
    for row in range(len(keys)):
        assert plan.leader_of(row) == expected.get(row), row
    by_leader: dict[int, list[int]] = {}
    for follower, leader in sorted(expected.items()):
        by_leader.setdefault(leader, []).append(follower)
    for row in range(len(keys)):
        assert plan.followers_of(row) == by_leader.get(row, []), row
    assert plan.nbytes == 32 * len(expected)
    return plan


def test_random_input_with_repeats_matches_a_dict() -> None:
    rng = random.Random(3)
    distinct = [rng.randbytes(16) for _ in range(3000)]
    # most rows unique, some keys repeated 2-30 times, scattered through the input
    keys = distinct[:2000] + [rng.choice(distinct[2000:2100]) for _ in range(1500)]
    keys += [distinct[2500]] * 30
    rng.shuffle(keys)
    plan = check(keys)
    assert plan.followers > 1000


def test_same_high_half_different_low_half_is_not_a_duplicate() -> None:
    a = b"\x01" * 8 + b"\x00" * 8
    b = b"\x01" * 8 + b"\x00" * 7 + b"\x01"
    plan = check([a, b, a, b, b])
    assert [plan.leader_of(r) for r in range(5)] == [None, None, 0, 1, 1]


def test_keys_on_every_slice_boundary() -> None:
    keys = []
    for top in range(16):
        for hi in ((top << 60), (top << 60) + 1, ((top + 1) << 60) - 1):
            keys.append(hi.to_bytes(8, "big") + b"\x07" * 8)
    keys = keys + keys[::-1]  # every key twice, the second time in reverse order
    plan = check(keys)
    assert plan.followers == 48
    assert plan.leader_of(95) == 0


def test_real_request_keys() -> None:
    url = "https://api.openai.com/v1/chat/completions"
    bodies = [
        b'{"model":"m","messages":[{"role":"user","content":"%d"}]}' % (i % 7) for i in range(20)
    ]
    plan = check([cache_key(url, body) for body in bodies])
    assert (plan.followers, plan.leaders) == (13, 7)
    assert plan.followers_of(0) == [7, 14]


def test_no_duplicates_costs_nothing_after_finish() -> None:
    rng = random.Random(1)
    groups = RequestGroups()
    for row in range(1000):
        assert groups.add(rng.randbytes(16)) == row
    assert len(groups) == 1000
    assert groups.nbytes == 16 * 1000  # two 8-byte halves per row while scanning
    plan = groups.finish()
    assert groups.nbytes == 0  # the keys are freed
    assert (plan.followers, plan.leaders, plan.nbytes) == (0, 0, 0)
    assert plan.leader_of(5) is None
    assert plan.followers_of(5) == []


def test_tiny_inputs() -> None:
    assert plan_for([]).rows == 0
    one = plan_for([b"k" * 16])
    assert (one.rows, one.followers, one.leader_of(0)) == (1, 0, None)
    two = check([b"k" * 16, b"k" * 16])
    assert repr(two) == "DedupPlan(rows=2, followers=1)"


def test_misuse() -> None:
    groups = RequestGroups()
    with pytest.raises(ValueError, match="16 bytes"):
        groups.add(b"short")
    groups.finish()
    with pytest.raises(ValueError, match="finish"):
        groups.add(b"k" * 16)
    with pytest.raises(ValueError, match="finish"):
        groups.finish()


def test_unique_rows_are_never_grouped() -> None:
    groups = RequestGroups()
    key = b"s" * 16
    assert groups.add(key) == 0
    assert groups.add_unique() == 1  # the same request, sampled: sent again on purpose
    assert groups.add_unique() == 2
    assert groups.add(key) == 3
    plan = groups.finish()
    assert [plan.leader_of(row) for row in range(4)] == [None, None, None, 0]
    assert plan.followers_of(1) == []
