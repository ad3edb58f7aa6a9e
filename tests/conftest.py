"""Fixtures that start real servers (the mock upstream, the gateway) as subprocesses."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
