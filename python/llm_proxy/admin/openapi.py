"""The admin API's OpenAPI 3.1 document, served at /admin/v1/openapi.json."""

from __future__ import annotations

from typing import Any

import msgspec

from ..limits.spec import Budget, Limits

_STRINGS = {"type": "array", "items": {"type": "string"}}
_TIME = {"type": ["string", "null"], "format": "date-time"}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": schema}}}


def _answer(status: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        status: {"description": text, **_json(schema)},
        "401": {"description": "no or wrong admin key", **_json(_ref("Error"))},
        "404": {"description": "unknown id", **_json(_ref("Error"))},
        "422": {"description": "a bad field, named in `param`", **_json(_ref("Error"))},
    }


def _group_paths(kind: str, schema: str) -> dict[str, Any]:
    one = kind[:-1]
    return {
        f"/admin/v1/{kind}": {
            "get": {
                "summary": f"List {kind} by name (cursor paging)",
                "parameters": [
                    {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                    {"name": "after", "in": "query", "schema": {"type": "string"}},
                ],
                "responses": _answer("200", _ref("List"), f"a page of {kind}"),
            },
            "post": {
                "summary": f"Create a {one}",
                "requestBody": _json(_ref(f"{schema}Fields")),
                "responses": _answer("201", _ref(schema), f"the {one}"),
            },
        },
        f"/admin/v1/{kind}/{{name}}": {
            "parameters": [
                {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {
                "summary": f"One {one}",
                "responses": _answer("200", _ref(schema), f"the {one}"),
            },
            "patch": {
                "summary": f"Change a {one}'s fields",
                "requestBody": _json(_ref(f"{schema}Fields")),
                "responses": _answer("200", _ref(schema), f"the {one}"),
            },
            "delete": {
                "summary": f"Delete a {one} (refused while keys use it)",
                "responses": _answer("200", {"type": "object"}, "deleted"),
            },
        },
    }


def _spec_schemas() -> tuple[dict[str, Any], dict[str, Any]]:
    """The fields `limits` and `budgets`, and the schemas they refer to (from limits/spec.py)."""
    (_, _), components = msgspec.json.schema_components(
        [Limits, Budget], ref_template="#/components/schemas/{name}"
    )
    fields = {
        "limits": {
            "anyOf": [_ref("Limits"), {"type": "null"}],
            "description": "rpm, tpm, max_parallel and per-model limits (docs/limits.md); "
            "null clears",
        },
        "budgets": {
            "anyOf": [{"type": "array", "items": _ref("Budget")}, {"type": "null"}],
            "description": "spend budgets in USD per period (docs/limits.md); null clears",
        },
    }
    return fields, components


def openapi_document() -> dict[str, Any]:
    spec_fields, spec_schemas = _spec_schemas()
    key_fields = {
        "alias": {"type": ["string", "null"]},
        "team": {"type": ["string", "null"], "description": "an existing team's name"},
        "project": {"type": ["string", "null"], "description": "an existing project's name"},
        "allowed_models": {**_STRINGS, "description": "exact names and globs; empty = all"},
        "allowed_endpoints": {
            "type": "array",
            "items": {"enum": ["chat", "completions", "embeddings"]},
            "description": "empty = all",
        },
        "expires_at": {**_TIME, "description": "ISO 8601 or Unix seconds"},
        "blocked": {"type": "boolean"},
        "tags": _STRINGS,
        "metadata": {"type": "object"},
        **spec_fields,
    }
    key = {
        "type": "object",
        "properties": {
            "id": {"type": "string", "description": "the public id (sk-lp-<id>-<secret>)"},
            "key": {"type": "string", "description": "the whole key; only on create and rotate"},
            **key_fields,
            "created_at": _TIME,
            "updated_at": _TIME,
            "last_used_at": _TIME,
            "previous_expires_at": {**_TIME, "description": "the old secret works until then"},
        },
    }
    group_fields = {
        "name": {"type": "string"},
        "allowed_models": _STRINGS,
        "metadata": {"type": "object"},
        **spec_fields,
    }
    group = {
        "type": "object",
        "properties": {**group_fields, "created_at": _TIME, "updated_at": _TIME},
    }
    paths: dict[str, Any] = {
        "/admin/v1/keys": {
            "get": {
                "summary": "List keys by id (cursor paging, filters)",
                "parameters": [
                    {"name": n, "in": "query", "schema": {"type": "string"}}
                    for n in ("limit", "after", "team", "project", "alias", "blocked")
                ],
                "responses": _answer("200", _ref("List"), "a page of keys"),
            },
            "post": {
                "summary": "Create a key; the answer holds the whole key, this once",
                "requestBody": _json(_ref("KeyFields")),
                "responses": _answer("201", _ref("Key"), "the key and its secret"),
            },
        },
        "/admin/v1/keys/{id}": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "get": {"summary": "One key", "responses": _answer("200", _ref("Key"), "the key")},
            "patch": {
                "summary": 'Change any of a key\'s fields, e.g. {"blocked": true}',
                "requestBody": _json(_ref("KeyFields")),
                "responses": _answer("200", _ref("Key"), "the key"),
            },
            "delete": {
                "summary": "Delete a key",
                "responses": _answer("200", {"type": "object"}, "deleted"),
            },
        },
        "/admin/v1/keys/{id}/rotate": {
            "parameters": [
                {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
            ],
            "post": {
                "summary": "A new secret for the key; the old one works for grace_period_s more",
                "requestBody": _json(
                    {"type": "object", "properties": {"grace_period_s": {"type": "number"}}}
                ),
                "responses": _answer("200", _ref("Key"), "the key and its new secret"),
            },
        },
        **_group_paths("teams", "Team"),
        **_group_paths("projects", "Team"),
        "/admin/v1/deployments": {
            "get": {
                "summary": "Each model group's deployments as this worker sees them: breaker, "
                "in-flight calls, EWMA latency, recent errors (docs/routing.md)",
                "responses": _answer("200", _ref("List"), "the groups, each with its deployments"),
            },
        },
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "llm-proxy admin API", "version": "1"},
        "components": {
            "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Key": key,
                "KeyFields": {
                    "type": "object",
                    "properties": key_fields,
                    "additionalProperties": False,
                },
                "Team": group,
                "TeamFields": {
                    "type": "object",
                    "properties": group_fields,
                    "additionalProperties": False,
                },
                **spec_schemas,
                "List": {
                    "type": "object",
                    "properties": {
                        "object": {"const": "list"},
                        "data": {"type": "array"},
                        "has_more": {"type": "boolean"},
                        "next_cursor": {"type": ["string", "null"]},
                    },
                },
                "Error": {
                    "type": "object",
                    "properties": {
                        "error": {
                            "type": "object",
                            "properties": {
                                "message": {"type": "string"},
                                "type": {"type": "string"},
                                "param": {"type": ["string", "null"]},
                                "code": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
            },
        },
        "security": [{"admin": []}],
        "paths": paths,
    }
