"""The storage layer of run directories on object storage (issue 29): conditional
creates and replaces (S3 against moto's server, and a local directory with the same
rules), numbered segments two writers race for, the run's lease, and a shard's
state rebuilt from what was committed."""

from __future__ import annotations

import json
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import batchrun
from batchrun._output.journal import read_journal
from batchrun._output.runlease import RunLease
from batchrun._output.segments import (
    CommitInterval,
    SegmentLog,
    SegmentWriter,
    ShardState,
    decode_segment,
)
from batchrun._output.store import Exists, LocalStore, ObjectStore, S3Store, Stale, open_store
from batchrun.errors import LeaseHeld, LeaseLost, RunDirError, SegmentTaken
from batchrun.sim import SimConfig, SimThread
from tests.objectstores import BACKENDS, Backend, backend_of
from tests.s3server import S3

pytest_plugins = ["tests.conftest_s3", "tests.conftest_stores"]  # s3, gcs, azure


@pytest.fixture(params=["local", *BACKENDS])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    """A local directory, S3 (moto), GCS (fake-gcs-server), Azure Blob (Azurite)."""
    if request.param == "local":
        return LocalStore(str(tmp_path / "run"))
    backend = backend_of(request, request.param)
    return backend.store(backend.location("runs/a"))


class Clock:
    """Wall-clock seconds a test moves by hand."""

    def __init__(self, now: float = 1_767_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def race(*calls: Any) -> list[Any]:
    """Run the calls at once (a barrier releases them together); each one's result or
    the exception it raised."""
    barrier = threading.Barrier(len(calls))
    out: list[Any] = [None] * len(calls)

    def one(i: int) -> None:
        barrier.wait()
        try:
            out[i] = calls[i]()
        except Exception as exc:
            out[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return out


# -- the store's two conditional writes -------------------------------------------------------
def test_create_happens_once_and_replace_only_over_the_version_read(store: ObjectStore) -> None:
    first = store.create("a/x.json", b"one")
    with pytest.raises(Exists):
        store.create("a/x.json", b"two")
    got = store.get("a/x.json")
    assert got is not None and got.data == b"one" and got.etag == first
    second = store.replace("a/x.json", b"three", first)
    with pytest.raises(Stale):
        store.replace("a/x.json", b"four", first)  # a version no longer there
    got = store.get("a/x.json")
    assert got is not None and (got.data, got.etag) == (b"three", second)
    with pytest.raises(Stale):
        store.replace("a/none.json", b"x", first)
    assert store.get("a/none.json") is None
    store.create("a/y.json", b"")
    store.create("b/z.json", b"")
    assert store.keys("a/") == ["a/x.json", "a/y.json"]


def test_s3_store_errors_are_run_dir_errors(s3: S3) -> None:
    missing = S3Store("s3://no-such-bucket-here/runs/a", s3.client)
    with pytest.raises(RunDirError, match=r"s3://no-such-bucket-here/runs/a/k: cannot write it"):
        missing.create("k", b"x")
    assert isinstance(open_store("s3://b/runs/a"), S3Store)
    with pytest.raises(batchrun.ConfigError, match="a run directory is a local path, s3://"):
        open_store("ftp://host/runs/a")


def test_gcs_and_azure_errors_are_run_dir_errors(gcs: Backend, azure: Backend) -> None:
    """A missing bucket (container) is named with the store's status, nothing more."""
    from batchrun._output.azurestore import AzureStore
    from batchrun._output.gcsstore import GcsStore

    assert isinstance(open_store(gcs.location("runs/a")), GcsStore)  # from the environment
    assert isinstance(open_store(azure.location("runs/a")), AzureStore)
    azure_gone = "abfs://nosuch@devstoreaccount1.dfs.core.windows.net/r"
    for backend, gone in ((gcs, "gs://no-such-bucket/runs/a"), (azure, azure_gone)):
        store = backend.store(gone)
        with pytest.raises(RunDirError, match=rf"^{gone}/k: cannot write it: \w+ \(HTTP 404\)$"):
            store.create("k", b"x")
        with pytest.raises(RunDirError, match="cannot list it"):
            store.keys("")


def test_without_the_sdk_the_extra_to_install_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import google.cloud

    monkeypatch.setitem(sys.modules, "google.cloud.storage", None)
    monkeypatch.delattr(google.cloud, "storage", raising=False)  # imported by an earlier test
    monkeypatch.setitem(sys.modules, "azure.storage.blob", None)
    with pytest.raises(batchrun.ConfigError, match=r"pip install 'batchrun\[gcs\]'"):
        open_store("gs://bucket/runs/a")
    with pytest.raises(batchrun.ConfigError, match=r"pip install 'batchrun\[azure\]'"):
        open_store("abfs://data@acct.dfs.core.windows.net/runs/a")


def test_gcs_credentials_come_from_google_application_credentials(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No emulator: the client's credentials are the service account the standard
    variable names (nothing is sent: the token is fetched at the first request)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from batchrun._output.gcsstore import GcsStore

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = {
        "type": "service_account", "project_id": "p", "private_key_id": "k1",
        "private_key": pem, "client_email": "runner@p.iam.gserviceaccount.com",
        "client_id": "1", "token_uri": "https://oauth2.googleapis.com/token",
    }  # fmt: skip
    (tmp_path / "sa.json").write_text(json.dumps(account))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "sa.json"))
    store = GcsStore("gs://bucket/runs/a")
    assert store._client._credentials.service_account_email == account["client_email"]
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(batchrun.ConfigError, match="no Google Cloud credentials"):
        GcsStore("gs://bucket/runs/a")


def test_an_azure_location_names_its_account(monkeypatch: pytest.MonkeyPatch) -> None:
    from batchrun._output.azurestore import AzureStore

    for name in ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(batchrun.ConfigError, match="names no account"):
        AzureStore("abfs://data/runs/a")
    monkeypatch.setenv("AZURE_STORAGE_ACCOUNT_KEY", "c2VjcmV0LWtleS1vZi10d28=")
    store = AzureStore("abfss://data@two.dfs.core.windows.net/runs/a")
    assert store._container.url == "https://two.blob.core.windows.net/data"  # the blob endpoint
    assert store._container.credential.account_name == "two"
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", "AccountName=one;AccountKey=a2V5")
    with pytest.raises(batchrun.ConfigError, match="for another account") as caught:
        AzureStore("abfs://data@two.dfs.core.windows.net/runs/a")
    assert "a2V5" not in str(caught.value)


# -- segments ---------------------------------------------------------------------------------
def test_two_writers_racing_for_a_segment_one_wins(store: ObjectStore) -> None:
    first = SegmentLog(store, "shards/00003", owner="node-a:11:aaaa")
    second = SegmentLog(store, "shards/00003", owner="node-b:22:bbbb")
    for number in range(8):
        mine, theirs = b'{"custom_id": "a"}\n', b'{"custom_id": "b"}\n'
        out = race(
            lambda n=number, data=mine: first.commit(n, data, b""),
            lambda n=number, data=theirs: second.commit(n, data, b""),
        )
        won = [o for o in out if not isinstance(o, Exception)]
        lost = [o for o in out if isinstance(o, Exception)]
        assert len(won) == 1 and len(lost) == 1, out
        assert isinstance(lost[0], SegmentTaken)
        assert lost[0].owner == won[0].owner  # the loser names the winner
        assert str(lost[0]).endswith(
            f"shards/00003/segments/{number:08d}.jsonl: segment already committed by {won[0].owner}"
        )
        stored = store.get(first.key(number))
        assert stored is not None
        header, results, _ = decode_segment(stored.data, "k")
        assert header.owner == won[0].owner  # written once, by the winner
        assert results == (mine if won[0].owner == first.owner else theirs)
    assert first.numbers() == list(range(8))


def test_a_retried_create_that_had_landed_is_this_writers_segment(tmp_path: Path) -> None:
    """An SDK retries a create whose answer was lost (GCS and Azure retry transient
    errors by themselves): the retry is refused, but the segment holds this attempt's
    bytes, so the commit stands; another writer's segment is still SegmentTaken."""

    class LostAnswer(LocalStore):
        def create(self, key: str, data: bytes) -> str:
            super().create(key, data)  # the first try landed...
            raise Exists(key)  # ...and its retry was refused

    store = LostAnswer(str(tmp_path / "run"))
    log = SegmentLog(store, "", owner="node-a:1:aaaa")
    assert log.commit(0, b'{"custom_id": "a"}\n', b"").owner == "node-a:1:aaaa"
    LocalStore(store.directory).create("segments/00000001.jsonl", b"not mine")
    with pytest.raises(SegmentTaken):
        SegmentLog(LocalStore(store.directory), "", owner="w").commit(1, b"", b"")


def test_a_rebuilt_state_equals_what_was_committed(store: ObjectStore, tmp_path: Path) -> None:
    log = SegmentLog(store, "shards/00001", owner="w1")
    clock = Clock(0.0)
    writer = SegmentWriter(log, log.rebuild(), CommitInterval(rows=4, seconds=5.0), clock=clock)
    results = [b'{"custom_id": "r%d"}\n' % i for i in range(10)]
    errors = [b'{"custom_id": "e%d"}\n' % i for i in range(2)]
    for i, line in enumerate(results):
        writer.add(result=line)
        if i == 5:
            writer.add(error=errors[0])
        writer.commit_if_due()
        assert writer.pending_rows < 4  # never more than one segment waits
    clock.now = 6.0  # the oldest waiting line is older than the interval's seconds
    assert writer.pending_rows == 3 and writer.commit_if_due() is not None
    writer.add(error=errors[1])  # then the worker dies: this line was never committed
    lost = writer.pending_rows
    state = SegmentLog(store, "shards/00001", owner="w2").rebuild()
    assert len(state.segments) == 3 and state.next_number == 3
    assert state.results == b"".join(results)
    assert state.errors == errors[0]
    assert lost == 1 and state.result_lines + state.error_lines == writer.committed_rows == 11
    # the next writer goes on after the last committed segment
    again = SegmentWriter(SegmentLog(store, "shards/00001", owner="w2"), state)
    again.add(error=errors[1])
    assert again.flush() is not None and again.next_number == 4
    assert SegmentLog(store, "shards/00001").rebuild().errors == b"".join(errors)
    with pytest.raises(ValueError, match="whole lines"):
        again.add(result=b'{"torn": ')


def test_a_crash_costs_the_rows_not_yet_committed(tmp_path: Path) -> None:
    """A shard's real result lines committed as segments; the worker dies between two
    commits; the shard is started again on 'another node' from the segments alone.
    The rows paid twice (the server's count) are exactly the lines that were waiting
    for their segment: fewer than one commit interval."""
    texts = [f"q{i}" for i in range(30)]
    lines = [
        json.dumps({"model": "m", "messages": [{"role": "user", "content": t}]}) + "\n"
        for t in texts
    ]
    head, whole = tmp_path / "head.jsonl", tmp_path / "whole.jsonl"
    head.write_text("".join(lines[:27]))  # the rows the first worker got to
    whole.write_text("".join(lines))
    kwargs: dict[str, Any] = {"auth": "none", "quiet": True}
    with SimThread(SimConfig(record_bodies=100)) as sim:
        first = tmp_path / "node-a"
        assert batchrun.run(str(head), first, base_url=sim.base_url, **kwargs).status == "complete"
        assert sim.stats.requests == 27
        store = LocalStore(str(tmp_path / "bucket"))
        writer = SegmentWriter(SegmentLog(store, "shards/00000", owner="a"), ShardState(),
                               CommitInterval(rows=7))  # fmt: skip
        answered = (first / "results.jsonl").read_bytes().splitlines(keepends=True)
        for line in answered:
            writer.add(result=line)  # as the local journal takes each line
            writer.commit_if_due()
        exposed = writer.pending_rows  # the worker dies here
        assert writer.committed_rows == 21 and exposed == 6 < writer.interval.rows
        waiting = {json.loads(line)["custom_id"] for line in answered[21:]}
        second = tmp_path / "node-b"
        SegmentLog(store, "shards/00000", owner="b").rebuild().write_journal(str(second))
        assert len(read_journal(str(second)).done) == 21
        again = batchrun.run(str(whole), second, base_url=sim.base_url, **kwargs)
        assert again.status == "complete" and again.summary["requests"]["succeeded"] == 30
        sent_again = sim.stats.requests - 27
        assert sent_again == 9  # the 3 rows never sent, and the 6 that were exposed
        twice = Counter(b["messages"][0]["content"] for b in sim.stats.bodies)
        paid_twice = {f"row-{texts.index(t) + 1}" for t, n in twice.items() if n == 2}
        assert paid_twice == waiting
        assert sum(twice.values()) == 36


# -- the lease ----------------------------------------------------------------------------------
def test_a_live_lease_refuses_a_second_taker_naming_its_owner(store: ObjectStore) -> None:
    clock = Clock()
    holder = RunLease(store, owner="node-a:1:aaaa", ttl_s=30, grace_s=5, clock=clock)
    record = holder.acquire()
    assert record.generation == 1 and record.expires_at == clock.now + 30
    other = RunLease(store, owner="node-b:2:bbbb", ttl_s=30, grace_s=5, clock=clock)
    clock.now += 20
    holder.renew()  # the heartbeat pushes the expiry on
    clock.now += 25  # past the first expiry, not the renewed one
    with pytest.raises(LeaseHeld) as caught:
        other.acquire()
    assert caught.value.owner == "node-a:1:aaaa"
    assert "is held by node-a:1:aaaa (its lease expires in 5 s" in str(caught.value)
    clock.now += 9  # expired, but within the grace allowed for clock skew
    with pytest.raises(LeaseHeld):
        other.acquire()
    assert holder.acquire().owner == "node-a:1:aaaa"  # its own owner may take it again


def test_an_expired_lease_is_taken_over_and_the_old_owner_stops(store: ObjectStore) -> None:
    clock = Clock()
    old = RunLease(store, owner="old", ttl_s=30, grace_s=5, clock=clock)
    old.acquire()
    clock.now += 36  # the old owner missed its heartbeats (a dead node)
    new = RunLease(store, owner="new", ttl_s=30, grace_s=5, clock=clock)
    record = new.acquire()
    assert record.owner == "new" and record.generation == 2
    with pytest.raises(LeaseLost, match="taken over by new"):
        old.renew()  # a zombie learns it must stop writing
    new.renew()
    new.release()  # released: the next run takes it at once
    third = RunLease(store, owner="third", clock=clock)
    assert third.acquire().generation == 3


def test_two_takers_of_an_expired_lease_one_wins(store: ObjectStore) -> None:
    clock = Clock()
    RunLease(store, owner="dead", ttl_s=10, grace_s=0, clock=clock).acquire()
    clock.now += 11
    for round_ in range(5):
        takers = [RunLease(store, owner=f"t{round_}-{i}", ttl_s=10, grace_s=0, clock=clock)
                  for i in range(2)]  # fmt: skip
        out = race(takers[0].acquire, takers[1].acquire)
        won = [o for o in out if not isinstance(o, Exception)]
        assert len(won) == 1, out
        lost = next(o for o in out if isinstance(o, Exception))
        assert isinstance(lost, LeaseHeld) and lost.owner == won[0].owner
        clock.now += 11  # and the winner dies too


@pytest.fixture
def no_sleep() -> Iterator[list[float]]:
    yield []


def test_a_409_conflict_is_tried_again(no_sleep: list[float]) -> None:
    class Busy(Exception):
        response = {
            "Error": {"Code": "ConditionalRequestConflict"},
            "ResponseMetadata": {"HTTPStatusCode": 409},
        }

    class Client:
        calls = 0

        def put_object(self, **kwargs: Any) -> dict[str, str]:
            self.calls += 1
            if self.calls < 3:
                raise Busy()
            return {"ETag": '"e"'}

    client = Client()
    store = S3Store("s3://b/p", client, sleep=no_sleep.append)
    assert store.create("k", b"x") == '"e"'
    assert client.calls == 3 and no_sleep == [0.05, 0.1]
