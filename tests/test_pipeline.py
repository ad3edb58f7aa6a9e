"""The pipeline's stage order, the same for whole and streamed calls, run in-process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

import pytest
from llm_proxy.calls import Call, Outcome, decode_call
from llm_proxy.config import parse_config
from llm_proxy.errors import GatewayError
from llm_proxy.pipeline import Pipeline

BODY = b'{"model":"m1","messages":[{"role":"user","content":"hello there"}]}'


class Log:
    """Every stage and provider step the test watches, in the order they ran."""

    def __init__(self) -> None:
        self.steps: list[str] = []
        self.outcomes: list[tuple[str, Outcome]] = []

    def finished(self, call: Call, outcome: Outcome) -> None:
        self.steps.append("record")
        self.outcomes.append((call.request_id, outcome))


class Watch:
    def __init__(self, name: str, log: Log, refuse: bool = False, awaits: bool = False) -> None:
        self.name = name
        self.log = log
        self.refuse = refuse
        self.awaits = awaits

    def __call__(self, call: Call) -> Awaitable[None] | None:
        self.log.steps.append(self.name)
        if self.refuse:
            raise GatewayError(403, f"refused by {self.name}", code="refused")
        if self.awaits:
            return asyncio.sleep(0)
        return None


def pipeline(log: Log, cache: bool = False) -> Pipeline:
    config = parse_config(
        {
            "providers": {"m": {"kind": "mock"}},
            "models": {"m1": {"provider": "m", "model": "mock-1"}},
            "cache": {"enabled": cache},
            "logging": {"enabled": False},
        }
    )
    p = Pipeline(config, log)
    provider = p.providers["m"]
    complete, stream = provider.complete, provider.stream

    async def watched_complete(call: Call, deployment: Any) -> Any:
        log.steps.append("upstream")
        return await complete(call, deployment)

    async def watched_stream(call: Call, deployment: Any) -> Any:
        log.steps.append("upstream")
        return await stream(call, deployment)

    provider.complete = watched_complete  # type: ignore[method-assign]
    provider.stream = watched_stream  # type: ignore[method-assign]
    return p


def call(request_id: str, body: bytes = BODY) -> Call:
    return decode_call("chat", body, door="http", request_id=request_id, headers={})


async def drain(p: Pipeline, c: Call) -> list[bytes]:
    stream = await p.stream(c)
    return [event async for event in stream]


@pytest.mark.parametrize("streamed", [False, True])
def test_admission_stages_run_in_order_before_the_upstream_and_the_record_comes_last(
    streamed: bool,
) -> None:
    log = Log()
    p = pipeline(log)
    p.admission = [Watch("authenticate", log), Watch("limits", log, awaits=True), *p.admission]

    async def run() -> None:
        await p.start()
        try:
            if streamed:
                events = await drain(p, call("r1"))
                assert events[-1] == b"data: [DONE]\n\n"
            else:
                reply = await p.complete(call("r1"))
                assert reply.status == 200
        finally:
            await p.close()

    asyncio.run(run())
    assert log.steps == ["authenticate", "limits", "upstream", "record"]
    ((request_id, outcome),) = log.outcomes
    assert (request_id, outcome.status) == ("r1", 200)


@pytest.mark.parametrize("streamed", [False, True])
def test_a_refusing_stage_stops_the_call_and_it_is_still_recorded_once(streamed: bool) -> None:
    log = Log()
    p = pipeline(log)
    p.admission = [Watch("authenticate", log, refuse=True), *p.admission]

    async def run() -> None:
        await p.start()
        try:
            with pytest.raises(GatewayError) as info:
                if streamed:
                    await drain(p, call("r2"))
                else:
                    await p.complete(call("r2"))
            assert info.value.status == 403
        finally:
            await p.close()

    asyncio.run(run())
    assert log.steps == ["authenticate", "record"]
    ((_, outcome),) = log.outcomes
    assert (outcome.status, outcome.error_type) == (403, "permission_error")


def test_an_unknown_model_is_refused_by_the_route_stage_and_recorded() -> None:
    log = Log()
    p = pipeline(log)

    async def run() -> None:
        await p.start()
        try:
            with pytest.raises(GatewayError) as info:
                await p.complete(call("r3", b'{"model":"nope","messages":[{"role":"user"}]}'))
            assert info.value.status == 404
        finally:
            await p.close()

    asyncio.run(run())
    assert log.steps == ["record"]
    assert log.outcomes[0][1].status == 404


@pytest.mark.parametrize("streamed", [False, True])
def test_a_cache_hit_skips_the_upstream_but_not_admission_or_the_record(streamed: bool) -> None:
    log = Log()
    p = pipeline(log, cache=True)
    p.admission = [Watch("authenticate", log), *p.admission]

    async def run() -> None:
        await p.start()
        try:
            for request_id in ("a", "b"):
                if streamed:
                    await drain(p, call(request_id))
                else:
                    await p.complete(call(request_id))
                await asyncio.sleep(0.05)  # the cache write is queued off the response path
        finally:
            await p.close()

    asyncio.run(run())
    assert log.steps == ["authenticate", "upstream", "record", "authenticate", "record"]
    assert [o.status for _, o in log.outcomes] == [200, 200]
