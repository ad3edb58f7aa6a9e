"""Which deployment holds each stored Responses API response (`previous_response_id`).

Per process by default; shared through Redis when one is configured, so a follow-up reaching
another worker or another gateway instance still goes to the deployment that holds the
earlier response.
"""

from __future__ import annotations

from ..config import Config
from .memory import MemoryOwners

# The interface: the memory table's; the Redis one extends it.
ResponseOwners = MemoryOwners

__all__ = ["MemoryOwners", "ResponseOwners", "build_owners"]


def build_owners(config: Config) -> ResponseOwners:
    """The table `config` asks for: `responses.redis_url`, else the cache's Redis, else memory."""
    settings = config.responses
    url = settings.redis_url
    if url is None and config.cache.enabled and config.cache.backend == "redis":
        url = config.cache.redis_url
    if not url:
        return MemoryOwners()
    # Imported only when used: redis-py pulls in more (OpenTelemetry, if installed).
    from .redis import RedisOwners

    return RedisOwners(url, settings.key_prefix, settings.ttl_s, settings.timeout_s)
