"""The limits engine in process: both backends give the same answers (Redis for real), a new
budget period starts clean, and the window forgets a minute-old slot."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from llm_proxy.calls import Call, Deployment, Outcome, decode_call
from llm_proxy.config import parse_config
from llm_proxy.errors import GatewayError
from llm_proxy.limits.backend import MemoryBackend, Verdict
from llm_proxy.limits.plan import WINDOW
from llm_proxy.limits.stage import Limiter
from llm_proxy.pricing import PriceTable
from llm_proxy.wire.openai import Usage


def _limiter(backend: str, url: str, prefix: str, **limits: Any) -> Limiter:
    config = parse_config(
        {
            "providers": {"m": {"kind": "mock"}},
            "models": {"priced": {"provider": "m", "model": "priced-model"}},
            "pricing": {"models": {"priced-model": {"input": 1000.0, "output": 1000.0}}},
            "limits": {"backend": backend, "redis_url": url, "key_prefix": prefix, **limits},
        }
    )
    return Limiter(config, PriceTable.from_config(config))


def _call(max_tokens: int = 10) -> Call:
    body = (
        b'{"model":"priced","max_tokens":%d,"messages":[{"role":"user","content":"hi"}]}'
        % max_tokens
    )
    call = decode_call("chat", body, door="http", request_id="r", headers={})
    call.deployment = Deployment("priced", "m", "priced-model")
    return call


async def _admit(limiter: Limiter, call: Call) -> None:
    pending = limiter(call)
    if pending is not None:
        await pending


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_new_budget_period_starts_clean(backend: str, redis_server: str, prefix: str) -> None:
    async def scenario() -> None:
        limiter = _limiter(backend, redis_server, prefix, budgets=[{"usd": 0.1, "period": "daily"}])
        await limiter.start()
        try:
            admitted = 0
            with pytest.raises(GatewayError) as refused:
                for _ in range(100):
                    call = _call()
                    await _admit(limiter, call)
                    admitted += 1
                    limiter.settle(call, Outcome(200, usage=Usage(8, 10, 18)))
                    await asyncio.sleep(0.01 if backend == "redis" else 0)
            assert refused.value.code == "insufficient_quota"
            # 0.1 USD at 18 tokens x $0.001: the fifth call's reservation no longer fits.
            assert admitted == 5
            limiter._periods.clock = lambda: time.time() + 86_400
            await _admit(limiter, _call())  # tomorrow: a new counter
            limiter._periods.clock = time.time
            with pytest.raises(GatewayError):
                await _admit(limiter, _call())  # today's is still spent
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_the_window_forgets_a_slot_61_seconds_on() -> None:
    backend = MemoryBackend()
    window = backend.window("t:rpm", 1000, 60)

    def reserve(lease: str) -> Verdict:
        return backend.reserve_cells([WINDOW], [window], [2], [1], [1000], [60], lease)

    assert reserve("a").ok
    assert reserve("b").ok
    refused = reserve("c")
    assert not refused.ok and 59_000 < refused.wait_ms <= 61_000
    # Move both calls' slot back in time by 61 s: they have left the window.
    window.slots = {s - 61: v for s, v in window.slots.items()}
    window.h -= 61
    assert reserve("d").ok


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_all_or_nothing(backend: str, redis_server: str, prefix: str, tmp_path: Path) -> None:
    """A call refused by one scope takes nothing from the others."""

    async def scenario() -> None:
        limiter = _limiter(
            backend,
            redis_server,
            prefix,
            **{"global": {"rpm": 5, "models": {"priced": {"rpm": 1}}}},
        )
        await limiter.start()
        try:
            await _admit(limiter, _call())
            for _ in range(3):
                with pytest.raises(GatewayError) as refused:
                    await _admit(limiter, _call())
                assert "model `priced`" in refused.value.message
            plan = limiter.plan(None, None, "priced")
            args = limiter._args(plan, 0, 0)
            if isinstance(limiter.backend, MemoryBackend):
                _, used = limiter.backend.usage(args)
            else:
                _, used = await limiter.backend.usage(args)
            assert used == [1, 1]  # the global window holds only the admitted call
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_a_rolling_budget_counts_the_last_window(redis_server: str, prefix: str) -> None:
    async def scenario() -> None:
        limiter = _limiter(
            "redis",
            redis_server,
            prefix,
            budgets=[{"usd": 0.05, "period": "rolling", "window": "2h"}],
        )
        await limiter.start()
        try:
            call = _call()
            await _admit(limiter, call)
            limiter.settle(call, Outcome(200, usage=Usage(8, 10, 18)))
            await asyncio.sleep(0.05)
            plan = limiter.plan(None, None, "priced")
            (item,) = plan.items
            assert item.a == 3_600_000 and item.b == 2  # hour slots, two of them
            assert limiter.backend.__class__.__name__ == "RedisBackend"
            _, used = await limiter.backend.usage(limiter._args(plan, 0, 0))  # type: ignore[union-attr]
            assert used == [18_000]  # 18 tokens at $1000 per million: 0.018 USD in micro-dollars
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_callers_waiting_on_a_hung_connect_all_get_a_backend_error() -> None:
    from llm_proxy.limits.backend import BackendError
    from llm_proxy.limits.redis import RedisBackend

    async def scenario() -> None:
        held: list[asyncio.StreamWriter] = []

        async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # accepts, never answers

        server = await asyncio.start_server(accept, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        backend = RedisBackend(f"redis://127.0.0.1:{port}/0", timeout_s=0.2, retry_after_s=0)
        item = (WINDOW, "t:rpm", 10, 1, 1000, 60)

        async def one(delay: float) -> BaseException | None:
            await asyncio.sleep(delay)
            try:
                await backend.reserve("", [item])
            except BaseException as exc:
                return exc
            return None

        results = await asyncio.gather(one(0), one(0.03), one(0.06))
        assert all(isinstance(r, BackendError) for r in results), results
        await backend.close()
        for writer in held:
            writer.close()
        server.close()

    asyncio.run(scenario())


def test_a_refused_auth_closes_its_connection(redis_server: str) -> None:
    import redis as redis_py
    from llm_proxy.limits.backend import BackendError
    from llm_proxy.limits.redis import RedisBackend

    client = redis_py.Redis.from_url(redis_server)
    before = len(client.client_list())
    host = redis_server.split("//", 1)[1]
    backend = RedisBackend(f"redis://:wrong-password@{host}", timeout_s=0.5, retry_after_s=0)

    async def scenario() -> None:
        for _ in range(5):
            with pytest.raises(BackendError):
                await backend.reserve("", [(WINDOW, "t:rpm", 10, 1, 1000, 60)])
        await backend.close()

    asyncio.run(scenario())
    time.sleep(0.2)
    assert len(client.client_list()) <= before
    client.close()
