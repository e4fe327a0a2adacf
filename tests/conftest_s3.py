"""The local S3 fixture (tests/s3server.py): one moto server per test module.

pytest_plugins = ["tests.conftest_s3"]   # in a test module
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.s3server import S3, local_s3


@pytest.fixture(scope="module")
def s3() -> Iterator[S3]:
    with local_s3() as server:
        yield server
