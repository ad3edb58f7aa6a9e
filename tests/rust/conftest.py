"""Python tiktoken built from the very rank files compiled into the Rust core (no download)."""

from __future__ import annotations

import functools
import json
import subprocess
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
import tiktoken
import tiktoken.load
import tiktoken_ext.openai_public as openai_public

ROOT = Path(__file__).resolve().parents[2]


@functools.cache
def tiktoken_rs_assets() -> Path:
    """The assets dir of the tiktoken-rs crate the extension was built with."""
    meta = json.loads(
        subprocess.run(
            ["cargo", "metadata", "--format-version", "1", "--offline"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    )
    (package,) = [p for p in meta["packages"] if p["name"] == "tiktoken-rs"]
    return Path(package["manifest_path"]).parent / "assets"


@functools.cache
def python_encoding(name: str) -> tiktoken.Encoding:
    """tiktoken's own constructor arguments for `name`, with the ranks read from local files."""
    path = tiktoken_rs_assets() / f"{name}.tiktoken"

    def local_ranks(*_args: Any, **_kwargs: Any) -> dict[bytes, int]:
        return tiktoken.load.load_tiktoken_bpe(str(path))

    with mock.patch.object(openai_public, "load_tiktoken_bpe", local_ranks):
        spec = getattr(openai_public, name)()
    return tiktoken.Encoding(
        name=spec["name"],
        pat_str=spec["pat_str"],
        mergeable_ranks=spec["mergeable_ranks"],
        special_tokens=spec["special_tokens"],
    )


@pytest.fixture(scope="session", params=["o200k_base", "cl100k_base"])
def encoding_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)
