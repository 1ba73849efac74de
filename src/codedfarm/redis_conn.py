"""Connecting to Redis with a clear error that names the URL (password masked)."""

from __future__ import annotations

import redis

from codedfarm.errors import RedisUnavailableError
from codedfarm.settings import Settings

__all__ = ["connect", "mask_url"]


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://***@{host}"


def connect(settings: Settings, *, timeout: float = 3.0) -> redis.Redis:
    """A Redis client for ``settings.redis_url``, checked with PING."""
    try:
        client = redis.Redis.from_url(
            settings.redis_url,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
            health_check_interval=10,
        )
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}"
        ) from None
    return client
