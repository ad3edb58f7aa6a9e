"""Response cache: exact-match, streaming-aware; in-process memory or shared Redis."""

from __future__ import annotations

from ..config import CacheConfig
from .entry import CacheBackend, CacheEntry, CacheUnavailable
from .stage import CacheStats, CacheTicket, ResponseCache


def build_backend(config: CacheConfig) -> CacheBackend:
    """The backend the config names (created here, connected by `start()`)."""
    if config.backend == "redis":
        from .redis import RedisBackend

        return RedisBackend(
            config.redis_url,
            config.key_prefix,
            config.timeout_s,
            config.retry_after_s,
            config.max_bytes,
        )
    from .memory import MemoryBackend

    return MemoryBackend(config.max_bytes)


def build_cache(config: CacheConfig) -> ResponseCache | None:
    """The cache stage, or None when the config leaves the cache off."""
    if not config.enabled:
        return None
    return ResponseCache(config, build_backend(config))


__all__ = [
    "CacheBackend",
    "CacheEntry",
    "CacheStats",
    "CacheTicket",
    "CacheUnavailable",
    "ResponseCache",
    "build_backend",
    "build_cache",
]
