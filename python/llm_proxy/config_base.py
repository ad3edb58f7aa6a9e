"""What every config section shares: the error type and the strict Struct base."""

from __future__ import annotations

import msgspec

MiB = 1024 * 1024


class ConfigError(Exception):
    """A config that cannot be used; the message names the bad field's path."""


class Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A config section: unknown fields are errors that name their path."""
