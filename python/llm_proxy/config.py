"""Settings: one YAML file, validated once at startup into msgspec Structs."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from .auth_config import AuthConfig, DeclaredGroup, DeclaredKey
from .config_base import ConfigError, MiB
from .config_base import Section as _Section
from .limits.spec import RateLimits
from .limits_config import LimitsConfig, Price, PricingConfig

__all__ = [
    "AuthConfig",
    "ConfigError",
    "DeclaredGroup",
    "DeclaredKey",
    "LimitsConfig",
    "MiB",
    "Price",
    "PricingConfig",
]


class ServerConfig(_Section):
    host: str = "127.0.0.1"
    port: int = 8080
    grpc_port: int = 50051
    # The admin API (keys, teams, projects); 0 turns it off. It also needs auth.admin_key.
    admin_port: int = 8081
    workers: int = 1
    max_body_bytes: int = 4 * MiB
    shutdown_grace_s: float = 30.0
    # A request body that has not arrived whole this long after its headers gets 408.
    body_timeout_s: float = 30.0
    # An idle keep-alive connection (or one slow to send its next request's headers) is
    # closed after this long.
    keepalive_timeout_s: float = 60.0


class _ProviderBase(_Section, tag_field="kind"):
    timeout_s: float = 600.0
    connect_timeout_s: float = 10.0
    headers: dict[str, str] = {}
    max_connections: int = 1000
    # An answer larger than this (after decompression) is refused with a 502.
    max_response_bytes: int = 64 * MiB


class OpenAIProvider(_ProviderBase, tag="openai", kw_only=True):
    base_url: str = "https://api.openai.com/v1"
    api_key: str | None = None
    organization: str | None = None
    # Whether the upstream serves OpenAI's Responses API itself (`/v1/responses` is passed
    # through); unset: true for OpenAI's own base URL, false for other servers (vLLM, ...).
    responses_api: bool | None = None


def speaks_responses(provider: object) -> bool:
    """Whether a provider serves the Responses API itself (Azure does; OpenAI's own URL does)."""
    if isinstance(provider, AzureProvider):
        return provider.responses_api is not False
    if isinstance(provider, OpenAIProvider):
        if provider.responses_api is not None:
            return provider.responses_api
        return provider.base_url.rstrip("/").startswith("https://api.openai.com")
    return False


class AzureProvider(_ProviderBase, tag="azure", kw_only=True):
    base_url: str
    api_key: str | None = None
    api_version: str = "2024-10-21"
    responses_api: bool | None = None


class AnthropicProvider(_ProviderBase, tag="anthropic", kw_only=True):
    base_url: str = "https://api.anthropic.com"
    api_key: str | None = None
    anthropic_version: str = "2023-06-01"
    max_tokens: int = 4096


class MockProvider(_ProviderBase, tag="mock", kw_only=True):
    latency_ms: float = 0.0
    chunks: int = 8
    chunk_delay_ms: float = 0.0


ProviderConfig = OpenAIProvider | AzureProvider | AnthropicProvider | MockProvider


class DeploymentConfig(_Section):
    """One deployment of a model group: a provider and the upstream's name for the model."""

    provider: str
    model: str
    # Shown in headers, the log and `llm-proxy deployments`; `provider/model` when not set.
    name: str | None = None
    weight: float = 1.0
    # Input tokens the upstream model takes; the shipped model table's figure when not set.
    context_window: int | None = None
    # Calls in flight at most; a deployment at its limit is skipped while others have room.
    max_concurrency: int | None = None
    # Requests and tokens (prompt + completion) a minute, counted by this worker; a
    # deployment past either is skipped while others have room.
    rpm: int | None = None
    tpm: int | None = None
    # USD per million tokens, for the `cost` strategy; the shipped model table's when not set.
    price: Price | None = None

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError("weight must not be negative")
        if self.context_window is not None and self.context_window < 1:
            raise ValueError("context_window must be positive")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise ValueError("max_concurrency must be positive")
        if (self.rpm is not None and self.rpm < 1) or (self.tpm is not None and self.tpm < 1):
            raise ValueError("rpm and tpm must be positive")


FallbackReason = Literal["rate_limit", "unavailable", "timeout", "context_window", "content_policy"]


class FallbackConfig(_Section):
    """Other models to try, in order, when this one fails for one of the reasons in `on`."""

    to: list[str]
    on: list[FallbackReason] = msgspec.field(
        default_factory=lambda: ["rate_limit", "unavailable", "timeout"]
    )


class BreakerConfig(_Section):
    """The passive circuit breaker of each deployment of a group."""

    # Opens after this many failures in a row...
    consecutive_failures: int = 5
    # ... or this share of failed calls over `window_s` (once `min_calls` were made in it).
    failure_ratio: float = 0.5
    min_calls: int = 10
    window_s: float = 30.0
    # How long it stays open before one trial call goes through (a 429's retry-after wins).
    cooldown_s: float = 30.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 1 or self.min_calls < 1:
            raise ValueError("consecutive_failures and min_calls must be positive")
        if not 0.0 < self.failure_ratio <= 1.0:
            raise ValueError("failure_ratio must be in (0, 1]")
        if self.window_s <= 0 or self.cooldown_s <= 0:
            raise ValueError("window_s and cooldown_s must be positive")


class HealthCheckConfig(_Section):
    """Active probes of each deployment (off unless set): a tiny call every `interval_s`."""

    interval_s: float = 60.0
    timeout_s: float = 10.0
    # With several instances: one probes at a time (a Redis lock) and all apply its results.
    redis_url: str | None = None
    key_prefix: str = "llm-proxy:health:"

    def __post_init__(self) -> None:
        if self.interval_s <= 0 or self.timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be positive")


class ModelConfig(_Section):
    """A model name clients ask for: one deployment (`provider`, `model`) or a group."""

    provider: str = ""
    model: str = ""
    deployments: list[DeploymentConfig] = []
    strategy: Literal["weighted", "least-inflight", "latency", "cost"] = "weighted"
    # Retries after the first attempt: 2 for a group, 0 for the one-deployment form.
    retries: int | None = None
    # The time all attempts together may take (the client's deadline, if sooner, wins).
    timeout_s: float | None = None
    context_window: int | None = None
    fallbacks: list[FallbackConfig] = []
    breaker: BreakerConfig = msgspec.field(default_factory=BreakerConfig)
    health_check: HealthCheckConfig | None = None
    # The model's capacity across every caller (rpm, tpm, max_parallel), shared like all limits.
    limits: RateLimits | None = None

    def __post_init__(self) -> None:
        if self.deployments:
            if self.provider or self.model:
                raise ValueError("give either `provider` and `model` or `deployments`, not both")
            # The first deployment stands for the group where one name is wanted (owned_by).
            self.provider = self.deployments[0].provider
            self.model = self.deployments[0].model
        elif not self.provider or not self.model:
            raise ValueError("a model needs `provider` and `model`, or `deployments`")
        if self.retries is not None and not 0 <= self.retries <= 10:
            raise ValueError("retries must be 0..10")
        if self.timeout_s is not None and self.timeout_s <= 0:
            raise ValueError("timeout_s must be positive")
        if self.deployments and all(d.weight == 0 for d in self.deployments):
            raise ValueError("at least one deployment needs a positive weight")

    def routes(self) -> list[DeploymentConfig]:
        """The deployments, the one-deployment form included."""
        if self.deployments:
            return self.deployments
        return [
            DeploymentConfig(
                provider=self.provider, model=self.model, context_window=self.context_window
            )
        ]

    @property
    def grouped(self) -> bool:
        """Routed through the group runner (retries, fallbacks, breakers), not the fast path."""
        return (
            bool(self.deployments)
            or bool(self.fallbacks)
            or bool(self.retries)
            or self.timeout_s is not None
            or self.health_check is not None
        )


class CacheConfig(_Section):
    enabled: bool = False
    backend: Literal["memory", "redis"] = "memory"
    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "llm-proxy:cache:"
    ttl_s: float = 3600.0
    max_bytes: int = 256 * MiB
    scope: Literal["global", "team", "key"] | None = None
    endpoints: list[Literal["chat", "completions", "embeddings"]] = msgspec.field(
        default_factory=lambda: ["chat", "completions", "embeddings"]
    )
    # A backend call slower than this counts as a failure; the request goes on as a miss.
    timeout_s: float = 0.25
    # After a backend failure, skip it for this long instead of waiting on every request.
    retry_after_s: float = 1.0
    # Backend failures are logged at most once per this interval (and always counted).
    log_interval_s: float = 10.0

    def __post_init__(self) -> None:
        if self.ttl_s <= 0:
            raise ValueError("cache.ttl_s must be positive")
        if self.max_bytes <= 0:
            raise ValueError("cache.max_bytes must be positive")
        if self.timeout_s <= 0:
            raise ValueError("cache.timeout_s must be positive")


class LoggingConfig(_Section):
    enabled: bool = True
    store: str = "sqlite:///./llm-proxy.db"
    content: Literal["full", "redacted", "none"] = "full"
    retention_days: float = 30.0
    max_rows: int | None = None
    # Records waiting for the writer are bounded by their bytes (prompt and answer included);
    # past it a record is dropped and counted, never the response delayed.
    queue_max_bytes: int = 256 * MiB
    batch_size: int = 500
    # The writer wakes this often (or at batch_size records); short, so each batch is a short
    # burst on the worker's core rather than a long one that delays requests.
    flush_interval_s: float = 0.025
    spool_path: str = "./llm-proxy.spool"
    prices: dict[str, Price] = {}
    # A store call slower than this fails; the batch goes to the spool and is retried.
    store_timeout_s: float = 2.0
    # While the store is down, try it again this often (records wait in the spool meanwhile).
    retry_interval_s: float = 1.0
    # How often retention (retention_days, max_rows) is enforced; also done at startup.
    purge_interval_s: float = 300.0
    # The writer thread's CPU priority: `normal`, or `idle` (Linux: it writes only when the
    # core has nothing else to do).
    writer_priority: Literal["idle", "normal"] = "normal"

    def __post_init__(self) -> None:
        if self.queue_max_bytes < 1 or self.batch_size < 1:
            raise ValueError("logging.queue_max_bytes and logging.batch_size must be positive")
        if self.flush_interval_s <= 0 or self.store_timeout_s <= 0:
            raise ValueError(
                "logging.flush_interval_s and logging.store_timeout_s must be positive"
            )
        if self.retention_days <= 0:
            raise ValueError("logging.retention_days must be positive")
        if self.max_rows is not None and self.max_rows < 1:
            raise ValueError("logging.max_rows must be positive")
        if not self.store.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("logging.store must be sqlite:///PATH or postgresql://...")


class TelemetryConfig(_Section):
    """OpenTelemetry tracing; off unless `otlp_endpoint` is set (needs `llm-proxy[otel]`)."""

    # OTLP/gRPC collector, e.g. http://127.0.0.1:4317 (http:// plaintext, https:// TLS).
    otlp_endpoint: str | None = None
    service_name: str = "llm-proxy"
    # Share of new traces recorded; a client's sampled flag in `traceparent` is honoured.
    sample_ratio: float = 1.0
    # Sent with every export, e.g. a vendor's API key header.
    headers: dict[str, str] = {}
    export_timeout_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.sample_ratio <= 1.0:
            raise ValueError("telemetry.sample_ratio must be between 0 and 1")
        if self.export_timeout_s <= 0:
            raise ValueError("telemetry.export_timeout_s must be positive")
        if self.otlp_endpoint and not self.otlp_endpoint.startswith(("http://", "https://")):
            raise ValueError(
                "telemetry.otlp_endpoint must be an http:// or https:// URL, "
                "e.g. http://127.0.0.1:4317"
            )
        if not self.service_name:
            raise ValueError("telemetry.service_name must not be empty")


class Config(_Section):
    server: ServerConfig = msgspec.field(default_factory=ServerConfig)
    providers: dict[str, ProviderConfig] = {}
    models: dict[str, ModelConfig] = {}
    cache: CacheConfig = msgspec.field(default_factory=CacheConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    telemetry: TelemetryConfig = msgspec.field(default_factory=TelemetryConfig)
    auth: AuthConfig = msgspec.field(default_factory=AuthConfig)
    limits: LimitsConfig = msgspec.field(default_factory=LimitsConfig)
    pricing: PricingConfig = msgspec.field(default_factory=PricingConfig)
    responses: ResponsesConfig = msgspec.field(default_factory=lambda: ResponsesConfig())


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _interpolate(node: Any, path: str) -> Any:
    if isinstance(node, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            value = os.environ.get(name)
            if value is None or (value == "" and default is not None):
                if default is None:
                    raise ConfigError(f"environment variable {name} is not set - at `{path}`")
                return default
            return value

        return _VAR.sub(sub, node)
    if isinstance(node, dict):
        return {k: _interpolate(v, f"{path}.{k}") for k, v in node.items()}
    if isinstance(node, list):
        return [_interpolate(v, f"{path}[{i}]") for i, v in enumerate(node)]
    return node


def parse_config(data: Any) -> Config:
    """Validate an already-loaded mapping (env vars not yet substituted) into a Config."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError("the config must be a mapping - at `$`")
    data = _interpolate(data, "$")
    try:
        config = msgspec.convert(data, Config)
    except msgspec.ValidationError as exc:
        raise ConfigError(_named_path(data, exc)) from None
    _check(config)
    return config


def _named_path(data: dict[str, Any], exc: msgspec.ValidationError) -> str:
    """msgspec writes `[...]` for mapping keys; find which entry failed so the path names it."""
    message = str(exc)
    for section, kind in (("providers", ProviderConfig), ("models", ModelConfig)):
        entries = data.get(section)
        if f"$.{section}[...]" not in message or not isinstance(entries, dict):
            continue
        for name, entry in entries.items():
            try:
                msgspec.convert(entry, kind)
            except msgspec.ValidationError as inner:
                text = str(inner)
                if " - at `$" not in text:
                    return f"{text} - at `$.{section}.{name}`"
                return text.replace("`$", f"`$.{section}.{name}", 1)
    return message


def _check(config: Config) -> None:
    for name, model in config.models.items():
        for i, deployment in enumerate(model.routes()):
            if deployment.provider not in config.providers:
                known = ", ".join(sorted(config.providers)) or "none"
                at = f"deployments[{i}].provider" if model.deployments else "provider"
                raise ConfigError(
                    f"unknown provider `{deployment.provider}` (known: {known}) - at "
                    f"`$.models.{name}.{at}`"
                )
        for i, fallback in enumerate(model.fallbacks):
            for j, target in enumerate(fallback.to):
                if target not in config.models or target == name:
                    raise ConfigError(
                        f"fallback to unknown model `{target}` (a fallback names another "
                        f"model of `models`) - at `$.models.{name}.fallbacks[{i}].to[{j}]`"
                    )
    if not 0 <= config.server.port < 65536:
        raise ConfigError("port must be 0..65535 - at `$.server.port`")
    if not 0 <= config.server.grpc_port < 65536:
        raise ConfigError("port must be 0..65535 - at `$.server.grpc_port`")
    if not 0 <= config.server.admin_port < 65536:
        raise ConfigError("port must be 0..65535 - at `$.server.admin_port`")
    if config.server.workers < 1:
        raise ConfigError("workers must be at least 1 - at `$.server.workers`")
    for name, provider in config.providers.items():
        if provider.timeout_s <= 0:
            raise ConfigError(f"timeout_s must be positive - at `$.providers.{name}.timeout_s`")


def load_config(path: str | Path | None) -> Config:
    """Load a YAML config file, or the built-in default config when `path` is None."""
    if path is None:
        return parse_config(default_config_data())
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML in {path}: {exc}") from None
    return parse_config(data)


def default_config_data() -> dict[str, Any]:
    """The zero-setup config: mock models, plus real providers whose key variables are set."""
    data: dict[str, Any] = {
        "providers": {"mock": {"kind": "mock"}},
        "models": {
            "mock-1": {"provider": "mock", "model": "mock-1"},
            "mock-fast": {"provider": "mock", "model": "mock-fast"},
            "mock-embed": {"provider": "mock", "model": "mock-embed"},
        },
    }
    if os.environ.get("OPENAI_API_KEY"):
        data["providers"]["openai"] = {"kind": "openai", "api_key": "${OPENAI_API_KEY}"}
        for m in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "text-embedding-3-small"):
            data["models"][m] = {"provider": "openai", "model": m}
    if os.environ.get("ANTHROPIC_API_KEY"):
        data["providers"]["anthropic"] = {"kind": "anthropic", "api_key": "${ANTHROPIC_API_KEY}"}
        for m in ("claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1"):
            data["models"][m] = {"provider": "anthropic", "model": m}
    return data


class ResponsesConfig(_Section):
    """Where `/v1/responses` records which deployment holds each response: in Redis when a
    URL is set here (or the cache uses Redis), shared by every worker and instance; else in
    each process."""

    redis_url: str | None = None
    key_prefix: str = "llm-proxy:responses:"
    # OpenAI keeps a stored response for 30 days.
    ttl_s: float = 30 * 86400.0
    timeout_s: float = 0.25

    def __post_init__(self) -> None:
        if self.ttl_s <= 0 or self.timeout_s <= 0:
            raise ValueError("responses.ttl_s and responses.timeout_s must be positive")
