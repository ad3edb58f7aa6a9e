"""What a call is told about its limits: the x-ratelimit-* headers of an admitted call, and
the 429 of a refused one, in OpenAI's shapes."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from ..errors import GatewayError
from .backend import Args, Verdict
from .plan import COUNTER, Item, Plan

_NAMES = {"requests": ("requests", "RPM"), "tokens": ("tokens", "TPM")}


def duration(ms: int) -> str:
    """OpenAI's spelling of a reset time: `20ms`, `1.5s`, `6m0s`."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = round(ms / 1000, 1 if ms >= 10_000 else 2)
    if seconds < 60:
        return f"{seconds:g}s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{rest}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{rest}s"


def _scope_text(scope: str) -> str:
    parts = scope.split(":")
    kind = parts[0]
    if kind == "global":
        head = "the gateway"
    elif kind == "model":
        head = f"model `{':'.join(parts[1:])}`"
        return head
    else:
        head = f"{kind} `{parts[1]}`"
    if len(parts) > 2 and parts[-2 if kind != "global" else 1] == "model":
        model = scope.split(":model:", 1)[1]
        head += f" for model `{model}`"
    return head


def refusal(key_id: str | None, item: Item, arg: Args, verdict: Verdict) -> GatewayError:
    """The 429 of a refused call, in OpenAI's shape, naming the scope, the limit and the key."""
    kind, _key, limit, cost, _a, b = arg
    used = verdict.used[0]
    where = _scope_text(item.scope)
    if key_id is not None and not item.scope.startswith(f"key:{key_id}"):
        where += f" (key `{key_id}`)"
    if item.metric == "budget":
        assert item.budget is not None
        budget = item.budget
        if kind == COUNTER:
            until = datetime.fromtimestamp(b / 1000, UTC).isoformat().replace("+00:00", "Z")
            period = f"this {budget.period} period (until {until})"
        else:
            period = f"in the last {budget.window}"
        return GatewayError(
            429,
            f"Budget exceeded on {where}: ${used / 1e6:.6f} of ${budget.usd:.2f} spent "
            f"{period}; this call may cost up to ${cost / 1e6:.6f}.",
            type="insufficient_quota",
            code="insufficient_quota",
            headers=[("x-should-retry", "false")],
        )
    if item.metric == "parallel":
        return GatewayError(
            429,
            f"Too many calls in flight on {where}: Limit {limit}. "
            f"Please try again when one of them has finished.",
            type="requests",
            code="rate_limit_exceeded",
            headers=[("retry-after", "1"), ("retry-after-ms", "1000")],
        )
    noun, abbr = _NAMES[item.metric]
    metric = item.metric
    limit_headers = [
        (f"x-ratelimit-limit-{metric}", str(limit)),
        (f"x-ratelimit-remaining-{metric}", str(max(0, limit - used))),
    ]
    if verdict.wait_ms < 0:
        return GatewayError(
            429,
            f"Request too large for {noun} per min ({abbr}) on {where}: Limit {limit}, "
            f"Requested {cost}. Lower max_tokens or the input, or ask for a higher limit.",
            type=metric,
            code="rate_limit_exceeded",
            headers=[*limit_headers, ("x-should-retry", "false")],
        )
    wait_ms = verdict.wait_ms
    return GatewayError(
        429,
        f"Rate limit reached for {noun} per min ({abbr}) on {where}: Limit {limit}, "
        f"Used {used}, Requested {cost}. Please try again in {duration(wait_ms)}.",
        type=metric,
        code="rate_limit_exceeded",
        headers=[
            ("retry-after", str(max(1, math.ceil(wait_ms / 1000)))),
            ("retry-after-ms", str(max(1, wait_ms))),
            *limit_headers,
            (f"x-ratelimit-reset-{metric}", duration(wait_ms)),
        ],
    )


_HEADER_NAMES = {
    metric: (
        f"x-ratelimit-limit-{metric}",
        f"x-ratelimit-remaining-{metric}",
        f"x-ratelimit-reset-{metric}",
    )
    for metric in ("requests", "tokens")
}


_RESETS: dict[int, str] = {}


def _reset(ms: int) -> str:
    """`duration`, remembered per whole second past a minute (a minute window's reset always
    is): one dict lookup on every answer instead of formatting."""
    if ms < 60_000:
        return duration(ms)
    seconds = ms // 1000
    text = _RESETS.get(seconds)
    if text is None:
        text = duration(seconds * 1000)
        if len(_RESETS) < 100_000:
            _RESETS[seconds] = text
    return text


def rate_headers(plan: Plan, verdict: Verdict) -> list[tuple[str, str]] | None:
    """OpenAI's x-ratelimit-* headers for the tightest requests and tokens scopes."""
    items = plan.items
    used = verdict.used
    now = verdict.now_ms
    headers: list[tuple[str, str]] = []
    for metric, indices in (("requests", plan.requests), ("tokens", plan.token_items)):
        if not indices:
            continue
        best = indices[0]
        remaining = items[best].limit - used[best]
        for n in indices[1:]:
            left = items[n].limit - used[n]
            if left < remaining:
                best, remaining = n, left
        item = items[best]
        a = item.a
        limit_name, remaining_name, reset_name = _HEADER_NAMES[metric]
        headers += (
            (limit_name, item.limit_text),
            (remaining_name, str(remaining if remaining > 0 else 0)),
            (reset_name, _reset((now // a + item.b + 1) * a - now)),
        )
    return headers or None
