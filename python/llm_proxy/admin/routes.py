"""The admin API's routes: keys, teams and projects as JSON, guarded by the admin key.

Store calls run in a thread (asyncio.to_thread), never on the loop; a change reloads this
worker's table at once and is announced to the other instances (Redis, and the version the
others poll).
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs, unquote

import msgspec

from ..keys import KeyService
from ..keys.fields import InvalidField, group_fields, iso, key_fields
from ..keys.model import KeyRecord, TeamRecord
from ..keys.store import Conflict, GroupKind, KeyStore, NotFound
from .openapi import openapi_document
from .server import AdminRequest, AdminResponse

PREFIX = "/admin/v1/"
_encoder = msgspec.json.Encoder()
_TIMES = ("expires_at", "created_at", "updated_at", "last_used_at", "previous_expires_at")
_MAX_PAGE = 1000
DEFAULT_GRACE_S = 0.0


class AdminError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def response(self) -> AdminResponse:
        error = {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
        return AdminResponse(self.status, _encoder.encode({"error": error}))


def _invalid(field: str, message: str) -> AdminError:
    return AdminError(
        422, f"`{field}` {message}", type="invalid_request_error", param=field, code="invalid_field"
    )


def key_json(record: KeyRecord) -> dict[str, Any]:
    """A key as the admin API and the CLI show it: times in ISO 8601, no hashes."""
    data = record.public()
    for name in _TIMES:
        data[name] = iso(data[name])
    data["object"] = "key"
    return data


def group_json(record: TeamRecord, kind: str) -> dict[str, Any]:
    data = record.public()
    data["created_at"] = iso(record.created_at)
    data["updated_at"] = iso(record.updated_at)
    data["object"] = kind[:-1]
    return data


def _page(
    items: list[dict[str, Any]], limit: int, cursor: Callable[[dict[str, Any]], str]
) -> dict[str, Any]:
    has_more = len(items) > limit
    items = items[:limit]
    return {
        "object": "list",
        "data": items,
        "has_more": has_more,
        "next_cursor": cursor(items[-1]) if has_more and items else None,
    }


class AdminApi:
    """Answers one admin request; holds the worker's key service."""

    def __init__(
        self, keys: KeyService, deployments: Callable[[], dict[str, Any]] | None = None
    ) -> None:
        assert keys.store is not None and keys.admin_key is not None
        self.keys = keys
        # Each model group's deployments as this worker sees them (routing.status).
        self.deployments = deployments
        self.store: KeyStore = keys.store
        self._admin = keys.admin_key.encode()

    async def __call__(self, request: AdminRequest) -> AdminResponse:
        try:
            self._authorize(request)
            status, data = await self._route(request)
            if status == 204:
                return AdminResponse(204, b"")
            return AdminResponse(status, _encoder.encode(data))
        except AdminError as exc:
            return exc.response()
        except InvalidField as exc:
            return _invalid(exc.field, exc.message).response()
        except NotFound as exc:
            return AdminError(
                404, str(exc), type="invalid_request_error", code="not_found"
            ).response()
        except Conflict as exc:
            return AdminError(
                409, str(exc), type="invalid_request_error", code="conflict"
            ).response()

    def _authorize(self, request: AdminRequest) -> None:
        value = request.headers.get("authorization", "")
        token = value[7:].strip() if value[:7].lower() == "bearer " else ""
        if not token:
            raise AdminError(
                401,
                "The admin API needs the admin key: send `Authorization: Bearer <admin key>`.",
                type="authentication_error",
                code="invalid_admin_key",
            )
        if not hmac.compare_digest(token.encode(), self._admin):
            raise AdminError(
                401, "Incorrect admin key.", type="authentication_error", code="invalid_admin_key"
            )

    def _body(self, request: AdminRequest) -> Any:
        if not request.body:
            return {}
        try:
            return msgspec.json.decode(request.body)
        except msgspec.DecodeError as exc:
            raise AdminError(
                400, f"the body is not valid JSON: {exc}", type="invalid_request_error"
            ) from None

    async def _route(self, request: AdminRequest) -> tuple[int, Any]:
        path = request.path
        if not path.startswith(PREFIX):
            raise AdminError(
                404,
                f"unknown URL {request.method} {path}",
                type="invalid_request_error",
                code="unknown_url",
            )
        parts = [unquote(p) for p in path[len(PREFIX) :].split("/") if p]
        method = request.method
        if parts == ["openapi.json"] and method == "GET":
            return 200, openapi_document()
        if parts == ["deployments"] and self.deployments is not None:
            if method != "GET":
                raise _method(method, "GET")
            return 200, self.deployments()
        if parts and parts[0] == "keys":
            return await self._keys(method, parts[1:], request)
        if parts and parts[0] in ("teams", "projects"):
            kind: GroupKind = "teams" if parts[0] == "teams" else "projects"
            return await self._groups(kind, method, parts[1:], request)
        raise AdminError(
            404, f"unknown URL {method} {path}", type="invalid_request_error", code="unknown_url"
        )

    async def _changed(self) -> None:
        await asyncio.to_thread(self.keys.table.changed)

    def _query(self, request: AdminRequest) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(request.query).items()}

    def _limit(self, query: dict[str, str]) -> int:
        text = query.get("limit", "100")
        if not text.isdigit() or not 1 <= int(text) <= _MAX_PAGE:
            raise _invalid("limit", f"must be an integer from 1 to {_MAX_PAGE}")
        return int(text)

    async def _keys(self, method: str, rest: list[str], request: AdminRequest) -> tuple[int, Any]:
        store = self.store
        if not rest:
            if method == "POST":
                fields = key_fields(self._body(request))
                record, text = await asyncio.to_thread(store.create_key, fields)
                await self._changed()
                return 201, {**key_json(record), "key": text}
            if method == "GET":
                query = self._query(request)
                limit = self._limit(query)
                blocked = query.get("blocked")
                if blocked not in (None, "true", "false"):
                    raise _invalid("blocked", "must be true or false")
                records = await asyncio.to_thread(
                    store.list_keys,
                    after=query.get("after"),
                    limit=limit + 1,
                    team=query.get("team"),
                    project=query.get("project"),
                    alias=query.get("alias"),
                    blocked=None if blocked is None else blocked == "true",
                )
                return 200, _page([key_json(r) for r in records], limit, lambda k: str(k["id"]))
            raise _method(method, "GET, POST")
        key_id = rest[0]
        if len(rest) == 1:
            if method == "GET":
                return 200, key_json(await asyncio.to_thread(store.get_key, key_id))
            if method == "PATCH":
                fields = key_fields(self._body(request))
                record = await asyncio.to_thread(store.update_key, key_id, fields)
                await self._changed()
                return 200, key_json(record)
            if method == "DELETE":
                await asyncio.to_thread(store.delete_key, key_id)
                await self._changed()
                return 200, {"id": key_id, "object": "key", "deleted": True}
            raise _method(method, "GET, PATCH, DELETE")
        if rest[1:] == ["rotate"]:
            if method != "POST":
                raise _method(method, "POST")
            body = self._body(request)
            if not isinstance(body, dict) or set(body) - {"grace_period_s"}:
                raise _invalid(
                    "body", "takes only `grace_period_s` (seconds the old secret still works)"
                )
            grace = body.get("grace_period_s", DEFAULT_GRACE_S)
            if (
                isinstance(grace, bool)
                or not isinstance(grace, int | float)
                or not 0 <= grace <= 30 * 86400
            ):
                raise _invalid("grace_period_s", "must be a number of seconds from 0 to 2592000")
            record, text = await asyncio.to_thread(store.rotate_key, key_id, float(grace))
            await self._changed()
            return 200, {**key_json(record), "key": text}
        raise AdminError(
            404,
            f"unknown URL {method} {request.path}",
            type="invalid_request_error",
            code="unknown_url",
        )

    async def _groups(
        self, kind: GroupKind, method: str, rest: list[str], request: AdminRequest
    ) -> tuple[int, Any]:
        store = self.store
        if not rest:
            if method == "POST":
                fields = group_fields(self._body(request), creating=True)
                record = await asyncio.to_thread(store.create_group, kind, fields)
                await self._changed()
                return 201, group_json(record, kind)
            if method == "GET":
                query = self._query(request)
                limit = self._limit(query)
                records = await asyncio.to_thread(
                    store.list_groups, kind, after=query.get("after"), limit=limit + 1
                )
                return 200, _page(
                    [group_json(r, kind) for r in records], limit, lambda g: str(g["name"])
                )
            raise _method(method, "GET, POST")
        if len(rest) != 1:
            raise AdminError(
                404,
                f"unknown URL {method} {request.path}",
                type="invalid_request_error",
                code="unknown_url",
            )
        name = rest[0]
        if method == "GET":
            return 200, group_json(await asyncio.to_thread(store.get_group, kind, name), kind)
        if method == "PATCH":
            fields = group_fields(self._body(request), creating=False)
            record = await asyncio.to_thread(store.update_group, kind, name, fields)
            await self._changed()
            return 200, group_json(record, kind)
        if method == "DELETE":
            await asyncio.to_thread(store.delete_group, kind, name)
            await self._changed()
            return 200, {"name": name, "object": kind[:-1], "deleted": True}
        raise _method(method, "GET, PATCH, DELETE")


def _method(method: str, allowed: str) -> AdminError:
    return AdminError(
        405, f"method {method} not allowed here; use {allowed}", type="invalid_request_error"
    )
