"""Fixtures for the hardening tests (imported by them; tests/conftest.py is the lead's).

pytest_plugins = ["tests.conftest_fault"]   # in a test module
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.faultserver import FaultServer


@pytest.fixture(scope="module")
def shared_fault_server() -> Iterator[FaultServer]:
    """One fault server per test module (starting a thread per test adds up)."""
    with FaultServer() as srv:
        yield srv


@pytest.fixture
def fault_server(shared_fault_server: FaultServer) -> FaultServer:
    """The module's fault server with scripts and counters cleared."""
    shared_fault_server.reset()
    return shared_fault_server
