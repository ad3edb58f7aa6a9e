"""Fixtures that start real servers (the mock upstream, the gateway) as subprocesses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.redis import delete_prefix, key_prefix, redis_url
from tests.support.servers import (
    Gateway,
    MockUpstream,
    standard_config,
    start_gateway,
    start_mock_upstream,
    stop_process,
)


@pytest.fixture(scope="session")
def mock_upstream() -> Iterator[MockUpstream]:
    upstream = start_mock_upstream()
    yield upstream
    stop_process(upstream.proc)


@pytest.fixture(scope="session")
def gateway(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gateway]:
    gw = start_gateway(standard_config(mock_upstream), tmp_path_factory.mktemp("gw"))
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis for the module's tests: REDIS_URL, or a private server (see support/redis.py)."""
    yield from redis_url(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def prefix(redis_server: str) -> Iterator[str]:
    """A key prefix of the test's own in `redis_server`, its keys deleted afterwards."""
    name = key_prefix()
    yield name
    delete_prefix(redis_server, name)
