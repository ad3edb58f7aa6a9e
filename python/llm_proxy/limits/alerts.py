"""Budget threshold events: one per threshold, period and scope across every instance.

Each event is a log line, a metric, and (with `limits.alerts.webhook_url`) a POST of a JSON
body signed with HMAC-SHA256 (`x-llm-proxy-signature: sha256=<hex>` over the body).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
import urllib.request
from typing import TYPE_CHECKING, Any

import msgspec

from ..credentials import safe_url
from .backend import BackendError, MemoryBackend
from .plan import COUNTER

if TYPE_CHECKING:
    from ..limits_config import AlertConfig
    from ..observe.metrics import GatewayMetrics
    from .redis import RedisBackend
    from .stage import Ticket

log = logging.getLogger("llm_proxy.limits")
_encode = msgspec.json.Encoder().encode
_MAX_SEEN = 65536


class Alerts:
    def __init__(
        self,
        settings: AlertConfig,
        prefix: str,
        backend: MemoryBackend | RedisBackend,
        metrics: GatewayMetrics | None,
    ) -> None:
        self.settings = settings
        self.prefix = prefix
        self.backend = backend
        self.metrics = metrics
        # Alert keys this process already saw marked, until when (ms): not asked of the
        # backend again before then (a rolling window's mark lapses with the window). For the
        # memory backend this is the mark itself.
        self._seen: dict[str, int] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=self.settings.timeout_s)

    def check(self, ticket: Ticket, after: list[int]) -> None:
        now_ms = int(time.time() * 1000)
        assert ticket.args is not None
        for item, arg, spent in zip(ticket.plan.items, ticket.args, after, strict=True):
            budget = item.budget
            if budget is None or not budget.alert_at:
                continue
            for share in budget.alert_at:
                if spent < item.limit * share:
                    break
                mark = f"{self.prefix}alert:{arg[1]}:{share}"
                if self._seen.get(mark, 0) > now_ms:
                    continue
                ttl_ms = arg[4] - now_ms if arg[0] == COUNTER else arg[4] * arg[5]
                if len(self._seen) >= _MAX_SEEN:
                    self._forget(now_ms)
                self._seen[mark] = now_ms + ttl_ms
                event = {
                    "type": "budget.threshold",
                    "scope": item.scope,
                    "threshold": share,
                    "budget_usd": budget.usd,
                    "spent_usd": spent / 1e6,
                    "period": budget.period,
                    "window": budget.window,
                    "at": now_ms / 1000,
                }
                if arg[0] == COUNTER:
                    event["period_end"] = arg[5] / 1000
                self._mark(mark, ttl_ms, event)

    def _forget(self, now_ms: int) -> None:
        """Drop the lapsed marks; all of them only if every one is still live."""
        for mark in [m for m, until in self._seen.items() if until <= now_ms]:
            del self._seen[mark]
        if len(self._seen) >= _MAX_SEEN:
            self._seen.clear()

    def _mark(self, mark: str, ttl_ms: int, event: dict[str, Any]) -> None:
        if isinstance(self.backend, MemoryBackend):
            self._fire(event)  # one process: `_seen` is the mark
            return
        task = asyncio.get_running_loop().create_task(self._mark_shared(mark, ttl_ms, event))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _mark_shared(self, mark: str, ttl_ms: int, event: dict[str, Any]) -> None:
        backend = self.backend
        assert not isinstance(backend, MemoryBackend)
        try:
            first = await backend.mark_once(mark, ttl_ms)
        except BackendError as exc:
            self._seen.pop(mark, None)  # asked again at the next settle
            log.warning("limits: budget alert not marked: %s", exc)
            return
        if first:
            self._fire(event)

    def _fire(self, event: dict[str, Any]) -> None:
        log.warning(
            "budget alert: %s has spent $%.6f of $%.2f (%d%%) %s",
            event["scope"],
            event["spent_usd"],
            event["budget_usd"],
            round(event["threshold"] * 100),
            f"this {event['period']} period" if event["window"] is None else
            f"in the last {event['window']}",
        )  # fmt: skip
        if self.metrics is not None:
            self.metrics.budget_alerts.labels(
                event["scope"].split(":", 1)[0], str(event["threshold"])
            ).inc()
        if self.settings.webhook_url:
            task = asyncio.get_running_loop().create_task(
                asyncio.to_thread(self._post, _encode(event))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _post(self, body: bytes) -> None:
        url = self.settings.webhook_url
        assert url is not None
        headers = {"content-type": "application/json", "user-agent": "llm-proxy"}
        secret = self.settings.webhook_secret
        if secret:
            digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
            headers["x-llm-proxy-signature"] = f"sha256={digest}"
        request = urllib.request.Request(url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.settings.timeout_s) as response:
                response.read()
        except Exception as exc:  # an unreachable webhook must not affect calls
            log.warning("budget alert webhook %s failed: %s", safe_url(url), type(exc).__name__)
