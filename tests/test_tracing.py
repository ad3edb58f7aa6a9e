"""OpenTelemetry tracing through the real gateway, exported to an in-test OTLP/gRPC collector."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import openai
import pytest
import yaml
from llm_proxy.calls import Call, Outcome
from llm_proxy.config import parse_config
from llm_proxy.grpc.gen import gateway_pb2 as pb
from llm_proxy.grpc.gen import gateway_pb2_grpc as pb_grpc
from llm_proxy.observe import ObserveConfigError
from llm_proxy.observe import tracing as tracing_module
from llm_proxy.observe import validate as validate_observe
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from tests.support.servers import (
    Gateway,
    MockUpstream,
    free_port,
    standard_config,
    start_gateway,
)

CLIENT_KEY = "sk-client-TRACE-0123456789abcdef"
SECRETS = ("sk-up-SECRET", "az-SECRET", "ant-SECRET", CLIENT_KEY, "Bearer")
PROMPT = "The launch code is PURPLE-OCTOPUS-42; keep it out of traces."
CLIENT_TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{CLIENT_TRACE_ID}-{CLIENT_SPAN_ID}-01"


# -- the collector --------------------------------------------------------------------------


@dataclass
class Exported:
    """One span as the collector received it, with plain attribute values."""

    span: Span
    attributes: dict[str, Any]
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def parent_id(self) -> str:
        return self.span.parent_span_id.hex()


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    return getattr(value, kind) if kind is not None else None


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace collector that keeps every exported span."""

    def __init__(self) -> None:
        self.spans: list[Exported] = []
        self._lock = threading.Lock()

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: Any
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    attributes = {a.key: _value(a.value) for a in span.attributes}
                    found.append(Exported(span, attributes, resource))
        with self._lock:
            self.spans.extend(found)
        return trace_service_pb2.ExportTraceServiceResponse()

    def trace_of(self, request_id: str, stages: int, timeout: float = 10.0) -> Trace:
        """The call span with llm_proxy.request_id == request_id and its `stages` children."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                spans = list(self.spans)
            calls = [s for s in spans if s.attributes.get("llm_proxy.request_id") == request_id]
            if calls:
                assert len(calls) == 1, f"{len(calls)} call spans for {request_id}"
                call = calls[0]
                children = [s for s in spans if s.parent_id == call.span_id]
                if len(children) >= stages:
                    children.sort(key=lambda s: s.span.start_time_unix_nano)
                    return Trace(call, children)
            time.sleep(0.05)
        raise AssertionError(f"no trace with {stages} stages for {request_id} was exported")


@dataclass
class Trace:
    call: Exported
    stages: list[Exported]

    def stage_names(self) -> list[str]:
        return [s.name for s in self.stages]

    def stage(self, name: str) -> Exported:
        (found,) = [s for s in self.stages if s.name == name]
        return found


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield collector, port
    server.stop(0)


@pytest.fixture(scope="module")
def gw(
    mock_upstream: MockUpstream,
    collector: tuple[Collector, int],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Gateway]:
    config = standard_config(mock_upstream)
    config["cache"] = {"enabled": True, "backend": "memory", "ttl_s": 300}
    config["telemetry"] = {
        "otlp_endpoint": f"http://127.0.0.1:{collector[1]}",
        "service_name": "llm-proxy-under-test",
    }
    gateway = start_gateway(
        config,
        tmp_path_factory.mktemp("tracing"),
        grpc=True,
        env={"OTEL_BSP_SCHEDULE_DELAY": "20"},
    )
    yield gateway
    gateway.stop()


@pytest.fixture(scope="module")
def spans(collector: tuple[Collector, int]) -> Collector:
    return collector[0]


def client(gw: Gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.base_url, api_key=CLIENT_KEY, max_retries=0, timeout=20)


def new_id() -> str:
    return f"trace-test-{uuid.uuid4().hex}"


def ask(text: str = PROMPT) -> list[Any]:
    return [{"role": "user", "content": f"{text} ({uuid.uuid4().hex})"}]


def assert_children_of(trace: Trace) -> None:
    call = trace.call
    for stage in trace.stages:
        assert stage.trace_id == call.trace_id
        assert stage.parent_id == call.span_id
        assert call.span.start_time_unix_nano <= stage.span.start_time_unix_nano
        assert stage.span.end_time_unix_nano <= call.span.end_time_unix_nano


# -- HTTP -----------------------------------------------------------------------------------


def test_whole_call_continues_the_client_trace_with_a_span_per_stage(
    gw: Gateway, spans: Collector, mock_upstream: MockUpstream
) -> None:
    request_id = new_id()
    reply = client(gw).chat.completions.create(
        model="gpt-4o-mini",
        messages=ask(),
        extra_headers={
            "x-request-id": request_id,
            "traceparent": TRACEPARENT,
            "tracestate": "vendor=abc",
        },
    )
    trace = spans.trace_of(request_id, stages=4)
    call = trace.call
    assert call.name == "chat gpt-4o-mini"
    assert call.span.kind == Span.SPAN_KIND_SERVER
    assert call.trace_id == CLIENT_TRACE_ID
    assert call.parent_id == CLIENT_SPAN_ID
    assert call.span.trace_state == "vendor=abc"
    assert call.resource["service.name"] == "llm-proxy-under-test"
    attrs = call.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
    assert attrs["gen_ai.system"] == "openai"
    assert attrs["llm_proxy.provider"] == "up"
    assert attrs["llm_proxy.door"] == "http"
    assert attrs["llm_proxy.stream"] is False
    assert attrs["llm_proxy.cache"] == "miss"
    assert attrs["http.response.status_code"] == 200
    assert reply.usage is not None
    assert attrs["gen_ai.usage.input_tokens"] == reply.usage.prompt_tokens
    assert attrs["gen_ai.usage.output_tokens"] == reply.usage.completion_tokens
    assert "error.type" not in attrs
    assert call.span.status.code != Status.STATUS_CODE_ERROR

    assert trace.stage_names() == ["route", "cache.lookup", "upstream", "cache.store"]
    assert_children_of(trace)
    upstream = trace.stage("upstream")
    assert upstream.span.kind == Span.SPAN_KIND_CLIENT
    assert upstream.attributes["server.address"] == "127.0.0.1"
    assert upstream.attributes["gen_ai.system"] == "openai"
    # The upstream request carries the trace on, as a child of the upstream span.
    sent = mock_upstream.last()["headers"]
    assert sent["traceparent"] == f"00-{CLIENT_TRACE_ID}-{upstream.span_id}-01"
    assert sent["tracestate"] == "vendor=abc"


def test_cache_hit_has_no_upstream_stage(gw: Gateway, spans: Collector) -> None:
    messages = ask("What is a gateway?")
    first, second = new_id(), new_id()
    api = client(gw)
    api.chat.completions.create(
        model="gpt-4o-mini", messages=messages, extra_headers={"x-request-id": first}
    )
    spans.trace_of(first, stages=3)  # the miss is stored by the time its span is exported
    deadline = time.monotonic() + 5
    while True:
        raw = api.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=messages, extra_headers={"x-request-id": second}
        )
        if raw.headers.get("x-llm-proxy-cache") == "hit" or time.monotonic() > deadline:
            break
        second = new_id()
        time.sleep(0.05)
    trace = spans.trace_of(second, stages=2)
    assert trace.call.attributes["llm_proxy.cache"] == "hit"
    assert trace.stage_names() == ["route", "cache.lookup"]
    assert_children_of(trace)
    # No client traceparent: the gateway starts a new trace.
    assert trace.call.parent_id == ""
    assert trace.call.trace_id != CLIENT_TRACE_ID


def test_stream_span_ends_with_the_stream(gw: Gateway, spans: Collector) -> None:
    request_id = new_id()
    stream = client(gw).chat.completions.create(
        model="updrip",
        messages=ask(),
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-request-id": request_id, "traceparent": TRACEPARENT},
    )
    started = time.monotonic()
    chunks = list(stream)
    streamed_s = time.monotonic() - started
    assert chunks
    trace = spans.trace_of(request_id, stages=5)
    call = trace.call
    assert call.name == "chat updrip"
    assert call.trace_id == CLIENT_TRACE_ID
    assert call.attributes["llm_proxy.stream"] is True
    assert call.attributes["llm_proxy.cache"] == "miss"
    assert call.attributes["gen_ai.usage.output_tokens"] > 0
    assert call.attributes["llm_proxy.time_to_first_token_s"] > 0
    stages = ["route", "cache.lookup", "upstream", "stream.relay", "cache.store"]
    assert trace.stage_names() == stages
    assert_children_of(trace)
    relay = trace.stage("stream.relay")
    # The mock drips 40 chunks 50 ms apart: the relay (and the call span) last the whole stream.
    relay_s = (relay.span.end_time_unix_nano - relay.span.start_time_unix_nano) / 1e9
    assert relay_s > 0.5 * streamed_s > 0.5
    assert call.span.end_time_unix_nano >= relay.span.end_time_unix_nano


def test_unknown_model_marks_the_span_as_an_error(gw: Gateway, spans: Collector) -> None:
    request_id = new_id()
    with pytest.raises(openai.NotFoundError):
        client(gw).chat.completions.create(
            model="no-such-model",
            messages=ask(),
            extra_headers={"x-request-id": request_id, "traceparent": TRACEPARENT},
        )
    trace = spans.trace_of(request_id, stages=1)
    call = trace.call
    assert call.name == "chat no-such-model"
    assert call.trace_id == CLIENT_TRACE_ID
    assert call.span.status.code == Status.STATUS_CODE_ERROR
    assert call.attributes["http.response.status_code"] == 404
    assert call.attributes["error.type"]
    assert trace.stage_names() == ["route"]
    assert trace.stage("route").span.status.code == Status.STATUS_CODE_ERROR


def test_upstream_failure_marks_the_upstream_stage(gw: Gateway, spans: Collector) -> None:
    request_id = new_id()
    with pytest.raises(openai.InternalServerError):
        client(gw).chat.completions.create(
            model="up500", messages=ask(), extra_headers={"x-request-id": request_id}
        )
    trace = spans.trace_of(request_id, stages=3)
    assert trace.call.span.status.code == Status.STATUS_CODE_ERROR
    assert trace.call.attributes["llm_proxy.status_code"] >= 500
    assert trace.stage("upstream").span.status.code == Status.STATUS_CODE_ERROR


# -- gRPC -----------------------------------------------------------------------------------


def test_grpc_call_is_traced_with_door_grpc(gw: Gateway, spans: Collector) -> None:
    request_id = new_id()
    with grpc.insecure_channel(f"127.0.0.1:{gw.grpc_port}") as channel:
        stub = pb_grpc.GatewayStub(channel)
        reply = stub.ChatCompletion(
            pb.ChatCompletionRequest(
                model="mock-1", messages=[pb.ChatMessage(role="user", content=PROMPT)]
            ),
            metadata=[("x-request-id", request_id), ("traceparent", TRACEPARENT)],
            timeout=10,
        )
    assert reply.request_id == request_id
    trace = spans.trace_of(request_id, stages=4)
    call = trace.call
    assert call.name == "chat mock-1"
    assert call.trace_id == CLIENT_TRACE_ID
    assert call.parent_id == CLIENT_SPAN_ID
    assert call.attributes["llm_proxy.door"] == "grpc"
    assert call.attributes["gen_ai.system"] == "mock"
    assert call.attributes["llm_proxy.status_code"] == 200
    assert "http.response.status_code" not in call.attributes
    assert trace.stage_names() == ["route", "cache.lookup", "upstream", "cache.store"]
    assert_children_of(trace)


# -- what spans must never hold ----------------------------------------------------------


def test_no_secret_or_prompt_in_any_span(gw: Gateway, spans: Collector) -> None:
    # Runs after the calls above (module order); also makes one more call of its own.
    request_id = new_id()
    client(gw).embeddings.create(
        model="text-embedding-3-small", input=PROMPT, extra_headers={"x-request-id": request_id}
    )
    trace = spans.trace_of(request_id, stages=3)
    assert trace.call.name == "embeddings text-embedding-3-small"
    with spans._lock:
        exported = list(spans.spans)
    assert len(exported) > 20
    for span in exported:
        text = repr(span.span)  # every attribute, event, link and status message
        for secret in (*SECRETS, "PURPLE-OCTOPUS", "launch code"):
            assert secret not in text, f"{secret!r} leaked into span {span.name}"


# -- configuration ------------------------------------------------------------------------


def test_startup_without_opentelemetry_names_the_extra(tmp_path: Path) -> None:
    config = {"telemetry": {"otlp_endpoint": f"http://127.0.0.1:{free_port()}"}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    hide = (
        "import sys; sys.modules['opentelemetry.sdk'] = None; "
        "from llm_proxy.cli import main; sys.exit(main(['serve', '--config', sys.argv[1]]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide, str(path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    assert "telemetry.otlp_endpoint" in done.stderr
    assert "pip install 'llm-proxy[otel]'" in done.stderr


def test_validate_refuses_an_endpoint_without_the_packages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def missing(name: str) -> Any:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)

    monkeypatch.setattr(tracing_module.importlib, "import_module", missing)
    validate_observe(parse_config({}))  # tracing off: nothing to import
    with pytest.raises(ObserveConfigError, match=r"pip install 'llm-proxy\[otel\]'"):
        validate_observe(parse_config({"telemetry": {"otlp_endpoint": "http://127.0.0.1:4317"}}))


def test_tracing_off_never_imports_opentelemetry(tmp_path: Path) -> None:
    script = (
        "import asyncio, sys\n"
        "from llm_proxy.config import parse_config\n"
        "from llm_proxy.worker import GatewayApp\n"
        "from llm_proxy.pipeline import Pipeline\n"
        "pipeline = Pipeline(parse_config({'providers': {'m': {'kind': 'mock'}},"
        " 'models': {'x': {'provider': 'm', 'model': 'x'}}}))\n"
        "asyncio.run(pipeline.start())\n"
        "assert pipeline.tracer is None\n"
        "asyncio.run(pipeline.close())\n"
        "print(sorted(m for m in sys.modules if m.startswith('opentelemetry')))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("telemetry", "message"),
    [
        ({"sample_ratio": 1.5}, "sample_ratio"),
        ({"otlp_endpoint": "127.0.0.1:4317"}, "http:// or https://"),
        ({"otlp_endpoint": "http://127.0.0.1:4317", "sampler": "always"}, "unknown field"),
    ],
)
def test_bad_telemetry_config_fails_with_its_path(telemetry: dict[str, Any], message: str) -> None:
    from llm_proxy.config import ConfigError

    with pytest.raises(ConfigError, match="telemetry") as info:
        parse_config({"telemetry": telemetry})
    assert message in str(info.value)


def test_sample_ratio_zero_still_follows_a_sampled_client() -> None:
    config = parse_config(
        {
            "telemetry": {
                "otlp_endpoint": f"http://127.0.0.1:{free_port()}",
                "sample_ratio": 0.0,
                "export_timeout_s": 0.5,
            }
        }
    )
    tracer = tracing_module.build_tracer(config)
    assert tracer is not None
    try:

        def call(headers: dict[str, str]) -> Call:
            return Call("r1", "http", "chat", b"{}", "m", headers=headers)

        assert tracer.start(call({})) is None
        assert tracer.start(call({"traceparent": TRACEPARENT[:-2] + "00"})) is None
        followed = tracer.start(call({"traceparent": TRACEPARENT}))
        assert followed is not None
        followed.finish(Outcome(200))
    finally:
        tracer.shutdown()
