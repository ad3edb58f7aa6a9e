"""The key store (SQLite and PostgreSQL), the in-process table and the authenticate stage."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from llm_proxy.calls import Call
from llm_proxy.config import ConfigError, parse_config
from llm_proxy.errors import GatewayError
from llm_proxy.keys import KeyStore, KeyStoreError, KeyTable, check_exposure
from llm_proxy.keys.fields import InvalidField, key_fields
from llm_proxy.keys.model import KeyRecord, TeamRecord, sha256_hex, split_key
from llm_proxy.keys.stage import Authenticate
from llm_proxy.keys.store import Conflict, NotFound

from tests.support.postgres import database_url, private_schema, with_search_path
from tests.support.redis import key_prefix, redis_url


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/keys.db"
        return
    url = database_url()
    with private_schema(url) as schema:
        yield with_search_path(url, schema)


def call(key: str | None, model: str = "gpt-4o-mini", endpoint: str = "chat") -> Call:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return Call("r", "http", endpoint, b"{}", model, headers=headers)  # type: ignore[arg-type]


def test_migrations_run_once_when_many_instances_start_at_once(store_url: str) -> None:
    errors: list[BaseException] = []

    def start() -> None:
        store = KeyStore(store_url)
        try:
            store.migrate()
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=start) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    store = KeyStore(store_url)
    with store.db.transaction(write=False) as execute:
        versions = execute("SELECT version FROM keys_schema_version ORDER BY version").fetchall()
        assert [tuple(v) for v in versions] == [(1,), (2,)]
    assert store.version() == 0
    store.close()


def test_a_schema_newer_than_the_gateway_knows_is_refused(store_url: str) -> None:
    store = KeyStore(store_url)
    store.migrate()
    with store.db.transaction(write=True) as execute:
        execute("INSERT INTO keys_schema_version (version) VALUES (?)", (99,))
    with pytest.raises(KeyStoreError, match="version 99, newer than this gateway knows"):
        store.migrate()
    store.close()


def test_every_change_moves_the_version_and_use_does_not(store_url: str) -> None:
    store = KeyStore(store_url)
    store.migrate()
    v0 = store.version()
    store.create_group("teams", {"name": "t1", "allowed_models": ["gpt-4o*"]})
    record, text = store.create_key(key_fields({"alias": "a", "team": "t1", "tags": ["x"]}))
    parts = split_key(text)
    assert parts is not None and parts[0] == record.id
    assert record.secret_sha256 == sha256_hex(parts[1])
    assert store.version() == v0 + 2
    store.touch({record.id: 123.0})
    assert store.version() == v0 + 2
    assert store.get_key(record.id).last_used_at == 123.0
    updated = store.update_key(record.id, {"blocked": True, "metadata": {"n": 1}})
    assert updated.blocked and updated.metadata == {"n": 1} and updated.tags == ["x"]
    rotated, new_text = store.rotate_key(record.id, 30)
    assert rotated.previous_sha256 == record.secret_sha256 and new_text != text
    assert store.version() == v0 + 4
    with pytest.raises(Conflict):
        store.delete_group("teams", "t1")
    with pytest.raises(InvalidField):
        store.create_key({"team": "nobody"})
    store.delete_key(record.id)
    with pytest.raises(NotFound):
        store.get_key(record.id)
    store.delete_group("teams", "t1")
    snapshot = store.snapshot()
    assert snapshot.version == store.version() and snapshot.keys == [] and snapshot.teams == {}
    store.close()


def test_a_second_store_sees_a_change_through_the_version(store_url: str) -> None:
    a, b = KeyStore(store_url), KeyStore(store_url)
    a.migrate()
    table = KeyTable(b, [], {}, {}, poll_interval_s=0.05)
    table.load()
    table.start()
    try:
        record, text = a.create_key({})
        deadline = time.monotonic() + 1
        while record.id not in table.entries:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        stage = Authenticate(table)
        stage(c := call(text))
        assert c.key_id == record.id
        a.update_key(record.id, {"blocked": True})
        deadline = time.monotonic() + 1
        while not table.entries[record.id].blocked:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        with pytest.raises(GatewayError):
            stage(call(text))
    finally:
        table.stop()  # also writes when the keys were last used
        assert a.get_key(record.id).last_used_at is not None
        a.close()
        b.close()


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from redis_url(tmp_path_factory.mktemp("redis"))


def test_a_redis_message_wakes_the_other_tables_before_their_poll(
    tmp_path: Path, shared_redis: str
) -> None:
    url = f"sqlite:///{tmp_path}/keys.db"
    channel = key_prefix() + "keys"  # a channel of our own: nothing to clean up afterwards
    a, b = KeyStore(url), KeyStore(url)
    a.migrate()
    # B polls only every 30 s: a change seen sooner came through Redis.
    here = KeyTable(a, [], {}, {}, redis_url=shared_redis, channel=channel)
    there = KeyTable(b, [], {}, {}, poll_interval_s=30, redis_url=shared_redis, channel=channel)
    for table in (here, there):
        table.load()
        table.start()
    try:
        time.sleep(0.5)  # the listener subscribes
        record, _ = a.create_key({})
        here.changed()
        deadline = time.monotonic() + 1
        while record.id not in there.entries:
            assert time.monotonic() < deadline, "no reload within 1 s of the Redis message"
            time.sleep(0.01)
    finally:
        for table in (here, there):
            table.stop()
        a.close()
        b.close()


# -- the stage -------------------------------------------------------------------------------


def _table(*keys: KeyRecord, teams: dict[str, TeamRecord] | None = None) -> KeyTable:
    table = KeyTable(None, list(keys), teams or {}, {})
    table.load()
    return table


def _key(public_id: str, secret: str, **fields: object) -> KeyRecord:
    return KeyRecord(id=public_id, secret_sha256=sha256_hex(secret), **fields)  # type: ignore[arg-type]


def refusal(stage: Authenticate, c: Call) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        stage(c)
    return info.value


def test_the_stage_sets_the_key_id_and_team() -> None:
    stage = Authenticate(_table(_key("abc", "s3cret-with-dash", team="t")))
    c = call("sk-lp-abc-s3cret-with-dash")
    stage(c)
    assert (c.key_id, c.team) == ("abc", "t")
    xc = Call("r", "http", "chat", b"{}", "m", headers={"x-api-key": "sk-lp-abc-s3cret-with-dash"})
    stage(xc)
    assert xc.key_id == "abc"
    azure = Call("r", "http", "chat", b"{}", "m", headers={"api-key": "sk-lp-abc-s3cret-with-dash"})
    stage(azure)
    assert azure.key_id == "abc"
    lower = call(None)
    lower.headers = {"authorization": "bearer sk-lp-abc-s3cret-with-dash"}
    stage(lower)


@pytest.mark.parametrize(
    ("key", "says"),
    [
        (None, "didn't provide"),
        ("sk-other", "not an `sk-lp-` key"),
        ("sk-lp-zzz-PLANTED", "no key `zzz`"),
        ("sk-lp-abc-PLANTED", "for key `abc`"),
    ],
)
def test_refusals_are_401_and_never_repeat_the_secret(key: str | None, says: str) -> None:
    stage = Authenticate(_table(_key("abc", "right")))
    error = refusal(stage, call(key))
    assert error.status == 401 and error.code == "invalid_api_key"
    assert says in error.message
    assert b"PLANTED" not in error.body() and b"right" not in error.body()


def test_blocked_and_expired_keys_are_401() -> None:
    stage = Authenticate(
        _table(_key("b", "s", blocked=True), _key("e", "s", expires_at=time.time() - 1))
    )
    assert "blocked" in refusal(stage, call("sk-lp-b-s")).message
    assert "expired" in refusal(stage, call("sk-lp-e-s")).message


def test_the_allow_list_is_the_intersection_of_the_key_and_its_team() -> None:
    team = TeamRecord(name="t", allowed_models=["gpt-4o*", "mock-1"])
    stage = Authenticate(
        _table(
            _key("k", "s", team="t", allowed_models=["gpt-4o-mini", "claude*"]), teams={"t": team}
        )
    )
    stage(call("sk-lp-k-s", "gpt-4o-mini"))
    for model in ("gpt-4o", "mock-1", "claude-3"):
        error = refusal(stage, call("sk-lp-k-s", model))
        assert error.status == 403 and error.code == "model_not_allowed" and "`k`" in error.message


def test_an_endpoint_outside_the_list_is_403() -> None:
    stage = Authenticate(_table(_key("k", "s", allowed_endpoints=["embeddings"])))
    stage(call("sk-lp-k-s", endpoint="embeddings"))
    refused = call("sk-lp-k-s")
    error = refusal(stage, refused)
    assert error.status == 403 and error.code == "endpoint_not_allowed"
    assert refused.key_id == "k"  # the log names the key of a refused call too


def test_a_rotated_secret_works_until_its_grace_ends() -> None:
    now = time.time()
    graced = _key("g", "new", previous_sha256=sha256_hex("old"), previous_expires_at=now + 60)
    ended = _key("e", "new", previous_sha256=sha256_hex("old"), previous_expires_at=now - 1)
    stage = Authenticate(_table(graced, ended))
    stage(call("sk-lp-g-old"))
    stage(call("sk-lp-g-new"))
    stage(call("sk-lp-e-new"))
    assert refusal(stage, call("sk-lp-e-old")).status == 401


# -- config ----------------------------------------------------------------------------------


def test_an_open_gateway_on_a_public_address_is_refused_unless_allowed() -> None:
    check_exposure(parse_config({}), "127.0.0.1")
    check_exposure(parse_config({}), "localhost")
    check_exposure(parse_config({}), "::1")
    with pytest.raises(ConfigError, match="allow_anonymous_non_loopback"):
        check_exposure(parse_config({}), "0.0.0.0")
    check_exposure(parse_config({"auth": {"allow_anonymous_non_loopback": True}}), "0.0.0.0")
    check_exposure(parse_config({"auth": {"mode": "keys"}}), "10.0.0.5")


def test_bad_key_fields_are_named() -> None:
    for body, field in (
        ({"allowed_models": "x"}, "allowed_models"),
        ({"allowed_endpoints": ["images"]}, "allowed_endpoints"),
        ({"expires_at": "soon"}, "expires_at"),
        ({"blocked": "yes"}, "blocked"),
        ({"metadata": {"x": "y" * 9000}}, "metadata"),
        ({"secret": "x"}, "secret"),
    ):
        with pytest.raises(InvalidField) as info:
            key_fields(body)
        assert info.value.field == field
    assert key_fields({"expires_at": "2027-01-01T00:00:00Z"})["expires_at"] == 1798761600.0


def test_a_bad_declared_key_names_its_path() -> None:
    with pytest.raises(ConfigError, match=r"64 hex digits .* at `\$\.auth\.keys\[0\]`"):
        parse_config({"auth": {"keys": [{"id": "a", "secret_sha256": "nope"}]}})
    with pytest.raises(ConfigError, match="unknown endpoint `images`"):
        parse_config(
            {
                "auth": {
                    "keys": [
                        {"id": "a", "secret_sha256": "0" * 64, "allowed_endpoints": ["images"]}
                    ]
                }
            }
        )
