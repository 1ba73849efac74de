"""``/livez`` and ``/readyz`` next to ``/metrics``, on a process's metrics port.

Kubernetes probes, compose healthchecks and the Dockerfile's ``HEALTHCHECK`` ask these:

- ``/livez``: 200 while the process serves HTTP (a wedged process stops answering) and its
  liveness check, where it has one, passes; else 503 with a JSON object whose ``reason``
  says why. A worker's check is its engine's loop (answered by the supervisor, which reads
  the engine's progress stamps: :mod:`codedfarm.worker.liveness` states the rule).
- ``/readyz``: 200 when the process can do its work, else 503 with the reason as plain
  text. A worker is ready when Redis answers and its own heartbeat is fresh in the live set
  of every queue it serves: the engine writes it only once its models are loaded and it is
  taking tasks (either engine), so this is also "models preloaded". A collector service is
  ready when Redis answers.
- everything else: Prometheus' exposition (``/metrics``), as ``start_http_server`` serves it.

The server is prometheus_client's own threading WSGI server (stdlib ``wsgiref``): the
metrics port already ran it, and a probe needs no more than that.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import redis
from prometheus_client import CollectorRegistry, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

from codedfarm.settings import Settings

__all__ = ["Liveness", "Readiness", "probe_redis", "redis_ready", "serve_health_and_metrics",
           "worker_ready"]  # fmt: skip

Readiness = Callable[[], str | None]
"""None when ready, else why not (one line)."""
Liveness = Callable[[], dict[str, object] | None]
"""None when live, else why not: the JSON fields of the 503 (``reason`` at least)."""

PROBE_TIMEOUT_S = 2.0
"""Seconds a readiness check may wait for Redis (probes time out at a few seconds)."""


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """No line per probe (they come every few seconds)."""


def serve_health_and_metrics(
    port: int,
    addr: str,
    ready: Readiness,
    registry: CollectorRegistry | None = None,
    live: Liveness | None = None,
) -> ThreadingWSGIServer:
    """Serve ``/livez`` (``live``; None: live while it answers), ``/readyz`` and ``/metrics``
    (of ``registry``; None: the default one) from a daemon thread. A port in use is a
    :class:`~codedfarm.errors.ConfigError`."""
    from prometheus_client import REGISTRY

    from codedfarm.monitoring.metrics import port_error

    metrics = make_wsgi_app(registry or REGISTRY)

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/livez":
            try:
                why = None if live is None else live()
            except Exception as exc:  # a probe answers, whatever went wrong
                why = {"status": "error", "reason": f"liveness check failed: {exc}"}
            if why is None:
                start_response("200 OK", [("Content-Type", "text/plain")])
                return [b"ok\n"]
            start_response("503 Service Unavailable", [("Content-Type", "application/json")])
            return [json.dumps(why).encode() + b"\n"]
        if path == "/readyz":
            try:
                reason = ready()
            except Exception as exc:  # a probe answers, whatever went wrong
                reason = f"readiness check failed: {exc}"
            status = "200 OK" if reason is None else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain")])
            return [b"ok\n" if reason is None else f"not ready: {reason}\n".encode()]
        return metrics(environ, start_response)  # type: ignore[no-any-return]

    try:
        httpd = make_server(addr, port, app, ThreadingWSGIServer, handler_class=_QuietHandler)
    except OSError as exc:
        raise port_error(port, addr, exc) from exc
    thread = threading.Thread(target=httpd.serve_forever, name="health", daemon=True)
    thread.start()
    return httpd


def probe_redis(settings: Settings) -> redis.Redis:
    """A Redis client for the probes: short timeouts, connected on first use (no
    connection is made here), shared by the server's threads (redis-py pools them)."""
    from codedfarm.redis_conn import redis_from_url

    return redis_from_url(settings.redis_url, socket_connect_timeout=PROBE_TIMEOUT_S,
                          socket_timeout=PROBE_TIMEOUT_S)  # fmt: skip


def redis_ready(client: redis.Redis) -> Readiness:
    """Ready when Redis answers PING."""

    def check() -> str | None:
        try:
            client.ping()
        except (redis.RedisError, OSError) as exc:
            return f"Redis does not answer: {exc}"
        return None

    return check


def worker_ready(client: redis.Redis, live_keys: Sequence[str],
                 member: str, liveness_s: float) -> Readiness:  # fmt: skip
    """Ready when Redis answers and ``member`` beat within ``liveness_s`` in every one of
    ``live_keys`` (the live sets of the worker's queues)."""

    def check() -> str | None:
        try:
            with client.pipeline(transaction=False) as pipe:
                for key in live_keys:
                    pipe.zscore(key, member)
                scores = pipe.execute()
        except (redis.RedisError, OSError) as exc:
            return f"Redis does not answer: {exc}"
        since = time.time() - liveness_s
        stale = [k.rsplit(":", 1)[-1] for k, s in zip(live_keys, scores, strict=True)
                 if s is None or float(s) < since]  # fmt: skip
        if stale:
            return (f"worker {member} is not serving queue(s) {', '.join(stale)} yet "
                    "(loading its models, or its engine is restarting)")  # fmt: skip
        return None

    return check
