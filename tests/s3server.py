"""A local S3 for the object-storage tests: moto's server on a loopback port, reached
as a user reaches MinIO or R2 (``AWS_ENDPOINT_URL``, keys in ``AWS_*`` variables).
tests/conftest_s3.py holds the fixture that starts it.

moto needs no network: every request stays on 127.0.0.1. The keys are made-up,
distinctive strings, so a test can look for them in every file a run writes.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

ACCESS_KEY_ID = "AKIAMOTOTESTKEY4217"
SECRET_ACCESS_KEY = "moto-secret-Zq8vW3xL0pT6yN2rK9bH5jD1"
_buckets = itertools.count()


@dataclass
class S3:
    """The running server and a boto3 client for the tests' own puts."""

    url: str
    client: Any

    def bucket(self) -> str:
        """A new, empty bucket (one per test keeps tests apart)."""
        name = f"bkt-{os.getpid()}-{next(_buckets)}"
        self.client.create_bucket(Bucket=name)
        return name

    def put(self, bucket: str, key: str, data: bytes) -> str:
        """Write an object; its ETag."""
        return str(self.client.put_object(Bucket=bucket, Key=key, Body=data)["ETag"])


@contextmanager
def local_s3() -> Iterator[S3]:
    """moto's server on 127.0.0.1 and the ``AWS_*`` variables that reach it, for as long
    as the block runs."""
    import boto3  # the test extra installs moto[server] and boto3: never skipped
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    env = {
        "AWS_ENDPOINT_URL": url,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        # nothing from the machine's own AWS set-up, and no instance-metadata lookups
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        for name in ("AWS_ENDPOINT_URL_S3", "AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_REGION"):
            patch.delenv(name, raising=False)
        try:
            yield S3(url, boto3.client("s3", endpoint_url=url))
        finally:
            server.stop()
