"""The `limits` admission stage: reserves a call's requests, tokens, slot in flight and
maximum cost in every scope it meets, all or nothing, and settles them when the call ends.

Scopes: the key, the key x model, its team (x model), its project (x model), the model, and
the gateway (global, x model). Tokens reserved: the exact input tokens (the Rust tokenizer)
plus `max_tokens` (or `limits.default_max_tokens`); the cost reserved is their price. The
settle replaces both with what the call really used (streams cut short included).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from ..calls import Call, Outcome, new_request_id
from ..config import Config
from ..errors import GatewayError
from ..pricing import Price, PriceTable, price_of
from ..tokens import count_prompt
from .alerts import Alerts
from .answers import rate_headers, refusal
from .backend import Args, BackendError, MemoryBackend, SettleArgs, Verdict
from .plan import (
    COST,
    COUNTER,
    ONE,
    PARALLEL,
    TOKENS,
    WINDOW,
    Item,
    Periods,
    Plan,
    budget_items,
    micro,
    rate_items,
    scope_items,
)

if TYPE_CHECKING:
    from ..keys.table import KeyEntry, KeyTable
    from ..observe.metrics import GatewayMetrics
    from .redis import RedisBackend

log = logging.getLogger("llm_proxy.limits")

_DAY_MS = 86_400_000
_MAX_PLANS = 8192


@dataclass(slots=True)
class Ticket:
    """What a call reserved, for its settle."""

    plan: Plan
    # The backend items as sent to Redis; for the memory backend only when needed (a refusal,
    # an alert), its costs and cells instead.
    args: list[Args] | None
    lease: str
    now_ms: int
    input_tokens: int
    output_tokens: int
    price: Price | None
    cost_micro: int
    costs: list[int] | None = None
    cells: list[Any] | None = None


class Limiter:
    """Admission stage (`limits`) and the settle of every call it admitted."""

    name = "limits"

    def __init__(
        self,
        config: Config,
        prices: PriceTable,
        keys: KeyTable | None = None,
        metrics: GatewayMetrics | None = None,
    ) -> None:
        settings = config.limits
        self.settings = settings
        self.config = config
        self.prices = prices
        self.keys = keys
        self.metrics = metrics
        self.prefix = settings.key_prefix
        self.backend: MemoryBackend | RedisBackend
        if settings.backend == "redis":
            # Imported only when used: redis-py loads OpenTelemetry when it is installed.
            from .redis import RedisBackend

            self.backend = RedisBackend(
                settings.redis_url, settings.timeout_s, settings.retry_after_s
            )
        else:
            self.backend = MemoryBackend()
        self._sync = isinstance(self.backend, MemoryBackend)
        self._lease_ms = int(settings.lease_s * 1000)
        self._periods = Periods(settings.timezone)
        self._plans: dict[tuple[str | None, str], Plan] = {}
        self._reject_unpriced = config.pricing.unknown_model == "reject"
        self._last_error_log = -math.inf
        self.alerts = Alerts(settings.alerts, self.prefix, self.backend, metrics)

    @staticmethod
    def wanted(config: Config) -> bool:
        """Whether any limit or budget can apply: configured ones, or keys that may carry some."""
        s = config.limits
        return (
            config.auth.mode == "keys"
            or s.global_ is not None
            or bool(s.budgets)
            or any(m.limits is not None and not m.limits.empty for m in config.models.values())
        )

    async def start(self) -> None:
        await self.backend.start()

    async def close(self) -> None:
        await self.alerts.close()
        await self.backend.close()

    # -- the plan of a (key, model) pair -------------------------------------------------------

    def plan(self, key_id: str | None, entry: KeyEntry | None, model: str) -> Plan:
        plans = self._plans
        cached = plans.get((key_id, model))
        if cached is not None and cached.owner is entry:
            return cached
        p, lease = self.prefix, self._lease_ms
        items: list[Item] = []
        if entry is not None:
            items += scope_items(p, f"key:{entry.id}", entry.limits, model, lease)
            if entry.team:
                items += scope_items(p, f"team:{entry.team}", entry.team_limits, model, lease)
            if entry.project:
                items += scope_items(
                    p, f"project:{entry.project}", entry.project_limits, model, lease
                )
        model_config = self.config.models.get(model)
        if model_config is not None and model_config.limits is not None:
            items += rate_items(p, f"model:{model}", model_config.limits, lease)
        items += scope_items(p, "global", self.settings.global_, model, lease)
        if entry is not None:
            items += budget_items(p, f"key:{entry.id}", entry.budgets)
            if entry.team:
                items += budget_items(p, f"team:{entry.team}", entry.team_budgets)
            if entry.project:
                items += budget_items(p, f"project:{entry.project}", entry.project_budgets)
        items += budget_items(p, "global", self.settings.budgets)
        plan = Plan(items, owner=entry)
        if len(plans) >= _MAX_PLANS:
            plans.clear()
        plans[(key_id, model)] = plan
        return plan

    # -- admission -----------------------------------------------------------------------------

    def __call__(self, call: Call) -> Awaitable[None] | None:
        key_id = call.key_id
        keys = self.keys
        entry = keys.entries.get(key_id) if key_id is not None and keys is not None else None
        plan = self.plan(key_id, entry, call.model)
        if not plan.items:
            return None
        input_tokens = output_tokens = cost = 0
        price = None
        if plan.tokens:
            input_tokens, output_tokens = self._tokens(call)
        if plan.budgets:
            if not plan.tokens:
                input_tokens, output_tokens = self._tokens(call)
            price, cost = self._cost(call, input_tokens, output_tokens)
        lease = new_request_id() if plan.parallel else ""
        if self._sync:
            costs = self._costs(plan, input_tokens + output_tokens, cost)
            backend = self.backend
            assert isinstance(backend, MemoryBackend)
            # Counters change with the period: a plan with budgets resolves them per call.
            cells = plan.cells
            if cells is None or plan.budgets:
                cells = self._cells(plan, backend)
            ticket = Ticket(plan, None, lease, 0, input_tokens, output_tokens, price, cost, costs)
            if plan.alerts:  # the alert marks name the periods reserved from
                ticket.args = self._args(plan, input_tokens + output_tokens, cost)
            # Counters change with the period: the settle must find the ones reserved from.
            ticket.cells = list(cells) if plan.budgets else cells
            verdict = backend.reserve_cells(
                plan.kinds, cells, plan.limits, costs, plan.a_s, plan.b_s, lease
            )
            if not verdict.ok:
                ticket.args = self._args(plan, input_tokens + output_tokens, cost)
            self._admitted(call, ticket, verdict)
            return None
        args = self._args(plan, input_tokens + output_tokens, cost)
        ticket = Ticket(plan, args, lease, 0, input_tokens, output_tokens, price, cost)
        return self._reserve(call, ticket)

    def _costs(self, plan: Plan, tokens: int, cost: int) -> list[Any]:
        return [1 if c == ONE else tokens if c == TOKENS else cost for c in plan.amounts]

    def _cells(self, plan: Plan, backend: MemoryBackend) -> list[Any]:
        """The memory backend's window, leases or counter behind each item (counters: the
        current period's)."""
        cells = plan.cells
        if cells is None:
            cells = []
            for item in plan.items:
                if item.kind == WINDOW:
                    cells.append(backend.window(item.key, item.a, item.b))
                elif item.kind == PARALLEL:
                    cells.append(backend.leases(item.key))
                else:
                    cells.append(None)
            plan.cells = cells
        for n, item in enumerate(plan.items):
            if item.kind == COUNTER:
                assert item.budget is not None
                start, end = self._periods.current(item.budget.period)
                known = plan.counter_cells.get(n)
                if known is None or known[0] != start:
                    counter = backend.counter(f"{item.key}:{start}", end + _DAY_MS)
                    known = plan.counter_cells[n] = (start, counter)
                cells[n] = known[1]
        return cells

    async def _reserve(self, call: Call, ticket: Ticket) -> None:
        assert not isinstance(self.backend, MemoryBackend)
        assert ticket.args is not None
        try:
            verdict = await self.backend.reserve(ticket.lease, ticket.args)
        except BaseException as exc:
            # The script may have run (a timeout, the client leaving): free any slot it took.
            if ticket.plan.parallel:
                keys = [arg[1] for arg in ticket.args if arg[0] == PARALLEL]
                self.backend.release(ticket.lease, keys)
            if not isinstance(exc, BackendError):
                raise
            self._backend_failed(exc)
            return
        self._admitted(call, ticket, verdict)

    def _backend_failed(self, exc: BackendError) -> None:
        action = self.settings.on_backend_error
        if self.metrics is not None:
            self.metrics.limits_backend_errors.labels(self.backend.name, action).inc()
        now = time.monotonic()
        if now - self._last_error_log >= self.settings.log_interval_s:
            self._last_error_log = now
            log.warning(
                "limits: %s; calls are %s while it fails (limits.on_backend_error)",
                exc,
                "let through" if action == "allow" else "refused",
            )
        if action == "deny":
            raise GatewayError(
                503,
                "The gateway cannot check rate limits right now; try again shortly.",
                code="limits_unavailable",
                headers=[("retry-after", str(max(1, math.ceil(self.settings.retry_after_s))))],
            )

    def _tokens(self, call: Call) -> tuple[int, int]:
        deployment = call.deployment
        model = deployment.model if deployment is not None else call.model
        try:
            input_tokens = count_prompt(call, model)
        except ValueError:
            input_tokens = 0
        if call.endpoint == "embeddings":
            return input_tokens, 0
        cap = call.max_tokens
        return input_tokens, cap if cap is not None else self.settings.default_max_tokens

    def _cost(self, call: Call, input_tokens: int, output_tokens: int) -> tuple[Price | None, int]:
        deployment = call.deployment
        price = self.prices.lookup((deployment.model if deployment else None, call.model))
        if price is None:
            if self._reject_unpriced:
                raise GatewayError(
                    403,
                    f"The model `{call.model}` has no price, and a budget applies to this call; "
                    f"add it under `pricing.models` in the gateway's config.",
                    param="model",
                    code="model_price_unknown",
                )
            return None, 0
        return price, micro(price_of(price, input_tokens, output_tokens))

    def _args(self, plan: Plan, tokens: int, cost: int) -> list[Args]:
        args: list[Args] = []
        amounts = plan.amounts
        for n, item in enumerate(plan.items):
            code = amounts[n]
            amount = 1 if code == ONE else tokens if code == TOKENS else cost
            if item.kind == COUNTER:
                assert item.budget is not None
                start, end = self._periods.current(item.budget.period)
                known = plan.counter_keys.get(n)
                if known is None or known[0] != start:
                    known = plan.counter_keys[n] = (start, f"{item.key}:{start}")
                args.append((COUNTER, known[1], item.limit, amount, end + _DAY_MS, end))
            else:
                args.append((item.kind, item.key, item.limit, amount, item.a, item.b))
        return args

    def _admitted(self, call: Call, ticket: Ticket, verdict: Verdict) -> None:
        if not verdict.ok:
            item = ticket.plan.items[verdict.refused]
            assert ticket.args is not None
            if self.metrics is not None:
                self.metrics.limit_refusals.labels(item.scope.split(":", 1)[0], item.metric).inc()
            raise refusal(call.key_id, item, ticket.args[verdict.refused], verdict)
        ticket.now_ms = verdict.now_ms
        call.limits = ticket
        headers = rate_headers(ticket.plan, verdict)
        if headers:
            call.rate_headers = headers

    # -- the settle ----------------------------------------------------------------------------

    def settle(self, call: Call, outcome: Outcome) -> None:
        """Replace the call's reservation with what it used, and free its slot in flight."""
        ticket = call.limits
        if ticket is None:
            return
        call.limits = None
        refund = call.cache_status == "hit" and not self.settings.count_cache_hits
        tokens, cost = self._used(call, outcome, ticket) if not refund else (0, 0)
        plan = ticket.plan
        if ticket.costs is not None:
            self._settle_memory(ticket, _deltas(plan, ticket.costs, tokens, cost, refund))
            return
        assert ticket.args is not None
        deltas = _deltas(plan, [arg[3] for arg in ticket.args], tokens, cost, refund)
        items: list[SettleArgs] = []
        for (kind, key, _limit, _cost, a, b), delta in zip(ticket.args, deltas, strict=True):
            if delta or kind == PARALLEL or plan.alerts:
                items.append((kind, key, delta, a, b, ticket.now_ms // a if kind == WINDOW else 0))
        if not items:
            return
        assert not isinstance(self.backend, MemoryBackend)
        future = self.backend.settle(ticket.lease, items)
        if future is None:
            return
        if plan.alerts:
            future.add_done_callback(lambda f: self._settled(ticket, f))
        else:
            future.add_done_callback(_quiet)

    def _settle_memory(self, ticket: Ticket, deltas: list[int]) -> None:
        plan = ticket.plan
        assert ticket.cells is not None and isinstance(self.backend, MemoryBackend)
        after = self.backend.settle_cells(
            plan.kinds, ticket.cells, deltas, plan.a_s, ticket.now_ms, ticket.lease
        )
        if plan.alerts:
            self.alerts.check(ticket, after)

    def _settled(self, ticket: Ticket, future: asyncio.Future[list[int]]) -> None:
        if future.cancelled() or future.exception() is not None:
            return
        self.alerts.check(ticket, future.result())

    def _used(self, call: Call, outcome: Outcome, ticket: Ticket) -> tuple[int, int]:
        """Tokens and micro-dollars the call really used; the reservation when not known."""
        prompt = completion = cached = 0
        usage = outcome.usage
        summary = outcome.summary
        if usage is not None:
            prompt, completion = usage.prompt_tokens, usage.completion_tokens
            details = usage.prompt_tokens_details
            cached = details.cached_tokens if details is not None else 0
        elif summary is not None:
            prompt = summary.prompt_tokens if not summary.usage_counted else 0
            prompt = prompt or ticket.input_tokens
            completion = summary.completion_tokens
        elif outcome.status == 499 or outcome.error_type == "shutdown":
            # A whole call cancelled midway: the upstream may have used it all.
            return ticket.input_tokens + ticket.output_tokens, ticket.cost_micro
        elif outcome.status >= 400 or outcome.response_body is None:
            # Refused or failed, or answered without generating (a token count, a stored
            # response): no tokens were used.
            return 0, 0
        else:
            # A whole answer without usage: its text counted like the log counts it.
            prompt = ticket.input_tokens
            completion = _answer_tokens(outcome.response_body, call)
        cost = micro(price_of(ticket.price, prompt, completion, cached)) if ticket.price else 0
        return prompt + completion, cost

    # -- what a key stands at ------------------------------------------------------------------

    async def usage(self, key_id: str, entry: KeyEntry) -> dict[str, Any]:
        """Limits, current usage and spend of every scope a key's calls meet (`/v1/key/info`)."""
        plan = self.plan(key_id, entry, "")
        args = self._args(plan, 0, 0)
        if not args:
            return {"limits_usage": []}
        if self._sync:
            assert isinstance(self.backend, MemoryBackend)
            _now, used = self.backend.usage(args)
        else:
            assert not isinstance(self.backend, MemoryBackend)
            try:
                _now, used = await self.backend.usage(args)
            except BackendError as exc:
                log.warning("limits: key info without usage: %s", exc)
                return {"limits_usage": None, "limits_error": "the limits backend is unavailable"}
        rows = []
        for item, arg, amount in zip(plan.items, args, used, strict=True):
            row: dict[str, Any] = {"scope": item.scope, "metric": item.metric}
            if item.metric == "budget":
                assert item.budget is not None
                row.update(
                    budget_usd=item.budget.usd,
                    period=item.budget.period,
                    spent_usd=amount / 1e6,
                    remaining_usd=max(0.0, item.limit - amount) / 1e6,
                )
                if arg[0] == COUNTER:
                    row["period_end"] = (
                        datetime.fromtimestamp(arg[5] / 1000, UTC)
                        .isoformat()
                        .replace("+00:00", "Z")
                    )
            else:
                row.update(limit=item.limit, used=amount, remaining=max(0, item.limit - amount))
            rows.append(row)
        return {"limits_usage": rows}


def _deltas(plan: Plan, reserved: list[int], tokens: int, cost: int, refund: bool) -> list[int]:
    """Each item's change at the settle: tokens and cost to what was used, a refunded cache
    hit's request given back, the rest unchanged."""
    deltas = []
    for n, code in enumerate(plan.amounts):
        if code == TOKENS:
            deltas.append(tokens - reserved[n])
        elif code == COST:
            deltas.append(cost - reserved[n])
        else:
            deltas.append(-1 if refund and plan.kinds[n] == WINDOW else 0)
    return deltas


def _answer_tokens(body: bytes, call: Call) -> int:
    from ..logstore.record import _completion_of, _read_answer
    from ..tokens import count_text

    deployment = call.deployment
    try:
        text = _completion_of(_read_answer(body))[0]
        return count_text(text, deployment.model if deployment else call.model)
    except Exception:  # an answer that cannot be read: count what was reserved
        return call.max_tokens or 0


def _quiet(future: asyncio.Future[list[int]]) -> None:
    if not future.cancelled():
        future.exception()  # a failed settle lapses with its window; nothing to tell the call
