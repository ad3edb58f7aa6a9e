"""One worker: its config, stores, pipeline and both front doors, and their lifecycle.

Granian forks the workers and calls `create_app` in each; `__rsgi_init__` then starts what
needs the worker's own event loop (upstream pools, the log writer, the gRPC server).
"""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from typing import TYPE_CHECKING

import msgspec

from .config import Config, load_config
from .http.door import HttpDoor
from .keys import KeyService, check_exposure
from .observe import build_recorder, worker_started
from .pipeline import Pipeline

if TYPE_CHECKING:
    from .admin import AdminServer
    from .grpc import GrpcServer


class GatewayApp:
    """The RSGI application of one worker; Granian serves its `__rsgi__` (the HTTP door)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.grpc: GrpcServer | None = None
        self.admin: AdminServer | None = None
        self.recorder = build_recorder(config)
        self.keys = KeyService(config)
        self.pipeline = Pipeline(config, self.recorder, self.keys.stage)
        self.http = HttpDoor(config, self.pipeline, self.recorder.metrics, self.keys.stage)
        # Granian calls `__rsgi__` per request: the door itself, with no hop through this object.
        self.__rsgi__ = self.http.__call__

    def __rsgi_init__(self, loop: asyncio.AbstractEventLoop) -> None:
        worker_started()
        # Migrates the key schema (refusing a newer one) and loads the key table.
        self.keys.start()
        if self.keys.admin_key and self.config.server.admin_port:
            from .admin import start_admin
            from .routing.status import deployments_state

            router = self.pipeline.router
            self.admin = loop.run_until_complete(
                start_admin(self.keys, self.config, lambda: deployments_state(router))
            )
        loop.run_until_complete(self.recorder.start())
        loop.run_until_complete(self.pipeline.start())
        self.http.start(loop)
        self._watch_for_shutdown(loop)
        port = self.config.server.grpc_port
        if port:
            # Imported and built here, inside the worker's loop: grpc.aio objects belong to
            # the loop that made them and must never exist before Granian forks.
            from .grpc import start_grpc

            self.grpc = loop.run_until_complete(start_grpc(self.pipeline, self.config, port))
        # What exists now lives as long as the worker: frozen, the collector never walks it
        # again (its full collections would pause every request in flight). Startup's
        # garbage is collected first, not frozen.
        gc.collect()
        gc.freeze()

    def _watch_for_shutdown(self, loop: asyncio.AbstractEventLoop) -> None:
        """At SIGTERM, plan to cut what still runs near the end of the grace period.

        Granian's own handler (on the loop) still runs: a Python-level handler does not
        replace the loop's, which is woken through the signal wakeup fd.
        """
        grace = self.config.server.shutdown_grace_s
        # Time left after the cut: the cut calls answer and their records reach the store.
        cut_after_s = max(0.5, grace - max(1.5, grace * 0.1))

        def on_sigterm(signum: int, frame: object) -> None:
            loop.call_soon_threadsafe(self.http.watch.shutdown, cut_after_s)

        signal.signal(signal.SIGTERM, on_sigterm)

    def __rsgi_del__(self, loop: asyncio.AbstractEventLoop) -> None:
        if self.admin is not None:
            loop.run_until_complete(self.admin.close())
        if self.grpc is not None:
            # Granian kills the worker at shutdown_grace_s; leave a margin to close the rest.
            grace = max(0.5, self.config.server.shutdown_grace_s - 1.0)
            loop.run_until_complete(self.grpc.stop(grace))
        self.http.stop()
        loop.run_until_complete(self.http.responses.owners.close())
        loop.run_until_complete(self.pipeline.close())
        # Flushes every queued log record to the store (or the spool).
        loop.run_until_complete(self.recorder.close())
        self.keys.stop()


def create_app() -> GatewayApp:
    """Granian factory: loads the config named by LLM_PROXY_CONFIG (or the default one).

    `llm-proxy serve` passes its --host / --grpc-port overrides as LLM_PROXY_HOST and
    LLM_PROXY_GRPC_PORT.
    """
    config = load_config(os.environ.get("LLM_PROXY_CONFIG") or None)
    server = config.server
    host = os.environ.get("LLM_PROXY_HOST") or server.host
    grpc_port = os.environ.get("LLM_PROXY_GRPC_PORT")
    port = server.grpc_port if grpc_port in (None, "") else int(grpc_port)
    check_exposure(config, host)
    if host != server.host or port != server.grpc_port:
        config = msgspec.structs.replace(
            config, server=msgspec.structs.replace(server, host=host, grpc_port=port)
        )
    return GatewayApp(config)
