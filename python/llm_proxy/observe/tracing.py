"""OpenTelemetry tracing: one server span per call, a child span per pipeline stage.

Optional (`pip install 'llm-proxy[otel]'`) and off unless `telemetry.otlp_endpoint` is set.
opentelemetry is imported only by `build_tracer` when tracing is on; with it off the pipeline
holds None and pays one `is not None` check per stage. Spans carry names, ids, counts and
statuses only: never headers, keys, prompts or answers (those stay in the request log).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import __version__
from ..calls import Call, Deployment, Endpoint, Outcome

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.trace import Span

    from ..config import Config, TelemetryConfig

__all__ = ["CallSpan", "Tracer", "build_tracer", "validate"]

INSTALL_HINT = "pip install 'llm-proxy[otel]'"
_REQUIRED = ("opentelemetry.sdk.trace", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter")

# GenAI semantic conventions: gen_ai.operation.name per endpoint, gen_ai.system per provider kind.
_OPERATIONS: dict[Endpoint, str] = {
    "chat": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}
_SYSTEMS = {"openai": "openai", "azure": "azure.ai.openai", "anthropic": "anthropic"}


class ObserveConfigError(Exception):
    """A logging or telemetry setting that cannot be honoured; stops startup."""


def validate(config: TelemetryConfig) -> None:
    """Raise ObserveConfigError when tracing is asked for but cannot run (call early)."""
    if not config.otlp_endpoint:
        return
    for module in _REQUIRED:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ObserveConfigError(
                "telemetry.otlp_endpoint is set, but the OpenTelemetry packages are not "
                f"installed ({exc.name or module} is missing); run: {INSTALL_HINT}"
            ) from None


def build_tracer(config: Config) -> Tracer | None:
    """The call tracer for `config`, or None when tracing is off.

    Creates the exporter's gRPC channel and export thread: call inside the worker process.
    """
    if not config.telemetry.otlp_endpoint:
        return None
    validate(config.telemetry)
    return Tracer(config)


class Tracer:
    """Starts call spans; owns the TracerProvider (batch exporter thread) until `shutdown`."""

    def __init__(self, config: Config) -> None:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        telemetry = config.telemetry
        self.provider: TracerProvider = TracerProvider(
            resource=Resource.create({"service.name": telemetry.service_name}),
            sampler=ParentBased(TraceIdRatioBased(telemetry.sample_ratio)),
        )
        exporter = OTLPSpanExporter(
            endpoint=telemetry.otlp_endpoint,
            headers=dict(telemetry.headers) or None,
            timeout=telemetry.export_timeout_s,
        )
        self.provider.add_span_processor(BatchSpanProcessor(exporter))
        self.tracer = self.provider.get_tracer("llm_proxy", __version__)
        self.propagator = TraceContextTextMapPropagator()
        self.in_context = trace.set_span_in_context
        self.server, self.client, self.internal = (
            trace.SpanKind.SERVER,
            trace.SpanKind.CLIENT,
            trace.SpanKind.INTERNAL,
        )
        self.error = trace.StatusCode.ERROR
        self.status = trace.Status
        self.systems: dict[str, str] = {}
        self.peers: dict[str, dict[str, Any]] = {}
        for name, provider in config.providers.items():
            kind = str(type(provider).__struct_config__.tag)
            self.systems[name] = _SYSTEMS.get(kind, kind)
            peer: dict[str, Any] = {}
            base_url = getattr(provider, "base_url", None)
            if base_url:
                parts = urlsplit(base_url)
                if parts.hostname:
                    peer["server.address"] = parts.hostname
                    peer["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
            self.peers[name] = peer

    def start(self, call: Call) -> CallSpan | None:
        """The span of `call` (continuing the client's W3C trace), or None when not sampled."""
        headers = call.headers
        parent = None
        traceparent = headers.get("traceparent")
        if traceparent:
            carrier = {"traceparent": str(traceparent)}
            tracestate = headers.get("tracestate")
            if tracestate:
                carrier["tracestate"] = str(tracestate)
            parent = self.propagator.extract(carrier)
        operation = _OPERATIONS[call.endpoint]
        span = self.tracer.start_span(
            f"{operation} {call.model}",
            context=parent,
            kind=self.server,
            attributes={
                "gen_ai.operation.name": operation,
                "gen_ai.request.model": call.model,
                "llm_proxy.request_id": call.request_id,
                "llm_proxy.door": call.door,
                "llm_proxy.stream": call.stream,
            },
        )
        if not span.is_recording():
            return None
        return CallSpan(self, call, span)

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter (blocks up to the export timeout)."""
        self.provider.shutdown()


class CallSpan:
    """One call's span and its running stage; the stages are siblings under the call."""

    __slots__ = ("_call", "_ended", "_span", "_stage", "_tracer")

    def __init__(self, tracer: Tracer, call: Call, span: Span) -> None:
        self._tracer = tracer
        self._call = call
        self._span = span
        self._stage: Span | None = None
        self._ended = False

    def stage(self, name: str) -> None:
        """End the running stage, if any, and start `name`."""
        self._begin(name, self._tracer.internal, None)

    def upstream(self, deployment: Deployment) -> None:
        """Start the provider call stage: a client span naming the upstream."""
        tracer = self._tracer
        attributes = {
            "gen_ai.system": tracer.systems.get(deployment.provider, deployment.provider),
            "gen_ai.request.model": deployment.model,
            "llm_proxy.provider": deployment.provider,
            **tracer.peers.get(deployment.provider, {}),
        }
        self._begin("upstream", tracer.client, attributes)
        if self._stage is not None:
            # The upstream continues the trace under this span (W3C traceparent/tracestate).
            carrier: dict[str, str] = {}
            tracer.propagator.inject(carrier, context=tracer.in_context(self._stage))
            self._call.trace_headers = list(carrier.items())

    def _begin(self, name: str, kind: Any, attributes: dict[str, Any] | None) -> None:
        if self._ended:
            return
        if self._stage is not None:
            self._stage.end()
        tracer = self._tracer
        self._stage = tracer.tracer.start_span(
            name, context=tracer.in_context(self._span), kind=kind, attributes=attributes
        )

    def finish(self, outcome: Outcome) -> None:
        """End the running stage and the call span with `outcome` (once; later calls no-op)."""
        if self._ended:
            return
        self._ended = True
        call = self._call
        span = self._span
        tracer = self._tracer
        attributes: dict[str, Any] = {
            "llm_proxy.cache": call.cache_status,
            "llm_proxy.status_code": outcome.status,
        }
        if call.door == "http":
            attributes["http.response.status_code"] = outcome.status
        deployment = call.deployment
        if deployment is not None:
            system = tracer.systems.get(deployment.provider, deployment.provider)
            attributes["gen_ai.system"] = system
            attributes["gen_ai.provider.name"] = system
            attributes["gen_ai.response.model"] = deployment.model
            attributes["llm_proxy.provider"] = deployment.provider
        usage, summary = outcome.usage, outcome.summary
        if usage is not None:
            attributes["gen_ai.usage.input_tokens"] = usage.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = usage.completion_tokens
        elif summary is not None and not summary.usage_counted:
            # Reported by the upstream in the stream (counts the gateway estimated are left out).
            attributes["gen_ai.usage.input_tokens"] = summary.prompt_tokens
            attributes["gen_ai.usage.output_tokens"] = summary.completion_tokens
        if call.first_token_s is not None:
            attributes["llm_proxy.time_to_first_token_s"] = call.first_token_s
        if outcome.status >= 400:
            error_type = outcome.error_type or str(outcome.status)
            attributes["error.type"] = error_type
            # The message may quote the request or the upstream's reply: it stays in the log.
            status = tracer.status(tracer.error, f"{outcome.status} {error_type}")
            span.set_status(status)
            if self._stage is not None:
                self._stage.set_status(status)
        span.set_attributes(attributes)
        if self._stage is not None:
            self._stage.end()
            self._stage = None
        span.end()
