"""Fixtures of the object-storage tests over every store (tests/objectstores.py): a
``backend`` parametrized over S3, GCS and Azure Blob, each a real local server.

pytest_plugins = ["tests.conftest_s3", "tests.conftest_stores"]   # in a test module
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.objectstores import (
    BACKENDS,
    Backend,
    azure_backend,
    azurite_server,
    backend_of,
    gcs_backend,
    gcs_server,
)


@pytest.fixture(scope="session")
def gcs_url() -> Iterator[str]:
    with gcs_server() as url:
        yield url


@pytest.fixture(scope="session")
def azurite_connection() -> Iterator[str | None]:
    with azurite_server() as connection:
        yield connection


@pytest.fixture(scope="module")
def gcs(gcs_url: str) -> Iterator[Backend]:
    with gcs_backend(gcs_url) as backend:
        yield backend


@pytest.fixture(scope="module")
def azure(azurite_connection: str | None) -> Iterator[Backend]:
    with azure_backend(azurite_connection) as backend:
        yield backend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Backend:
    """Each store in turn (S3 through the module's ``s3`` fixture)."""
    return backend_of(request, request.param)
