"""The admin API: keys, teams and projects over HTTP on `server.admin_port`."""

from __future__ import annotations

from ..config import Config
from ..keys import KeyService
from .routes import AdminApi
from .server import AdminServer, serve

__all__ = ["AdminServer", "start_admin"]


async def start_admin(keys: KeyService, config: Config) -> AdminServer:
    """Listen for the admin API on server.host:server.admin_port (inside the worker)."""
    return await serve(AdminApi(keys), config.server.host, config.server.admin_port)
