"""A bad config fails at startup with the path of the bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from llm_proxy.config import ConfigError, load_config, parse_config

MOCK = {"providers": {"m": {"kind": "mock"}}, "models": {"x": {"provider": "m", "model": "x"}}}


@pytest.mark.parametrize(
    ("data", "path"),
    [
        ({**MOCK, "server": {"port": 70000}}, "$.server.port"),
        ({**MOCK, "server": {"workers": 0}}, "$.server.workers"),
        ({**MOCK, "server": {"colour": "blue"}}, "$.server"),
        ({**MOCK, "models": {"x": {"provider": "nope", "model": "x"}}}, "$.models.x.provider"),
        ({**MOCK, "providers": {"m": {"kind": "mock", "timeout_s": 0}}}, "$.providers.m.timeout_s"),
        ({**MOCK, "providers": {"m": {"kind": "carrier-pigeon"}}}, "$.providers.m"),
        ({**MOCK, "cache": {"backend": "floppy"}}, "$.cache.backend"),
    ],
)
def test_a_bad_field_is_named_by_its_path(data: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert f"`{path}" in str(info.value)


def test_a_config_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"must be a mapping"):
        parse_config(["not", "a", "mapping"])


def test_a_yaml_file_with_a_bad_field_names_it(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("server:\n  port: -1\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\$\.server\.port"):
        load_config(path)


def test_the_built_in_default_config_is_valid() -> None:
    config = load_config(None)
    assert config.models
    assert all(m.provider in config.providers for m in config.models.values())


def test_writer_priority_and_the_queue_bound_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("logging: {writer_priority: normal, queue_max_bytes: 1048576}\n")
    settings = load_config(str(path)).logging
    assert (settings.writer_priority, settings.queue_max_bytes) == ("normal", 1048576)
    path.write_text("logging: {writer_priority: realtime}\n")
    with pytest.raises(ConfigError, match="writer_priority"):
        load_config(str(path))
    path.write_text("logging: {queue_max_bytes: 0}\n")
    with pytest.raises(ConfigError, match="queue_max_bytes"):
        load_config(str(path))
