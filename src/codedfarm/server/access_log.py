"""The server's access log (``codedfarm serve --access-log``): one line per HTTP request.

Logged at INFO on ``codedfarm.access`` when the response ends::

    127.0.0.1:51234 "POST /v2/models/lenet5/infer" 200 9.1 ms request_id=3f2a9c0d1e4b5a67

with, in ``--log-format json``, the fields ``client``, ``method``, ``path``, ``status``,
``duration_ms``, ``bytes`` (the response body's) and ``request_id`` (an inference request's
id: its ``id``, else its ``X-Request-ID`` header, else one the server made; the same id is
in the group's lines of the collector and the workers). uvicorn's own access log is off: it
knows neither the time taken nor the request id.

A plain ASGI middleware, not Starlette's ``BaseHTTPMiddleware`` (which runs every request
through an extra task and memory stream). Off by default: its cost per request is in
docs/serve.md ("Logs").
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = ["ACCESS_LOGGER", "AccessLog"]

ACCESS_LOGGER = "codedfarm.access"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]

log = logging.getLogger(ACCESS_LOGGER)


class AccessLog:
    """Logs each HTTP request of ``app`` once its response is sent (or the request fails)."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not log.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        sent = {"status": 0, "bytes": 0}

        async def measured_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent["status"] = message["status"]
            elif message["type"] == "http.response.body":
                sent["bytes"] += len(message.get("body", b""))
            await send(message)

        try:
            await self.app(scope, receive, measured_send)
        finally:
            self._line(scope, sent["status"] or 500, sent["bytes"], time.perf_counter() - start)

    @staticmethod
    def _line(scope: Scope, status: int, size: int, seconds: float) -> None:
        client = scope.get("client")
        where = f"{client[0]}:{client[1]}" if client else "-"
        path = scope.get("path", "")
        request_id = str((scope.get("state") or {}).get("request_id", ""))
        duration_ms = round(seconds * 1e3, 2)
        log.info('%s "%s %s" %d %.1f ms', where, scope.get("method", ""), path, status,
                 duration_ms, extra={"client": where, "method": scope.get("method", ""),
                                     "path": path, "status": status, "bytes": size,
                                     "duration_ms": duration_ms,
                                     "request_id": request_id})  # fmt: skip
