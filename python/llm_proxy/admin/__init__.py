"""The admin API: keys, teams and projects over HTTP on `server.admin_port`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..config import Config
from ..keys import KeyService
from .routes import AdminApi
from .server import AdminServer, serve

__all__ = ["AdminServer", "start_admin"]


async def start_admin(
    keys: KeyService, config: Config, deployments: Callable[[], dict[str, Any]] | None = None
) -> AdminServer:
    """Listen for the admin API on server.host:server.admin_port (inside the worker);
    `deployments` answers GET /admin/v1/deployments."""
    return await serve(AdminApi(keys, deployments), config.server.host, config.server.admin_port)
