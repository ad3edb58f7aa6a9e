"""Limits and budgets of keys, teams and projects through the admin API over HTTP and the CLI,
on a gateway whose key store is SQLite or PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.e2e.test_keys import Admin, cli, keys_config
from tests.support.postgres import database_url, private_schema, with_search_path
from tests.support.servers import Gateway, MockUpstream, start_gateway

LIMITS = {"rpm": 100, "tpm": 50000, "max_parallel": 8, "models": {"gpt-4o": {"rpm": 10}}}
BUDGETS = [{"usd": 5.0, "period": "monthly", "alert_at": [0.9, 0.5]}]
# As the gateway gives them back: the default period left out, the shares in order.
BUDGETS_SHOWN = [{"usd": 5.0, "alert_at": [0.5, 0.9]}]


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def limits_gw(
    request: pytest.FixtureRequest,
    mock_upstream: MockUpstream,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Gateway, Admin]]:
    tmp = tmp_path_factory.mktemp(f"limits-{request.param}")

    def run(store: str) -> Iterator[tuple[Gateway, Admin]]:
        config, admin_port = keys_config(mock_upstream, tmp, store)
        gateway = start_gateway(config, tmp)
        try:
            yield gateway, Admin(admin_port)
        finally:
            gateway.stop()

    if request.param == "sqlite":
        yield from run(f"sqlite:///{tmp}/gw.db")
        return
    url = database_url()
    with private_schema(url) as schema:
        yield from run(with_search_path(url, schema))


@pytest.fixture
def gw(limits_gw: tuple[Gateway, Admin]) -> Gateway:
    return limits_gw[0]


@pytest.fixture
def admin(limits_gw: tuple[Gateway, Admin]) -> Admin:
    return limits_gw[1]


def key_info(gw: Gateway, key: str) -> dict[str, Any]:
    resp = httpx.get(gw.base_url + "/key/info", headers={"authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def key_info_or_none(gw: Gateway, key: str) -> dict[str, Any] | None:
    """The key's info once the gateway knows the key (it polls the store's version)."""
    resp = httpx.get(gw.base_url + "/key/info", headers={"authorization": f"Bearer {key}"})
    return dict(resp.json()) if resp.status_code == 200 else None


def test_keys_teams_and_projects_keep_their_limits_and_budgets(gw: Gateway, admin: Admin) -> None:
    team = admin.ok("POST", "/teams", {"name": "lt", "limits": LIMITS}, status=201)
    assert team["limits"] == LIMITS and team["budgets"] == []
    project = admin.ok("POST", "/projects", {"name": "lp", "budgets": BUDGETS}, status=201)
    assert project["limits"] is None and project["budgets"] == BUDGETS_SHOWN
    made = admin.key(team="lt", project="lp", limits={"rpm": 3}, budgets=BUDGETS)
    assert made["limits"] == {"rpm": 3} and made["budgets"] == BUDGETS_SHOWN

    shown = admin.ok("GET", f"/keys/{made['id']}")
    assert shown["limits"] == {"rpm": 3} and shown["budgets"] == BUDGETS_SHOWN
    listed = admin.ok("GET", "/keys?team=lt")["data"]
    assert [(k["id"], k["limits"], k["budgets"]) for k in listed] == [
        (made["id"], {"rpm": 3}, BUDGETS_SHOWN)
    ]
    assert admin.ok("GET", "/teams/lt")["limits"] == LIMITS
    teams = {t["name"]: t for t in admin.ok("GET", "/teams")["data"]}
    assert teams["lt"]["limits"] == LIMITS
    projects = {p["name"]: p for p in admin.ok("GET", "/projects")["data"]}
    assert projects["lp"]["budgets"] == BUDGETS_SHOWN

    # The gateway's table carries the key's own and its team's and project's.
    info = key_info(gw, made["key"])
    assert info["limits"] == {"rpm": 3} and info["budgets"] == BUDGETS_SHOWN
    assert info["team_limits"] == LIMITS and info["team_budgets"] == []
    assert info["project_limits"] is None and info["project_budgets"] == BUDGETS_SHOWN

    # PATCH changes only what it names; null clears.
    rolling = [{"usd": 1.5, "period": "rolling", "window": "24h"}]
    patched = admin.ok("PATCH", f"/keys/{made['id']}", {"budgets": rolling})
    assert patched["limits"] == {"rpm": 3} and patched["budgets"] == [
        {"usd": 1.5, "period": "rolling", "window": "24h"}
    ]
    cleared = admin.ok("PATCH", f"/keys/{made['id']}", {"limits": None, "budgets": None})
    assert cleared["limits"] is None and cleared["budgets"] == []
    assert admin.ok("GET", f"/keys/{made['id']}")["limits"] is None
    team = admin.ok("PATCH", "/teams/lt", {"limits": None, "budgets": [{"usd": 20}]})
    assert team["limits"] is None and team["budgets"] == [{"usd": 20.0}]
    project = admin.ok("PATCH", "/projects/lp", {"budgets": None, "limits": {"tpm": 7}})
    assert project["budgets"] == [] and project["limits"] == {"tpm": 7}
    info = key_info(gw, made["key"])
    assert (info["limits"], info["budgets"]) == (None, [])
    assert (info["team_limits"], info["team_budgets"]) == (None, [{"usd": 20.0}])
    assert (info["project_limits"], info["project_budgets"]) == ({"tpm": 7}, [])


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "says"),
    [
        ("POST", "/keys", {"limits": {"rpm": 0}}, "limits", "rpm must be a positive integer"),
        ("POST", "/keys", {"limits": {"rpm": "x"}}, "limits", "at `$.rpm`"),
        ("POST", "/keys", {"limits": {"rps": 1}}, "limits", "unknown field `rps`"),
        ("POST", "/keys", {"budgets": [{"usd": -1}]}, "budgets", "usd must be greater than 0"),
        ("POST", "/teams", {"name": "bad", "limits": 5}, "limits", "Expected `object`"),
        ("POST", "/projects", {"name": "bad", "budgets": {"usd": 1}}, "budgets", "`array`"),
        ("PATCH", "/teams/ok", {"budgets": [{"usd": 1, "period": "rolling"}]}, "budgets", "window"),
        ("PATCH", "/projects/ok", {"limits": {"models": {"m": {"tpm": 0}}}}, "limits", "tpm"),
        ("PATCH", "/keys/{id}", {"budgets": [{"usd": 1, "alert_at": [2]}]}, "budgets", "shares"),
    ],
)
def test_a_bad_limit_or_budget_is_refused_naming_the_field(
    admin: Admin, method: str, path: str, body: dict[str, Any], field: str, says: str
) -> None:
    for kind in ("teams", "projects"):
        if admin(method="GET", path=f"/{kind}/ok").status_code == 404:
            admin.ok("POST", f"/{kind}", {"name": "ok"}, status=201)
    made = admin.key(limits={"rpm": 9})
    resp = admin(method, path.replace("{id}", made["id"]), body)
    assert resp.status_code == 422, resp.text
    error = resp.json()["error"]
    assert error["param"] == field and error["code"] == "invalid_field"
    assert error["type"] == "invalid_request_error" and says in error["message"]
    assert admin.ok("GET", f"/keys/{made['id']}")["limits"] == {"rpm": 9}


def test_an_infinite_budget_is_refused_not_stored(gw: Gateway, admin: Admin) -> None:
    made = admin.key()
    # The admin API's JSON decoder refuses a number out of range as a bad body; Python's
    # (the CLI's) reads it as infinity, which the field check refuses.
    resp = admin.http.patch(
        f"/keys/{made['id']}",
        content=b'{"budgets": [{"usd": 1e999}]}',
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == 400 and resp.json()["error"]["type"] == "invalid_request_error"
    bad = cli(gw.config_path, "keys", "update", made["id"], "--budgets", '[{"usd": 1e999}]')
    assert bad.returncode == 1 and "budgets: usd must be a finite number" in bad.stderr
    assert admin.ok("GET", f"/keys/{made['id']}")["budgets"] == []


def test_the_openapi_document_describes_limits_and_budgets(admin: Admin) -> None:
    doc = admin.ok("GET", "/openapi.json")
    schemas = doc["components"]["schemas"]
    for name in ("KeyFields", "Key", "TeamFields", "Team"):
        props = schemas[name]["properties"]
        assert {"$ref": "#/components/schemas/Limits"} in props["limits"]["anyOf"], name
        assert {"type": "null"} in props["budgets"]["anyOf"], name
    assert set(schemas["Limits"]["properties"]) == {"rpm", "tpm", "max_parallel", "models"}
    assert schemas["Budget"]["required"] == ["usd"]
    assert set(schemas["Budget"]["properties"]["period"]["enum"]) == {
        "daily",
        "weekly",
        "monthly",
        "rolling",
    }
    assert "RateLimits" in schemas


def _json_out(out: Any) -> dict[str, Any]:
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout[: out.stdout.rindex("}") + 1]))


def test_the_cli_sets_shows_lists_and_clears_limits_and_budgets(gw: Gateway) -> None:
    config = gw.config_path
    team = _json_out(
        cli(config, "teams", "create", "cli-lt", "--limits", json.dumps(LIMITS),
            "--budgets", json.dumps(BUDGETS))
    )  # fmt: skip
    assert team["limits"] == LIMITS and team["budgets"] == BUDGETS_SHOWN
    assert "rpm=100" in cli(config, "teams", "list").stdout
    project = _json_out(cli(config, "projects", "create", "cli-lp"))
    assert project["limits"] is None
    project = _json_out(cli(config, "projects", "update", "cli-lp", "--limits", '{"tpm": 11}'))
    assert project["limits"] == {"tpm": 11}

    made = _json_out(
        cli(config, "keys", "create", "--team", "cli-lt", "--project", "cli-lp",
            "--limits", '{"rpm": 30, "max_parallel": 2}',
            "--budgets", '[{"usd": 3, "period": "daily"}]')
    )  # fmt: skip
    assert made["limits"] == {"rpm": 30, "max_parallel": 2}
    assert made["budgets"] == [{"usd": 3.0, "period": "daily"}]
    shown = _json_out(cli(config, "keys", "show", made["id"]))
    assert shown["limits"] == made["limits"] and shown["budgets"] == made["budgets"]
    listing = cli(config, "keys", "list", "--team", "cli-lt").stdout
    row = next(line for line in listing.splitlines() if made["id"] in line)
    assert "rpm=30" in row and "max_parallel=2" in row and "$3/daily" in row
    listed = _json_out(cli(config, "keys", "list", "--team", "cli-lt", "--json"))["data"]
    assert listed[0]["limits"] == made["limits"]

    # The running gateway reads them through its version poll.
    deadline = time.monotonic() + 5
    while (info := key_info_or_none(gw, made["key"])) is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert info is not None
    assert info["limits"] == made["limits"] and info["team_limits"] == LIMITS
    assert info["project_limits"] == {"tpm": 11}

    bad = cli(config, "keys", "update", made["id"], "--limits", '{"rpm": 0}')
    assert bad.returncode == 1 and "limits: rpm must be a positive integer" in bad.stderr
    bad = cli(config, "teams", "update", "cli-lt", "--budgets", "[{usd: 1}]")
    assert bad.returncode == 1 and "budgets: is not JSON" in bad.stderr
    cleared = _json_out(cli(config, "keys", "update", made["id"], "--limits", "null"))
    assert cleared["limits"] is None and cleared["budgets"] == made["budgets"]
    cleared = _json_out(cli(config, "keys", "update", made["id"], "--budgets", "null"))
    assert cleared["budgets"] == []
    team = _json_out(cli(config, "teams", "update", "cli-lt", "--limits", "{}"))
    assert team["limits"] is None and team["budgets"] == BUDGETS_SHOWN
