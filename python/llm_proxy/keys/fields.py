"""Validation of the fields a client sends for a key, team or project (admin API and CLI)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import msgspec

from ..limits.spec import SpecError, parse_budgets, parse_limits
from .model import ENDPOINTS

_MAX_METADATA = 8192

KEY_FIELDS = (
    "alias",
    "team",
    "project",
    "allowed_models",
    "allowed_endpoints",
    "expires_at",
    "blocked",
    "tags",
    "metadata",
    "limits",
    "budgets",
)
GROUP_FIELDS = ("name", "allowed_models", "metadata", "limits", "budgets")
SPEC_FIELDS = ("limits", "budgets")


class InvalidField(Exception):
    """A field that cannot be used; `field` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_time(value: Any, field: str = "expires_at") -> float | None:
    """An ISO 8601 time (`2027-01-01T00:00:00Z`), Unix seconds, or null."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise InvalidField(field, "must be an ISO 8601 time, Unix seconds, or null")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise InvalidField(field, "must be finite")
        return float(value)
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidField(
                field, f"`{value}` is not an ISO 8601 time such as 2027-01-01T00:00:00Z"
            ) from None
    else:
        raise InvalidField(field, "must be an ISO 8601 time, Unix seconds, or null")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def _strings(field: str, value: Any) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidField(field, "must be a list of non-empty strings")
    return list(value)


def _optional_name(field: str, value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 200:
        raise InvalidField(field, "must be a non-empty string of at most 200 characters, or null")
    return value


def _metadata(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidField("metadata", "must be a JSON object")
    if len(msgspec.json.encode(value)) > _MAX_METADATA:
        raise InvalidField("metadata", f"must be at most {_MAX_METADATA} bytes of JSON")
    return dict(value)


def spec_field(field: str, value: Any) -> Any:
    """`limits` (a Limits or None) or `budgets` (a list of Budget); null clears either."""
    try:
        if field == "limits":
            return parse_limits(value)
        budgets = parse_budgets(value)
    except SpecError as exc:
        raise InvalidField(field, str(exc)) from None
    for budget in budgets:
        # JSON text cannot hold an infinite amount, so the store could not read it back.
        if not math.isfinite(budget.usd):
            raise InvalidField(field, "usd must be a finite number")
    return budgets


def key_fields(data: Any) -> dict[str, Any]:
    """The key fields in `data`, checked; unknown fields are refused by name."""
    if not isinstance(data, dict):
        raise InvalidField("body", "must be a JSON object")
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name not in KEY_FIELDS:
            allowed = ", ".join(KEY_FIELDS)
            raise InvalidField(name, f"unknown field (known: {allowed})")
        if name in ("alias", "team", "project"):
            out[name] = _optional_name(name, value)
        elif name == "allowed_models" or name == "tags":
            out[name] = _strings(name, value)
        elif name == "allowed_endpoints":
            endpoints = _strings(name, value)
            for endpoint in endpoints:
                if endpoint not in ENDPOINTS:
                    raise InvalidField(
                        name, f"unknown endpoint `{endpoint}` (known: {', '.join(ENDPOINTS)})"
                    )
            out[name] = endpoints
        elif name == "expires_at":
            out[name] = parse_time(value)
        elif name == "blocked":
            if not isinstance(value, bool):
                raise InvalidField(name, "must be true or false")
            out[name] = value
        elif name in SPEC_FIELDS:
            out[name] = spec_field(name, value)
        else:
            out[name] = _metadata(value)
    return out


def group_fields(data: Any, *, creating: bool) -> dict[str, Any]:
    """The fields of a team or project in `data`, checked."""
    if not isinstance(data, dict):
        raise InvalidField("body", "must be a JSON object")
    out: dict[str, Any] = {}
    for name, value in data.items():
        if name not in GROUP_FIELDS or (name == "name" and not creating):
            allowed = ", ".join(GROUP_FIELDS if creating else GROUP_FIELDS[1:])
            raise InvalidField(name, f"unknown or read-only field (allowed: {allowed})")
        if name == "name":
            if not isinstance(value, str) or not value or len(value) > 200 or "/" in value:
                raise InvalidField(name, "must be a non-empty string without `/`")
            out[name] = value
        elif name == "allowed_models":
            out[name] = _strings(name, value)
        elif name in SPEC_FIELDS:
            out[name] = spec_field(name, value)
        else:
            out[name] = _metadata(value)
    if creating and "name" not in out:
        raise InvalidField("name", "is required")
    return out
