"""Active health probes (`health_check:` on a group): off unless configured.

Every `interval_s` each deployment of the group gets a tiny call (one token of chat, or a
one-word embedding); its success or failure goes to the deployment's breaker as a client
call's would, so an open breaker closes as soon as a probe gets through, without waiting for
a client's trial call. A probe costs a real call on a paid API: that is why it is off.

With `redis_url`, the instances sharing that Redis take turns: each round, the one that takes
the lock (SET NX, expiring with the round) probes and writes the results to a hash; the
others apply the hash's new results to their own breakers instead of probing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from typing import Any

import msgspec

from ..calls import Endpoint, decode_call
from ..config import HealthCheckConfig
from ..errors import GatewayError
from .attempts import failure_kind, retry_after_s
from .group import DeploymentState, ModelGroup
from .model_table import model_facts

log = logging.getLogger("llm_proxy.routing")
_encoder = msgspec.json.Encoder()


def _probe_call(deployment: DeploymentState, timeout_s: float) -> Any:
    model = deployment.deployment.model
    facts = model_facts(model)
    endpoint: Endpoint
    if facts is not None and facts.mode == "embedding":
        body = _encoder.encode({"model": model, "input": "ping"})
        endpoint = "embeddings"
    else:
        body = _encoder.encode(
            {"model": model, "messages": [{"role": "user", "content": "ping"}], "max_tokens": 1}
        )
        endpoint = "chat"
    call = decode_call(
        endpoint,
        body,
        door="http",
        request_id=f"health-{os.urandom(6).hex()}",
        headers={"x-llm-proxy-health-check": "1"},
    )
    call.deadline = time.monotonic() + timeout_s
    return call


async def probe(deployment: DeploymentState, timeout_s: float) -> tuple[bool, int, str]:
    """One probe of one deployment, its result applied to the deployment: (ok, status, why)."""
    call = _probe_call(deployment, timeout_s)
    started = time.perf_counter()
    try:
        await deployment.provider.complete(call, deployment.deployment)
    except GatewayError as exc:
        kind = failure_kind(exc) or "error"
        deployment.failed(time.monotonic(), exc.status, kind, exc.message, retry_after_s(exc))
        return False, exc.status, kind
    took = time.perf_counter() - started
    deployment.succeeded(time.monotonic(), took, took)
    return True, 200, ""


class HealthProbes:
    """The probe loops of the groups with `health_check`, started inside the worker."""

    def __init__(self, groups: list[ModelGroup]) -> None:
        self.groups = [g for g in groups if g.config.health_check is not None]
        self._tasks: list[asyncio.Task[None]] = []
        self._clients: dict[str, Any] = {}
        self.instance = os.urandom(8).hex()

    async def start(self) -> None:
        for group in self.groups:
            self._tasks.append(asyncio.create_task(self._run(group)))

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks = []
        for client in self._clients.values():
            with contextlib.suppress(Exception):
                await client.aclose()
        self._clients = {}

    def _redis(self, url: str) -> Any:
        client = self._clients.get(url)
        if client is None:
            import redis.asyncio as aioredis

            client = self._clients[url] = aioredis.Redis.from_url(
                url, socket_timeout=2, socket_connect_timeout=2
            )
        return client

    async def _run(self, group: ModelGroup) -> None:
        settings = group.config.health_check
        assert settings is not None
        applied: dict[str, float] = {}
        # Started at a random point of the first interval, so workers do not probe in step.
        await asyncio.sleep(random.random() * settings.interval_s)
        while True:
            try:
                await self._round(group, settings, applied)
            except Exception:
                log.exception("health probes of %s failed", group.name)
            await asyncio.sleep(settings.interval_s)

    async def _round(
        self, group: ModelGroup, settings: HealthCheckConfig, applied: dict[str, float]
    ) -> None:
        if settings.redis_url is None:
            await asyncio.gather(*(probe(d, settings.timeout_s) for d in group.deployments))
            return
        redis = self._redis(settings.redis_url)
        prefix = settings.key_prefix + group.name
        ttl_ms = max(1, int(settings.interval_s * 1000 * 0.9))
        if await redis.set(prefix + ":lock", self.instance, nx=True, px=ttl_ms):
            results = await asyncio.gather(
                *(probe(d, settings.timeout_s) for d in group.deployments)
            )
            now = time.time()
            mapping = {
                d.id: _encoder.encode([ok, status, why, now])
                for d, (ok, status, why) in zip(group.deployments, results, strict=True)
            }
            for d in group.deployments:
                applied[d.id] = now
            await redis.hset(prefix + ":results", mapping=mapping)
            await redis.pexpire(prefix + ":results", int(settings.interval_s * 3000))
            return
        shared = await redis.hgetall(prefix + ":results")
        by_id = {d.id: d for d in group.deployments}
        for raw_id, raw in shared.items():
            deployment = by_id.get(raw_id.decode())
            if deployment is None:
                continue
            ok, status, why, at = msgspec.json.decode(raw)
            if at <= applied.get(deployment.id, 0.0):
                continue
            applied[deployment.id] = at
            now = time.monotonic()
            if ok:
                deployment.succeeded(now, deployment.ewma_ttfb_s, deployment.ewma_total_s)
            else:
                deployment.failed(now, status, why, "failed its health probe", None)
