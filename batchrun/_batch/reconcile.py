"""After a crash (or a lost answer): find what the provider did that we did not hear of.

The journal (`batchrun._batch.steps`) says where each shard stood. Only one step can
leave the provider knowing more than we do: a ``create`` whose answer never came
back (the process was killed mid-call, or the connection dropped after the server
made the batch). Every batch is created with metadata naming the run and the shard
(`batchrun._batch.protocol.metadata_for`), so the list of batches, newest first,
tells whether that create took effect. A slow create can take effect after its
answer was given up on, so the wait counts from then, not from when it was sent:
the shard may be created again only when a list *made* `CREATE_GRACE_S` after the
answer was lost (or after a restart found it unanswered) shows no batch of that
shard. A list started earlier proves nothing, however late it returns: a shard is
never submitted twice.

The other steps need no finding: an ``upload`` without ``uploaded`` is uploaded
again (an extra file is never billed; `batchrun._batch.finish` deletes what it can
name), and a batch whose id we recorded is simply retrieved.

    >>> creating_decision(found=False, lost_at=100.0, listed_at=105.0)
    'wait'
    >>> creating_decision(found=False, lost_at=100.0, listed_at=111.0)
    'create_again'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from batchrun._batch.client import BatchClient
from batchrun._batch.protocol import is_shard_of

CREATE_GRACE_S = 10.0
"""How long after the answer to a create was lost its batch may still appear."""
LIST_SLACK_S = 3600.0
"""Listing goes back this far before the oldest create looked for (clocks differ)."""
MAX_LIST_PAGES = 100


def creating_decision(
    *, found: bool, lost_at: float | None, listed_at: float, grace: float = CREATE_GRACE_S
) -> str:
    """What to do with a shard whose create was sent but never answered, from a list
    of the batches started at ``listed_at``: ``adopt`` the batch found, ``wait`` (it
    may still appear: the answer is not given up on, or the list began within
    ``grace`` of ``lost_at``), or ``create_again``."""
    if found:
        return "adopt"
    if lost_at is None or listed_at - lost_at < grace:
        return "wait"
    return "create_again"


def match_shards(
    batches: Iterable[Mapping[str, Any]], run_id: str, shards: Iterable[int]
) -> dict[int, Mapping[str, Any]]:
    """shard -> the listed batch whose metadata names it (the first, i.e. newest)."""
    wanted = set(shards)
    found: dict[int, Mapping[str, Any]] = {}
    for batch in batches:
        for shard in list(wanted):
            if is_shard_of(batch.get("metadata"), run_id, shard):
                found[shard] = batch
                wanted.discard(shard)
        if not wanted:
            break
    return found


async def find_batches(
    client: BatchClient, run_id: str, sent_at: Mapping[int, float]
) -> dict[int, Mapping[str, Any]]:
    """Look through the provider's batches (newest first, page by page) for the ones
    created for these shards (shard -> when its create was sent, Unix time). Stops
    once every shard is found or the list is older than the oldest create."""
    if not sent_at:
        return {}
    oldest = min(sent_at.values()) - LIST_SLACK_S
    found: dict[int, Mapping[str, Any]] = {}
    after: str | None = None
    for _ in range(MAX_LIST_PAGES):
        page = await client.list_batches(after=after)
        data = [b for b in page.get("data") or () if isinstance(b, Mapping)]
        found.update(match_shards(data, run_id, set(sent_at) - set(found)))
        if len(found) == len(sent_at) or not page.get("has_more") or not data:
            break
        created = data[-1].get("created_at")
        if isinstance(created, int | float) and created < oldest:
            break
        after = str(data[-1].get("id"))
    return found


__all__ = ["CREATE_GRACE_S", "creating_decision", "find_batches", "match_shards"]
