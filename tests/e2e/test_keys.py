"""Keys, teams and access policy through the real interfaces: the OpenAI SDK, a gRPC stub,
the admin API over HTTP, the CLI, and two gateway processes sharing one database."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import openai
import pytest
import yaml
from llm_proxy.grpc.gen import gateway_pb2 as pb
from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc

from tests.support.postgres import database_url, private_schema, with_search_path
from tests.support.redis import key_prefix, redis_url
from tests.support.servers import (
    Gateway,
    MockUpstream,
    add_mock_model,
    free_port,
    standard_config,
    start_gateway,
)

ADMIN = "adm-" + "k3ys-test-admin"
CHAT = [{"role": "user", "content": "Tell me about gateways"}]


def keys_config(
    upstream: MockUpstream, tmp: Path, store: str, **auth: Any
) -> tuple[dict[str, Any], int]:
    config = standard_config(upstream)
    admin_port = free_port()
    config["server"]["admin_port"] = admin_port
    config["logging"] = {
        "enabled": True,
        "store": store,
        "spool_path": str(tmp / f"spool-{admin_port}"),
        "flush_interval_s": 0.01,
    }
    config["auth"] = {"mode": "keys", "admin_key": ADMIN, **auth}
    add_mock_model(config, upstream, "slow", {"x-mock-delay-ms": "1500"}, timeout_s=10)
    return config, admin_port


class Admin:
    """The admin API of one gateway."""

    def __init__(self, port: int, key: str | None = ADMIN) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}/admin/v1", headers=headers)

    def __call__(self, method: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        return self.http.request(method, path, json=body, timeout=10, **kw)

    def ok(self, method: str, path: str, body: Any = None, status: int = 200) -> Any:
        resp = self(method, path, body)
        assert resp.status_code == status, resp.text
        return resp.json()

    def key(self, **fields: Any) -> dict[str, Any]:
        return dict(self.ok("POST", "/keys", fields, status=201))


def client(gw: Gateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=key, max_retries=0, timeout=10)


def chat(gw: Gateway, key: str, model: str = "gpt-4o-mini") -> str:
    reply = client(gw, key).chat.completions.create(model=model, messages=CHAT, max_tokens=8)  # type: ignore[arg-type]
    return str(reply.choices[0].message.content)


@pytest.fixture(scope="module")
def gw_admin(
    mock_upstream: MockUpstream, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Gateway, Admin, Path]]:
    tmp = tmp_path_factory.mktemp("keys")
    config, admin_port = keys_config(mock_upstream, tmp, f"sqlite:///{tmp}/gw.db")
    gateway = start_gateway(config, tmp, grpc=True)
    try:
        admin = Admin(admin_port)
        team = {"name": "support", "allowed_models": ["gpt-4o*", "mock-1"]}
        admin.ok("POST", "/teams", team, status=201)
        yield gateway, admin, tmp
    finally:
        gateway.stop()


@pytest.fixture
def gw(gw_admin: tuple[Gateway, Admin, Path]) -> Gateway:
    return gw_admin[0]


@pytest.fixture
def admin(gw_admin: tuple[Gateway, Admin, Path]) -> Admin:
    return gw_admin[1]


# -- the OpenAI SDK -------------------------------------------------------------------------


def test_a_good_key_is_served_and_the_log_names_its_id_and_team(gw: Gateway, admin: Admin) -> None:
    made = admin.key(alias="svc-a", team="support", allowed_models=["gpt-4o*"])
    assert made["key"].startswith(f"sk-lp-{made['id']}-")
    assert chat(gw, made["key"])
    deadline = time.monotonic() + 30  # the writer's batch; the CLI's start is slow under load
    while True:
        gateway_log = cli(gw.config_path, "logs", "--json", "--key", made["id"]).stdout
        if gateway_log.strip() or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    record = json.loads(gateway_log.splitlines()[0])
    assert record["key_id"] == made["id"]
    assert record["team"] == "support"


def test_a_wrong_secret_is_refused_with_401_naming_the_id_not_the_secret(
    gw: Gateway, admin: Admin
) -> None:
    made = admin.key(alias="svc-b")
    wrong = f"sk-lp-{made['id']}-WRONGSECRETplanted123"
    with pytest.raises(openai.AuthenticationError) as info:
        chat(gw, wrong)
    error = info.value.body
    assert isinstance(error, dict)
    assert error["code"] == "invalid_api_key"
    assert made["id"] in error["message"]
    assert "WRONGSECRET" not in json.dumps(error)


def test_no_key_and_an_unknown_key_are_401(gw: Gateway) -> None:
    resp = httpx.post(gw.base_url + "/chat/completions", json={"model": "mock-1", "messages": CHAT})
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        chat(gw, "sk-lp-000000000000-nope")
    with pytest.raises(openai.AuthenticationError):
        chat(gw, "sk-not-ours")


def test_an_expired_key_is_401(gw: Gateway, admin: Admin) -> None:
    made = admin.key(alias="old", expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(openai.AuthenticationError) as info:
        chat(gw, made["key"])
    assert "expired" in str(info.value)


def test_a_blocked_key_is_401_and_unblocking_serves_it_again(gw: Gateway, admin: Admin) -> None:
    made = admin.key(alias="flaky")
    assert chat(gw, made["key"])
    admin.ok("PATCH", f"/keys/{made['id']}", {"blocked": True})
    with pytest.raises(openai.AuthenticationError) as info:
        chat(gw, made["key"])
    assert "blocked" in str(info.value)
    admin.ok("PATCH", f"/keys/{made['id']}", {"blocked": False})
    assert chat(gw, made["key"])


def test_a_model_outside_the_key_or_team_list_is_403(gw: Gateway, admin: Admin) -> None:
    own = admin.key(allowed_models=["mock-*"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(gw, own["key"], "gpt-4o-mini")
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "model_not_allowed"
    assert own["id"] in info.value.body["message"]
    assert chat(gw, own["key"], "mock-1")
    # The team allows gpt-4o* and mock-1, the key gpt-4o* and claude: only gpt-4o* is left.
    teamed = admin.key(team="support", allowed_models=["gpt-4o*", "claude"])
    assert chat(gw, teamed["key"], "gpt-4o-mini")
    for model in ("claude", "mock-1"):
        with pytest.raises(openai.PermissionDeniedError):
            chat(gw, teamed["key"], model)


def test_an_endpoint_outside_the_list_is_403(gw: Gateway, admin: Admin) -> None:
    made = admin.key(allowed_endpoints=["embeddings"])
    with pytest.raises(openai.PermissionDeniedError) as info:
        chat(gw, made["key"])
    assert isinstance(info.value.body, dict)
    assert info.value.body["code"] == "endpoint_not_allowed"
    vectors = client(gw, made["key"]).embeddings.create(model="text-embedding-3-small", input="x")
    assert vectors.data


def test_the_anthropic_style_x_api_key_header_works(gw: Gateway, admin: Admin) -> None:
    made = admin.key()
    resp = httpx.post(
        gw.base_url + "/chat/completions",
        json={"model": "mock-1", "messages": CHAT},
        headers={"x-api-key": made["key"]},
    )
    assert resp.status_code == 200, resp.text


def test_models_list_and_key_info_are_the_callers_own(gw: Gateway, admin: Admin) -> None:
    made = admin.key(alias="lister", team="support", allowed_models=["gpt-4o*", "mock-1"])
    names = sorted(m.id for m in client(gw, made["key"]).models.list())
    assert names == ["gpt-4o-mini", "mock-1"]
    with pytest.raises(openai.NotFoundError):
        client(gw, made["key"]).models.retrieve("claude")
    assert client(gw, made["key"]).models.retrieve("mock-1").id == "mock-1"
    info = httpx.get(gw.base_url + "/key/info", headers={"authorization": f"Bearer {made['key']}"})
    assert info.status_code == 200
    data = info.json()
    assert data["id"] == made["id"] and data["alias"] == "lister" and data["team"] == "support"
    assert data["models"] == ["gpt-4o-mini", "mock-1"]
    assert "key" not in data and made["key"] not in info.text
    assert httpx.get(gw.base_url + "/models").status_code == 401


def test_rotation_keeps_the_old_secret_for_the_grace_period_only(gw: Gateway, admin: Admin) -> None:
    made = admin.key(alias="rotating")
    graced = admin.ok("POST", f"/keys/{made['id']}/rotate", {"grace_period_s": 60})
    assert graced["id"] == made["id"] and graced["key"] != made["key"]
    assert chat(gw, graced["key"]) and chat(gw, made["key"])
    now = admin.ok("POST", f"/keys/{made['id']}/rotate", {"grace_period_s": 0})
    assert chat(gw, now["key"])
    for old in (made["key"], graced["key"]):
        with pytest.raises(openai.AuthenticationError):
            chat(gw, old)


# -- gRPC -----------------------------------------------------------------------------------


def test_grpc_needs_the_key_in_its_authorization_metadata(gw: Gateway, admin: Admin) -> None:
    made = admin.key(allowed_models=["mock-1"])
    request = pb.ChatCompletionRequest(
        model="mock-1", messages=[pb.ChatMessage(role="user", content="hi")]
    )
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        reply = stub.ChatCompletion(
            request, metadata=[("authorization", f"Bearer {made['key']}")], timeout=10
        )
        assert reply.choices[0].message.content
        with pytest.raises(grpc.RpcError) as missing:
            stub.ChatCompletion(request, timeout=10)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED
        other = pb.ChatCompletionRequest(
            model="gpt-4o-mini", messages=[pb.ChatMessage(role="user", content="hi")]
        )
        with pytest.raises(grpc.RpcError) as denied:
            stub.ChatCompletion(
                other, metadata=[("authorization", f"Bearer {made['key']}")], timeout=10
            )
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert made["id"] in str(denied.value.details())


# -- the admin API --------------------------------------------------------------------------


def test_the_admin_api_needs_the_admin_key(gw_admin: tuple[Gateway, Admin, Path]) -> None:
    port = int(str(gw_admin[1].http.base_url).split(":")[2].split("/")[0])
    for key in (None, "wrong", "sk-lp-abc-def"):
        resp = Admin(port, key)("GET", "/keys")
        assert resp.status_code == 401
        assert resp.json()["error"]["message"]
    # A gateway key is no admin key.
    made = gw_admin[1].key()
    assert Admin(port, made["key"])("POST", "/keys", {}).status_code == 401


def test_admin_errors_name_what_is_wrong(admin: Admin) -> None:
    assert admin("GET", "/keys/nope").status_code == 404
    assert admin("PATCH", "/keys/nope", {"blocked": True}).status_code == 404
    bad = admin("POST", "/keys", {"allowed_models": "gpt-4o"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "allowed_models"
    bad = admin("POST", "/keys", {"expires_at": "next tuesday"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "expires_at"
    bad = admin("POST", "/keys", {"team": "nobody"})
    assert bad.status_code == 422 and "nobody" in bad.json()["error"]["message"]
    bad = admin("POST", "/keys", {"colour": "red"})
    assert bad.status_code == 422 and bad.json()["error"]["param"] == "colour"
    assert admin("POST", "/teams", {"name": "support"}).status_code == 409
    assert admin("GET", "/teams/none").status_code == 404


def test_admin_lists_keys_with_cursor_paging_and_filters(admin: Admin) -> None:
    admin.ok("POST", "/projects", {"name": "paging", "metadata": {"owner": "qa"}}, status=201)
    made = {admin.key(project="paging", alias=f"p{i}")["id"] for i in range(5)}
    seen: list[str] = []
    after = None
    while True:
        query = {"project": "paging", "limit": "2", **({"after": after} if after else {})}
        page = admin.ok("GET", "/keys?" + "&".join(f"{k}={v}" for k, v in query.items()))
        seen += [k["id"] for k in page["data"]]
        assert all("key" not in k and "secret_sha256" not in k for k in page["data"])
        if not page["has_more"]:
            break
        after = page["next_cursor"]
    assert sorted(seen) == sorted(made)
    assert admin.ok("GET", "/keys?project=paging&alias=p3")["data"][0]["alias"] == "p3"
    one = sorted(made)[0]
    admin.ok("DELETE", f"/keys/{one}")
    assert admin("GET", f"/keys/{one}").status_code == 404
    doc = admin.ok("GET", "/openapi.json")
    assert doc["openapi"].startswith("3.") and "/admin/v1/keys/{id}/rotate" in doc["paths"]


# -- the CLI --------------------------------------------------------------------------------


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", *args[:1], "--config", str(config), *args[1:]],
        capture_output=True,
        text=True,
        cwd=config.parent,
        timeout=30,
    )


def _status_until(gw: Gateway, key: str, want: int, seconds: float) -> float:
    """Seconds until a call with `key` gets `want` (fails the test after `seconds`). One
    kept-alive connection, so the figure is the gateway's, not the client's set-up."""
    start = time.monotonic()
    with httpx.Client(base_url=gw.base_url, timeout=5) as http:
        while True:
            resp = http.post(
                "/chat/completions",
                json={"model": "mock-1", "messages": CHAT},
                headers={"authorization": f"Bearer {key}"},
            )
            took = time.monotonic() - start
            if resp.status_code == want:
                return took
            if took > seconds:
                raise AssertionError(f"still {resp.status_code} after {seconds} s, not {want}")
            time.sleep(0.01)


def refused_within(gw: Gateway, key: str, seconds: float) -> float:
    """Seconds until the gateway refuses `key`."""
    return _status_until(gw, key, 401, seconds)


def accepted_within(gw: Gateway, key: str, seconds: float) -> float:
    """Seconds until the gateway serves `key`."""
    return _status_until(gw, key, 200, seconds)


def test_the_cli_manages_keys_in_the_database_without_the_gateway(gw: Gateway) -> None:
    # --config after the subcommand works as well as before it.
    made = subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", "teams", "create", "cli-team", "--models",
         "mock-*", "--config", str(gw.config_path)],
        capture_output=True, text=True, cwd=gw.config_path.parent, timeout=30,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    out = cli(gw.config_path, "keys", "create", "--alias", "from-cli", "--team", "cli-team")
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout[: out.stdout.rindex("}") + 1])
    key = created["key"]
    # A running gateway picks the new key up through its version poll.
    assert accepted_within(gw, key, 1.0) <= 1.0
    assert chat(gw, key, "mock-1")
    listing = cli(gw.config_path, "keys", "list", "--team", "cli-team")
    assert created["id"] in listing.stdout and "from-cli" in listing.stdout
    shown = json.loads(cli(gw.config_path, "keys", "show", created["id"]).stdout)
    assert shown["team"] == "cli-team" and "key" not in shown
    assert cli(gw.config_path, "keys", "block", created["id"]).returncode == 0
    assert refused_within(gw, key, 1.0) <= 1.0
    assert cli(gw.config_path, "keys", "delete", created["id"]).returncode == 0
    missing = cli(gw.config_path, "keys", "show", created["id"])
    assert missing.returncode == 1 and "no key" in missing.stderr
    assert cli(gw.config_path, "teams", "delete", "cli-team").returncode == 0
    hashed = cli(gw.config_path, "keys", "hash", key)
    assert f"id: {created['id']}" in hashed.stdout and "secret_sha256: " in hashed.stdout


def test_stats_by_key_and_team(gw: Gateway, admin: Admin) -> None:
    made = admin.key(team="support")
    for _ in range(3):
        chat(gw, made["key"], "mock-1")
    deadline = time.monotonic() + 30  # the CLI's start is slow on a loaded machine
    while True:
        out = cli(gw.config_path, "stats", "--by", "key", "--json")
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        mine = [r for r in rows if made["id"] in json.dumps(r)]
        if mine and "3" in json.dumps(mine[0]):
            break
        assert time.monotonic() < deadline, out.stdout + out.stderr
        time.sleep(0.1)
    teams = cli(gw.config_path, "stats", "--by", "team", "--json").stdout
    assert "support" in teams
    metrics = httpx.get(gw.url + "/metrics").text
    assert (
        f'llm_proxy_key_requests_total{{key_id="{made["id"]}",status="200",team="support"}} 3.0'
        in metrics
    )


# -- the YAML and the exposure rule -----------------------------------------------------------


def test_keys_declared_in_the_yaml_by_hash_are_served(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    digest = __import__("hashlib").sha256(b"yaml-declared-secret").hexdigest()
    config, _ = keys_config(
        mock_upstream,
        tmp_path,
        f"sqlite:///{tmp_path}/y.db",
        keys=[
            {"id": "gitops1", "secret_sha256": digest, "team": "ops", "allowed_models": ["mock-1"]}
        ],
        teams={"ops": {"allowed_models": ["mock-*"]}},
    )
    config["server"]["admin_port"] = 0
    gateway = start_gateway(config, tmp_path)
    try:
        assert chat(gateway, "sk-lp-gitops1-yaml-declared-secret", "mock-1")
        with pytest.raises(openai.PermissionDeniedError):
            chat(gateway, "sk-lp-gitops1-yaml-declared-secret", "gpt-4o-mini")
        with pytest.raises(openai.AuthenticationError):
            chat(gateway, "sk-lp-gitops1-yaml-declared-secreT", "mock-1")
    finally:
        gateway.stop()


def test_an_open_gateway_on_a_public_address_refuses_to_start(tmp_path: Path) -> None:
    path = tmp_path / "open.yaml"
    path.write_text(yaml.safe_dump({"providers": {"m": {"kind": "mock"}}}))
    out = subprocess.run(
        [sys.executable, "-m", "llm_proxy.cli", "serve", "--config", str(path), "--host",
         "0.0.0.0", "--port", str(free_port())],
        capture_output=True, text=True, timeout=30, cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 2
    assert "auth.allow_anonymous_non_loopback" in out.stderr


# -- revocation across instances -------------------------------------------------------------


def _two_gateways_revocation(upstream: MockUpstream, tmp: Path, store: str, **auth: Any) -> None:
    config_a, port_a = keys_config(upstream, tmp, store, **auth)
    config_b, _ = keys_config(upstream, tmp, store, **auth)
    a = start_gateway(config_a, tmp)
    try:
        b = start_gateway(config_b, tmp)
        try:
            admin = Admin(port_a)
            made = admin.key(alias="shared")
            assert accepted_within(b, made["key"], 1.0) <= 1.0  # made on A, served by B
            # A call in flight on B when the key is blocked finishes; the next is refused.
            result: dict[str, Any] = {}

            def slow_call() -> None:
                try:
                    result["text"] = chat(b, made["key"], "slow")
                except Exception as exc:
                    result["error"] = exc

            thread = threading.Thread(target=slow_call)
            thread.start()
            time.sleep(0.4)
            admin.ok("PATCH", f"/keys/{made['id']}", {"blocked": True})
            took = refused_within(b, made["key"], 1.0)
            thread.join(10)
            assert "text" in result, result
            assert took <= 1.0
            # Unblocked and deleted the same way.
            admin.ok("PATCH", f"/keys/{made['id']}", {"blocked": False})
            assert accepted_within(b, made["key"], 1.0) <= 1.0
            admin.ok("DELETE", f"/keys/{made['id']}")
            assert refused_within(b, made["key"], 1.0) <= 1.0
        finally:
            b.stop()
    finally:
        a.stop()


def test_a_key_blocked_on_one_gateway_is_refused_by_another_on_one_sqlite_file(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    _two_gateways_revocation(mock_upstream, tmp_path, f"sqlite:///{tmp_path}/shared.db")


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from redis_url(tmp_path_factory.mktemp("redis"))


def test_with_redis_a_blocked_key_is_refused_by_another_gateway_at_once(
    mock_upstream: MockUpstream, tmp_path: Path, shared_redis: str
) -> None:
    _two_gateways_revocation(
        mock_upstream,
        tmp_path,
        f"sqlite:///{tmp_path}/shared.db",
        redis_url=shared_redis,
        redis_channel=key_prefix() + "keys",
        poll_interval_s=0.5,
    )


def test_a_key_blocked_on_one_gateway_is_refused_by_another_on_postgresql(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    url = database_url()
    with private_schema(url) as schema:
        _two_gateways_revocation(mock_upstream, tmp_path, with_search_path(url, schema))


def test_a_gateway_refuses_to_serve_on_a_newer_key_schema(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    import sqlite3

    db = tmp_path / "future.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE keys_schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO keys_schema_version (version) VALUES (99)")
    config, _ = keys_config(mock_upstream, tmp_path, f"sqlite:///{db}")
    with pytest.raises(RuntimeError, match="newer than this gateway knows"):
        start_gateway(config, tmp_path)


def test_secrets_are_never_written_anywhere(mock_upstream: MockUpstream, tmp_path: Path) -> None:
    config, admin_port = keys_config(mock_upstream, tmp_path, f"sqlite:///{tmp_path}/s.db")
    config["logging"]["content"] = "full"
    gateway = start_gateway(config, tmp_path, grpc=True)
    try:
        admin = Admin(admin_port)
        made = admin.key(alias="planted", allowed_models=["mock-1", "gpt-4o-mini"])
        secret = made["key"][len(f"sk-lp-{made['id']}-") :]
        planted = "PLANTEDwrongSECRET0xC0FFEE"
        texts: list[str] = []
        c = client(gateway, made["key"])
        reply = c.chat.completions.create(
            model="mock-1",
            messages=[{"role": "user", "content": f"my key is {made['key']}"}],
            max_tokens=8,
        )
        assert reply.choices[0].message.content
        for key, model in (
            (f"sk-lp-{made['id']}-{planted}", "mock-1"),
            (made["key"], "claude"),
            (planted, "mock-1"),
        ):
            resp = httpx.post(
                gateway.base_url + "/chat/completions",
                json={"model": model, "messages": CHAT},
                headers={"authorization": f"Bearer {key}"},
            )
            assert resp.status_code in (401, 403)
            texts.append(resp.text)
        with grpc.insecure_channel(f"127.0.0.1:{gateway.grpc_port}") as channel:
            stub = pb_grpc.GatewayStub(channel)
            request = pb.ChatCompletionRequest(
                model="claude", messages=[pb.ChatMessage(role="user", content="hi")]
            )
            with pytest.raises(grpc.RpcError) as info:
                stub.ChatCompletion(
                    request, metadata=[("authorization", f"Bearer {made['key']}")], timeout=10
                )
            texts.append(str(info.value.details()))
            texts.append(str(info.value.trailing_metadata()))
        texts.append(httpx.get(gateway.url + "/metrics").text)
        texts.append(admin("GET", f"/keys/{made['id']}").text)
        texts.append(admin("GET", "/keys").text)
        time.sleep(0.5)  # the log writer's batch
    finally:
        gateway.stop()
    for path in tmp_path.rglob("*"):
        if path.is_file() and not path.name.endswith(".yaml"):
            texts.append(path.read_bytes().decode("latin-1"))
    everything = "\n".join(texts)
    assert made["id"] in everything  # the public id is shown, the secrets are not
    assert "my key is" in everything  # the prompt was logged, with the key masked
    assert secret not in everything
    assert planted not in everything


def test_a_key_blocked_through_one_worker_is_refused_by_every_worker(
    mock_upstream: MockUpstream, tmp_path: Path
) -> None:
    config, admin_port = keys_config(mock_upstream, tmp_path, f"sqlite:///{tmp_path}/w.db")
    config["server"]["workers"] = 2
    gateway = start_gateway(config, tmp_path)
    try:
        admin = Admin(admin_port)
        made = admin.key(alias="both-workers")
        time.sleep(0.6)  # the other worker's poll
        for _ in range(10):  # new connections: both workers answer (SO_REUSEPORT)
            assert chat(gateway, made["key"], "mock-1")
            assert admin("GET", f"/keys/{made['id']}").status_code == 200
        admin.ok("PATCH", f"/keys/{made['id']}", {"blocked": True})
        time.sleep(1.0)
        for _ in range(10):
            with pytest.raises(openai.AuthenticationError):
                chat(gateway, made["key"], "mock-1")
    finally:
        gateway.stop()


def test_the_admin_listener_answers_expect_continue_and_keep_alive(
    gw_admin: tuple[Gateway, Admin, Path],
) -> None:
    import socket

    port = int(str(gw_admin[1].http.base_url).split(":")[2].split("/")[0])
    body = json.dumps({"alias": "curl-like", "metadata": {"pad": "x" * 2000}}).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        head = (
            f"POST /admin/v1/keys HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {ADMIN}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            "expect: 100-continue\r\n\r\n"
        )
        sock.sendall(head.encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 201 ")
        # The same connection serves the next request.
        sock.sendall(
            f"GET /admin/v1/keys?alias=curl-like HTTP/1.1\r\nhost: x\r\n"
            f"authorization: Bearer {ADMIN}\r\n\r\n".encode()
        )
        answer = b""
        while not answer.rstrip().endswith(b"}"):
            answer += sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 200 ") and b"curl-like" in answer
