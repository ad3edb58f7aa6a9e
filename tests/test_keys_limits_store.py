"""Limits and budgets on keys, teams and projects: the schema upgrade, the store on SQLite and
PostgreSQL, the in-process table the limits engine reads, and the YAML-declared ones."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_proxy.config import ConfigError, parse_config
from llm_proxy.keys import KeyService, KeyStore, KeyTable
from llm_proxy.keys.fields import InvalidField, group_fields, key_fields
from llm_proxy.keys.migrations import known_version, migrations
from llm_proxy.keys.model import TeamRecord
from llm_proxy.keys.stage import key_info
from llm_proxy.limits.spec import Budget, Limits, RateLimits

from tests.support.postgres import database_url, private_schema, with_search_path

LIMITS = {"rpm": 100, "tpm": 50000, "max_parallel": 8, "models": {"gpt-4o": {"rpm": 10}}}
BUDGETS = [{"usd": 5.0, "period": "monthly", "alert_at": [0.9, 0.5]}]
LIMITS_MODELS = {"gpt-4o": RateLimits(rpm=10)}


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/keys.db"
        return
    url = database_url()
    with private_schema(url) as schema:
        yield with_search_path(url, schema)


def _v1_store_with_rows(url: str) -> None:
    """A key store as the gateway of schema version 1 left it: a team, a project, a key."""
    store = KeyStore(url)
    with store.db.transaction(write=True, migrating=True) as execute:
        execute("CREATE TABLE keys_schema_version (version INTEGER NOT NULL)")
        for statement in migrations(store.dialect)[0]:
            execute(statement)
        execute("INSERT INTO keys_schema_version (version) VALUES (?)", (1,))
        for table in ("teams", "projects"):
            execute(
                f"INSERT INTO {table} (name, allowed_models, metadata, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?)",
                ("old", '["mock-*"]', "{}", 1.0, 1.0),
            )
        execute(
            "INSERT INTO api_keys (id, secret_sha256, alias, team, project, allowed_models, "
            "allowed_endpoints, blocked, tags, metadata, created_at, updated_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            ("oldkey", "ab" * 32, "v1", "old", "old", "[]", "[]", 0, "[]", "{}", 1.0, 1.0),
        )
        execute("UPDATE keys_state SET version = 7 WHERE id = 1")
    store.close()


def test_a_version_1_store_is_upgraded_in_place_and_keeps_its_rows(store_url: str) -> None:
    _v1_store_with_rows(store_url)
    store = KeyStore(store_url)
    assert store.migrate() == known_version() == 2
    with store.db.transaction(write=False) as execute:
        versions = execute("SELECT version FROM keys_schema_version ORDER BY version").fetchall()
    assert [tuple(v) for v in versions] == [(1,), (2,)]
    old = store.get_key("oldkey")
    assert (old.alias, old.team, old.limits, old.budgets) == ("v1", "old", None, [])
    team = store.get_group("teams", "old")
    assert team.allowed_models == ["mock-*"] and team.limits is None and team.budgets == []
    assert store.version() == 7
    # The upgraded rows take the new fields; a second start changes nothing.
    store.update_key("oldkey", key_fields({"limits": {"rpm": 5}}))
    store.update_group("projects", "old", group_fields({"budgets": BUDGETS}, creating=False))
    assert store.migrate() == 2
    assert store.get_key("oldkey").limits == Limits(rpm=5)
    assert store.get_group("projects", "old").budgets == [
        Budget(usd=5.0, period="monthly", alert_at=[0.5, 0.9])
    ]
    store.close()


def test_limits_and_budgets_are_stored_read_back_and_cleared(store_url: str) -> None:
    store = KeyStore(store_url)
    store.migrate()
    team = store.create_group(
        "teams", group_fields({"name": "t", "limits": LIMITS, "budgets": BUDGETS}, creating=True)
    )
    assert team.limits == Limits(rpm=100, tpm=50000, max_parallel=8, models=LIMITS_MODELS)
    record, _ = store.create_key(key_fields({"team": "t", "limits": LIMITS, "budgets": BUDGETS}))
    again = store.get_key(record.id)
    assert again.limits == team.limits and again.budgets == team.budgets
    assert again.public()["limits"] == LIMITS
    assert again.public()["budgets"] == [{"usd": 5.0, "alert_at": [0.5, 0.9]}]
    assert store.get_group("teams", "t").public()["limits"] == LIMITS
    cleared = store.update_key(record.id, key_fields({"limits": None, "budgets": None}))
    assert cleared.limits is None and cleared.budgets == []
    # `{}` says no limits too, and is stored as none.
    assert store.update_key(record.id, key_fields({"limits": {}})).limits is None
    emptied = store.update_group("teams", "t", group_fields({"limits": None}, creating=False))
    assert emptied.limits is None and emptied.budgets == team.budgets
    store.close()


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("limits", {"rpm": 0}, "rpm must be a positive integer"),
        ("limits", {"rpm": "many"}, "Expected `int | null`, got `str`"),
        ("limits", {"rps": 3}, "unknown field `rps`"),
        ("limits", {"models": {"gpt-4o": {"tpm": -1}}}, "tpm must be a positive integer"),
        ("limits", [100], "Expected `object`"),
        ("budgets", {"usd": 5}, "Expected `array`"),
        ("budgets", [{"usd": 0}], "usd must be greater than 0"),
        ("budgets", [{"usd": float("inf")}], "usd must be a finite number"),
        ("budgets", [{"usd": 1, "period": "hourly"}], "Invalid enum value 'hourly'"),
        ("budgets", [{"usd": 1, "period": "rolling"}], "needs `window`"),
        ("budgets", [{"usd": 1, "alert_at": [1.5]}], "alert_at holds shares"),
    ],
)
def test_a_bad_limit_or_budget_names_its_field(field: str, value: object, says: str) -> None:
    for check in (key_fields, lambda d: group_fields(d, creating=False)):
        with pytest.raises(InvalidField) as caught:
            check({field: value})
        assert caught.value.field == field and says in caught.value.message


def test_the_table_resolves_each_keys_own_team_and_project_limits_at_reload(
    store_url: str,
) -> None:
    store = KeyStore(store_url)
    store.migrate()
    declared_project = {"p": _team("p", limits={"tpm": 900}, budgets=[{"usd": 50}])}
    store.declared = {"teams": frozenset(), "projects": frozenset(declared_project)}
    store.create_group("teams", group_fields({"name": "t", "limits": LIMITS}, creating=True))
    record, _ = store.create_key(
        key_fields({"team": "t", "project": "p", "limits": {"rpm": 3}, "budgets": BUDGETS})
    )
    bare, _ = store.create_key(key_fields({}))
    table = KeyTable(store, [], {}, declared_project)
    table.load()
    entry = table.entries[record.id]
    assert (entry.team, entry.project) == ("t", "p")
    assert entry.limits == Limits(rpm=3)
    assert entry.budgets == [Budget(usd=5.0, alert_at=[0.5, 0.9])]
    assert entry.team_limits == store.get_group("teams", "t").limits
    assert entry.team_budgets == []
    assert entry.project_limits == Limits(tpm=900)
    assert entry.project_budgets == [Budget(usd=50.0)]
    assert set(table.teams) == {"t"} and set(table.projects) == {"p"}
    none = table.entries[bare.id]
    assert (none.project, none.limits, none.budgets) == (None, None, [])
    assert (none.team_limits, none.team_budgets) == (None, [])
    assert (none.project_limits, none.project_budgets) == (None, [])

    # A change to the team reaches its keys' entries at the next reload.
    store.update_group("teams", "t", group_fields({"budgets": [{"usd": 9}]}, creating=False))
    store.update_key(record.id, key_fields({"limits": None}))
    assert table.refresh()
    entry = table.entries[record.id]
    assert entry.limits is None and entry.team_budgets == [Budget(usd=9.0)]
    assert table.teams["t"].budgets == [Budget(usd=9.0)]
    info = key_info(entry, ["gpt-4o"], extra={"spend": {"usd": 0.25}})
    assert info["limits"] is None and info["budgets"] == [{"usd": 5.0, "alert_at": [0.5, 0.9]}]
    assert info["team_limits"] == LIMITS and info["team_budgets"] == [{"usd": 9.0}]
    assert info["project_limits"] == {"tpm": 900} and info["project_budgets"] == [{"usd": 50.0}]
    assert info["spend"] == {"usd": 0.25} and info["id"] == record.id
    store.close()


def _team(name: str, **fields: object) -> TeamRecord:
    return TeamRecord(name=name, **group_fields(fields, creating=False))


def test_keys_and_groups_declared_in_the_yaml_carry_their_limits_and_budgets(
    tmp_path: Path,
) -> None:
    config = parse_config(
        {
            "providers": {"m": {"kind": "mock"}},
            "logging": {"store": f"sqlite:///{tmp_path}/y.db"},
            "auth": {
                "mode": "keys",
                "keys": [
                    {
                        "id": "gitops1",
                        "secret_sha256": "ab" * 32,
                        "team": "ops",
                        "project": "web",
                        "limits": {"rpm": 60, "models": {"mock-1": {"tpm": 1000}}},
                        "budgets": [{"usd": 2, "period": "rolling", "window": "30d"}],
                    }
                ],
                "teams": {"ops": {"limits": {"max_parallel": 4}, "budgets": [{"usd": 100}]}},
                "projects": {"web": {"limits": {}}},
            },
        }
    )
    service = KeyService(config)
    service.start()
    try:
        entry = service.table.entries["gitops1"]
        assert entry.limits == Limits(rpm=60, models={"mock-1": RateLimits(tpm=1000)})
        assert entry.budgets == [Budget(usd=2.0, period="rolling", window="30d")]
        assert entry.budgets[0].window_s() == 30 * 86400
        assert entry.team_limits == Limits(max_parallel=4)
        assert entry.team_budgets == [Budget(usd=100.0)]
        assert (entry.project_limits, entry.project_budgets) == (None, [])
        assert service.table.teams["ops"].limits == Limits(max_parallel=4)
        assert "web" in service.table.projects
    finally:
        service.stop()


@pytest.mark.parametrize(
    ("auth", "path"),
    [
        ({"teams": {"ops": {"limits": {"rpm": 0}}}}, "$.auth.teams[...].limits"),
        (
            {"keys": [{"id": "k1", "secret_sha256": "ab" * 32, "budgets": [{"usd": -1}]}]},
            "$.auth.keys[0].budgets[0]",
        ),
        ({"projects": {"web": {"limits": {"rpd": 5}}}}, "$.auth.projects[...].limits"),
    ],
)
def test_a_bad_declared_limit_fails_the_config_with_its_path(
    auth: dict[str, object], path: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"providers": {"m": {"kind": "mock"}}, "auth": auth})
    assert path in str(caught.value)
