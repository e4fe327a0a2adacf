"""The sending phase's young-generation threshold: raised, shared, put back."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from batchrun._engine.gcpause import LEAST, MOST, fewer_collections, threshold_for


@pytest.fixture(autouse=True)
def default_thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)
    yield
    gc.set_threshold(*saved)


def test_threshold_grows_with_concurrency_within_bounds() -> None:
    assert threshold_for(16) == LEAST
    assert threshold_for(1024) == 102_400
    assert threshold_for(100_000) == MOST


def test_raised_while_inside_and_put_back_after() -> None:
    with fewer_collections(50_000):
        assert gc.get_threshold() == (50_000, 10, 10)
    assert gc.get_threshold() == (700, 10, 10)


def test_put_back_after_an_error() -> None:
    with pytest.raises(RuntimeError), fewer_collections(50_000):
        raise RuntimeError("boom")
    assert gc.get_threshold() == (700, 10, 10)


def test_overlapping_runs_restore_when_the_last_leaves() -> None:
    outer = fewer_collections(50_000)
    inner = fewer_collections(80_000)
    outer.__enter__()
    inner.__enter__()
    assert gc.get_threshold()[0] == 50_000  # the first run's setting is shared
    outer.__exit__(None, None, None)
    assert gc.get_threshold()[0] == 50_000  # the other run still sends
    inner.__exit__(None, None, None)
    assert gc.get_threshold() == (700, 10, 10)


def test_a_users_choice_is_left_alone() -> None:
    gc.set_threshold(0)  # automatic collection off
    with fewer_collections(50_000):
        assert gc.get_threshold()[0] == 0
    assert gc.get_threshold()[0] == 0
    gc.set_threshold(90_000, 10, 10)  # already higher
    with fewer_collections(50_000):
        assert gc.get_threshold()[0] == 90_000
    assert gc.get_threshold()[0] == 90_000


def test_a_change_made_during_the_run_is_kept() -> None:
    with fewer_collections(50_000):
        gc.set_threshold(5_000, 10, 10)
    assert gc.get_threshold()[0] == 5_000
