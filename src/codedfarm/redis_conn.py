"""Connecting to Redis: one URL for a single server or a Sentinel-managed primary, and a clear
error that names the URL (password masked).

URLs (redis-py's syntax, plus Sentinel)::

    redis://[user:password@]host:port/db            a single Redis
    rediss://...?ssl_ca_certs=/path/ca.pem          the same over TLS
    redis+sentinel://[user:password@]s1:26379,s2:26379,s3:26379/mymaster[/db]
                                                    the primary of service ``mymaster``, as
                                                    the Sentinels name it (``sentinel://`` too)

With Sentinel, the farm's own clients find the current primary through redis-py's Sentinel
client and follow a failover; Celery's broker uses kombu's ``sentinel://`` transport with
the same Sentinels (:func:`celery_broker`). The password is the primary's; a
``sentinel_password`` query parameter authenticates to the Sentinels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis
from redis.sentinel import Sentinel

from codedfarm.errors import ConfigError, RedisUnavailableError
from codedfarm.settings import Settings

__all__ = ["SentinelURL", "celery_broker", "connect", "mask_url", "parse_sentinel_url",
           "redis_from_url"]  # fmt: skip

SENTINEL_SCHEMES = ("redis+sentinel", "sentinel")


def mask_url(url: str) -> str:
    """``redis://user:secret@host`` -> ``redis://user:***@host``."""
    scheme, sep, rest = url.partition("://")
    if not sep or "@" not in rest:
        return url
    creds, _, host = rest.rpartition("@")
    if ":" in creds:
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return f"{scheme}://***@{host}"


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL."""

    hosts: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_password: str | None = None


def parse_sentinel_url(url: str) -> SentinelURL | None:
    """The parts of a Sentinel URL; None for any other URL. Raises :class:`ConfigError`."""
    scheme, sep, _ = url.partition("://")
    if not sep or scheme not in SENTINEL_SCHEMES:
        return None
    parts = urlsplit(url)
    netloc = parts.netloc
    creds, at, hostlist = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = creds.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    hosts = []
    for item in filter(None, hostlist.split(",")):
        host, colon, port = item.rpartition(":")
        if not colon or not port.isdigit():
            raise ConfigError(f"{mask_url(url)}: Sentinel address {item!r} needs host:port")
        hosts.append((host, int(port)))
    path = [p for p in parts.path.split("/") if p]
    if not hosts or not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise ConfigError(
            f"{mask_url(url)}: expected redis+sentinel://[user:password@]host:port[,host:port...]"
            "/SERVICE[/DB]"
        )
    query = parse_qs(parts.query)
    sentinel_password = query.get("sentinel_password", [None])[0]
    return SentinelURL(tuple(hosts), path[0], int(path[1]) if len(path) == 2 else 0,
                       username, password, sentinel_password)  # fmt: skip


def redis_from_url(url: str, **kwargs: Any) -> redis.Redis:
    """A client for ``url``: ``redis.Redis.from_url``, or the Sentinel-managed primary."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return redis.Redis.from_url(url, **kwargs)
    sentinel_kwargs: dict[str, Any] = {"socket_timeout": kwargs.get("socket_connect_timeout", 3)}
    if sentinel.sentinel_password:
        sentinel_kwargs["password"] = sentinel.sentinel_password
    manager = Sentinel(list(sentinel.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call,unused-ignore]
    client: redis.Redis = manager.master_for(  # type: ignore[no-untyped-call,unused-ignore]
        sentinel.service, db=sentinel.db, username=sentinel.username,
        password=sentinel.password, **kwargs,
    )  # fmt: skip
    return client


def celery_broker(url: str) -> tuple[str, dict[str, Any]]:
    """Celery's broker URL and extra transport options for ``url`` (kombu's ``sentinel://``
    transport for a Sentinel URL)."""
    sentinel = parse_sentinel_url(url)
    if sentinel is None:
        return url, {}
    auth = ""
    if sentinel.password is not None:
        auth = f"{sentinel.username or ''}:{sentinel.password}@"
    broker = ";".join(f"sentinel://{auth}{host}:{port}/{sentinel.db}"
                      for host, port in sentinel.hosts)  # fmt: skip
    options: dict[str, Any] = {"master_name": sentinel.service}
    if sentinel.sentinel_password:
        options["sentinel_kwargs"] = {"password": sentinel.sentinel_password}
    return broker, options


def connect(settings: Settings, *, timeout: float = 3.0) -> redis.Redis:
    """A Redis client for ``settings.redis_url``, checked with PING."""
    try:
        client = redis_from_url(
            settings.redis_url,
            socket_connect_timeout=timeout,
            socket_keepalive=True,
            health_check_interval=10,
        )
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise RedisUnavailableError(
            f"cannot reach Redis at {mask_url(settings.redis_url)}: {exc}"
        ) from exc
    return client
