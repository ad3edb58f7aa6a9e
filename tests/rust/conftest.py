"""Fixtures of the Rust-core parity tests; the references are in tests/support/reference.py."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", params=["o200k_base", "cl100k_base"])
def encoding_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)
