"""The `limits` and `pricing` config sections: shared rate limits, budgets, and prices."""

from __future__ import annotations

import zoneinfo
from typing import Literal

import msgspec

from .config_base import Section as _Section
from .limits.spec import Budget, Limits


class Price(_Section):
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def __post_init__(self) -> None:
        if self.input < 0 or self.output < 0 or (self.cached_input or 0) < 0:
            raise ValueError("prices must not be negative")


class PricingConfig(_Section):
    """Prices over the shipped model table; see docs/limits.md."""

    # A budgeted caller calling a model with no price is refused (`reject`), or the call is
    # counted as free (`allow`).
    unknown_model: Literal["reject", "allow"] = "reject"
    models: dict[str, Price] = {}


class AlertConfig(_Section):
    """Where budget threshold events go besides the log and the metric."""

    webhook_url: str | None = None
    # Signs each webhook body (HMAC-SHA256, `x-llm-proxy-signature: sha256=<hex>`).
    webhook_secret: str | None = None
    timeout_s: float = 5.0


class LimitsConfig(_Section):
    """Rate limits and budgets; keys, teams and projects carry their own (docs/limits.md)."""

    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "llm-proxy:limits:"
    # A reservation slower than this counts as a backend error.
    timeout_s: float = 0.25
    on_backend_error: Literal["allow", "deny"] = "allow"
    # After a backend failure, calls skip the backend (per on_backend_error) this long.
    retry_after_s: float = 1.0
    # Backend failures are logged at most once per this interval (and always counted).
    log_interval_s: float = 10.0
    # Whether an answer from the response cache counts against limits and budgets.
    count_cache_hits: bool = False
    # The output tokens reserved for a request that sets no max_tokens.
    default_max_tokens: int = 4096
    # A call's max_parallel slot is freed when it ends, or after this long if its gateway died.
    lease_s: float = 900.0
    # Calendar budget periods (daily, weekly, monthly) start at midnight here.
    timezone: str = "UTC"
    global_: Limits | None = msgspec.field(default=None, name="global")
    budgets: list[Budget] = []
    alerts: AlertConfig = msgspec.field(default_factory=AlertConfig)

    def __post_init__(self) -> None:
        if self.timeout_s <= 0 or self.lease_s <= 0 or self.retry_after_s < 0:
            raise ValueError("limits.timeout_s and limits.lease_s must be positive")
        if self.default_max_tokens < 1:
            raise ValueError("limits.default_max_tokens must be positive")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone `{self.timezone}` in limits.timezone") from None
        if self.global_ is not None and self.global_.empty:
            self.global_ = None
