"""The `route` stage: a model name to its group; the group's runner for the upstream step."""

from __future__ import annotations

import time
from collections.abc import Awaitable

from .. import _core
from ..calls import Call, Deployment, EventStream, Reply
from ..config import Config
from ..credentials import SecretMask, configured_secrets
from ..errors import GatewayError, bad_request, model_not_found
from ..providers import Provider
from .attempts import RouteState
from .group import ModelGroup
from .health import HealthProbes
from .runner import attempt_stream, attempt_whole, run


class Router:
    """Resolves the model a client asked for. A one-deployment model (the plain
    `provider`/`model` form) gets its deployment and nothing else, as it always has; a group
    gets its route, run by `complete` or `stream` in place of the provider call."""

    name = "route"

    def __init__(self, config: Config, providers: dict[str, Provider]) -> None:
        self._deployments: dict[str, Deployment] = {}
        self.groups: dict[str, ModelGroup] = {}
        self.probes: HealthProbes | None = None
        # Provider keys an upstream echoed in an error are masked before the admin view.
        self.secrets = SecretMask(configured_secrets(config))
        for name, model in config.models.items():
            self._deployments[name] = Deployment(name, model.provider, model.model)
            if model.grouped:
                self.groups[name] = ModelGroup(name, model, providers)
        # Fallback targets may be plain models: they get a group of their own to run in.
        for name, model in config.models.items():
            group = self.groups.get(name)
            if group is None:
                continue
            for fallback in model.fallbacks:
                targets = [self._group(t, config, providers) for t in fallback.to]
                for reason in fallback.on:
                    group.fallbacks.setdefault(reason, []).extend(targets)

    def _group(self, name: str, config: Config, providers: dict[str, Provider]) -> ModelGroup:
        group = self.groups.get(name)
        if group is None:
            group = self.groups[name] = ModelGroup(name, config.models[name], providers)
        return group

    async def start(self) -> None:
        """Start the active health probes, if a group has `health_check` (inside the worker)."""
        groups = [g for g in self.groups.values() if g.config.health_check is not None]
        if groups:
            self.probes = HealthProbes(groups)
            await self.probes.start()

    async def close(self) -> None:
        if self.probes is not None:
            probes, self.probes = self.probes, None
            await probes.close()

    def names(self) -> list[str]:
        return list(self._deployments)

    def __call__(self, call: Call) -> None:
        deployment = self._deployments.get(call.model)
        if deployment is None:
            raise model_not_found(call.model)
        call.deployment = deployment
        timeout = call.headers.get("x-llm-proxy-timeout")
        if timeout is not None:
            _client_deadline(call, timeout)
        if self.groups:
            group = self.groups.get(call.model)
            if group is not None and group.config.grouped:
                route = call.routing = RouteState(group)
                if group.counts_tokens:
                    _check_context_window(call, route)

    def complete(self, call: Call) -> Awaitable[Reply]:
        """A group's whole answer (the runner's coroutine, awaited by the pipeline)."""
        route = call.routing
        assert route is not None
        return run(call, route, attempt_whole)

    def stream(self, call: Call) -> Awaitable[EventStream]:
        """A group's stream, its first event in hand."""
        route = call.routing
        assert route is not None
        return run(call, route, attempt_stream)


def _client_deadline(call: Call, value: object) -> None:
    try:
        seconds = float(str(value))
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise bad_request(
            f"x-llm-proxy-timeout must be a positive number of seconds, not {value!r}",
            param="x-llm-proxy-timeout",
        )
    deadline = time.monotonic() + seconds
    if call.deadline is None or deadline < call.deadline:
        call.deadline = deadline


def _input_tokens(call: Call, model: str) -> int:
    if call.endpoint == "chat":
        return int(_core.count_chat_tokens(call.prompt_json, model))
    text = call.prompt_json.decode("utf-8", "replace")
    return int(_core.count_tokens(text, str(_core.encoding_for_model(model))))


def _check_context_window(call: Call, route: RouteState) -> None:
    """Decided before the call: the exact input tokens against each deployment's window.
    Deployments too small are skipped; if none fits, the call falls back to a model that
    fits (or is refused, as OpenAI refuses it), without calling the small one."""
    group = route.group
    model = group.deployments[0].deployment.model
    try:
        need = _input_tokens(call, model)
    except Exception:
        return  # a prompt the counter cannot read: the upstream will judge it
    route.need_tokens = need
    if group.fits(need):
        return
    for target in group.fallbacks.get("context_window", ()):
        if target.fits(need):
            route.group = target
            route.fallback = target.name
            return
    window = max(d.context_window or 0 for d in group.deployments)
    raise GatewayError(
        400,
        f"This model's maximum context length is {window} tokens. However, your messages "
        f"resulted in {need} tokens. Please reduce the length of the messages.",
        param="messages",
        code="context_length_exceeded",
    )
