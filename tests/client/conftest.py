"""Fixtures: a fake prunekit API over real HTTP, and clients with fast retries."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from prunekit.client import PrunekitClient
from tests.client.prunekit_fake_api import FAST_RETRY, GOOD_KEY, FakeApi, FakeServer, SleepLog


@pytest.fixture()
def fake() -> Iterator[FakeServer]:
    server = FakeServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture()
def api(fake: FakeServer) -> FakeApi:
    return fake.api


@pytest.fixture()
def sleeps() -> SleepLog:
    return SleepLog()


@pytest.fixture()
def client(fake: FakeServer, sleeps: SleepLog) -> Iterator[PrunekitClient]:
    with PrunekitClient(fake.url, GOOD_KEY, timeout=10, retry=FAST_RETRY, sleep=sleeps) as c:
        yield c


@pytest.fixture()
def dead_url() -> str:
    """A URL where nothing listens (a port we bound and released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"
