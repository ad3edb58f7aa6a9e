"""The `authenticate` stage: the caller's virtual key, checked against the in-process table.

Per call: one dict lookup by public id, one SHA-256 of the secret compared in constant time,
the expiry and blocked flags, the endpoint and the model (the verdict per model is kept on
the entry). No database, no await.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Any

from ..calls import Call, Headers
from ..errors import GatewayError
from .model import KEY_PREFIX
from .table import KeyEntry, KeyTable

_sha256 = hashlib.sha256
_compare = hmac.compare_digest
_time = time.time


def _unauthorized(message: str) -> GatewayError:
    return GatewayError(401, message, code="invalid_api_key")


_MISSING = (
    "You didn't provide an API key. Send it as `Authorization: Bearer sk-lp-...` "
    "(or `x-api-key` / `api-key`, or gRPC `authorization` metadata)."
)


def _bearer(headers: Headers) -> str | None:
    value = headers.get("authorization")
    if value:
        text = str(value)
        if text[:7].lower() == "bearer ":
            return text[7:].strip()
        return text.strip()
    # Anthropic-style clients send `x-api-key`, Azure OpenAI clients `api-key`.
    value = headers.get("x-api-key") or headers.get("api-key")
    return str(value).strip() if value else None


class Authenticate:
    """Sets the call's key id and team, or refuses it (401 / 403) naming the public id."""

    name = "authenticate"

    def __init__(self, table: KeyTable) -> None:
        self.table = table

    def identify(self, headers: Headers) -> KeyEntry:
        """The caller's valid key, or a 401 that never repeats the secret."""
        text = _bearer(headers)
        if not text:
            raise _unauthorized(_MISSING)
        if not text.startswith(KEY_PREFIX):
            raise _unauthorized("Incorrect API key provided: it is not an `sk-lp-` key.")
        public_id, sep, secret = text[6:].partition("-")
        entry = self.table.entries.get(public_id) if sep and secret else None
        if entry is None:
            raise _unauthorized(f"Incorrect API key provided: no key `{public_id}`.")
        digest = _sha256(secret.encode()).digest()
        now = _time()
        if not _compare(digest, entry.digest) and not (
            entry.previous is not None
            and now < entry.previous_until
            and _compare(digest, entry.previous)
        ):
            raise _unauthorized(f"Incorrect API key provided for key `{public_id}`.")
        if entry.blocked:
            raise _unauthorized(f"The API key `{public_id}` is blocked.")
        if now >= entry.expires_at:
            raise _unauthorized(f"The API key `{public_id}` has expired.")
        self.table.used[public_id] = now
        return entry

    def __call__(self, call: Call) -> None:
        entry = self.identify(call.headers)
        # Set before the checks below, so a refused call is logged against its key too.
        call.key_id = entry.id
        call.team = entry.team
        if entry.endpoints is not None and call.endpoint not in entry.endpoints:
            raise GatewayError(
                403,
                f"The API key `{entry.id}` may not call the `{call.endpoint}` endpoint.",
                code="endpoint_not_allowed",
            )
        if not entry.allows(call.model):
            raise GatewayError(
                403,
                f"The API key `{entry.id}` may not use the model `{call.model}`.",
                param="model",
                code="model_not_allowed",
            )


def key_info(
    entry: KeyEntry, models: list[str], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """What `GET /v1/key/info` tells a caller about its own key; `extra` is merged in."""
    from ..limits.spec import to_builtins
    from .fields import iso

    record = entry.record
    info = {
        "id": record.id,
        "alias": record.alias,
        "team": record.team,
        "project": record.project,
        "allowed_models": record.allowed_models,
        "models": entry.allowed_models(models),
        "allowed_endpoints": record.allowed_endpoints,
        "expires_at": iso(record.expires_at),
        "tags": record.tags,
        "metadata": record.metadata,
        "created_at": iso(record.created_at),
        "limits": to_builtins(entry.limits),
        "budgets": to_builtins(entry.budgets),
        "team_limits": to_builtins(entry.team_limits),
        "team_budgets": to_builtins(entry.team_budgets),
        "project_limits": to_builtins(entry.project_limits),
        "project_budgets": to_builtins(entry.project_budgets),
    }
    if extra:
        info.update(extra)
    return info
