"""The batch engine on Celery's control plane: remote control and events.

Celery workers answer ``celery inspect``/``celery control`` through kombu's pidbox
``Mailbox``, and send worker heartbeats and task events through ``celery.events``; Flower
and ``celery events`` build their view from both. The batch engine takes part with those
same parts, not a copy of them: a pidbox ``Node`` of the app's own mailbox (same exchange,
serializer and reply queues as every Celery worker of the app) and the app's event
``Dispatcher``. One thread runs both on its own broker connection (kombu connections are
not thread safe), so the engine's loop never waits on the control plane: the engine hands
task events over through a deque, and the thread publishes them in order.

Handlers (``celery inspect`` / ``celery control`` method names): ``ping``, ``clock``,
``conf``, ``hello`` and ``registered`` are Celery's own; ``stats``, ``active_queues``,
``active``, ``reserved``, ``scheduled``, ``revoked``, ``shutdown``, ``heartbeat``,
``enable_events`` and ``disable_events`` answer from the batch engine's state, in the shapes
Celery's workers use.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["ControlPlane", "InFlight", "TaskEvents"]

log = logging.getLogger(__name__)

HEARTBEAT_S = 2.0  # Celery's worker heartbeat interval (``celery worker --heartbeat-interval``)
POLL_S = 0.05  # how long the thread waits for a control message before flushing events


@dataclass(frozen=True)
class InFlight:
    """One task the engine holds (straggling, due, or running)."""

    task_id: str
    kwargs: dict[str, Any]
    delivery_tag: str
    queue: str
    received_at: float  # wall-clock seconds


class EngineView(Protocol):
    """What the control plane reads from the engine (thread safe, cheap)."""

    queues: list[str]
    slots: int
    processed: int

    def in_flight(self) -> list[InFlight]: ...


class TaskEvents:
    """Task events from the engine's thread to the control plane's (``None`` fields are
    left out). ``enabled`` is read on the hot path: when False, nothing is queued."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque()

    def send(self, kind: str, **fields: Any) -> None:
        if self.enabled:
            self._queue.append((kind, fields))

    def drain(self) -> Iterable[tuple[str, dict[str, Any]]]:
        while self._queue:
            yield self._queue.popleft()


class ControlPlane:
    """A pidbox node and an event dispatcher for ``engine`` under node name ``hostname``.
    ``on_shutdown`` is called by the remote ``shutdown`` command."""

    def __init__(
        self,
        app: Any,
        hostname: str,
        engine: EngineView,
        on_shutdown: Callable[[], None],
        *,
        events: TaskEvents,
        task_name: str,
    ) -> None:
        self.app = app
        self.hostname = hostname
        self.engine = engine
        self.on_shutdown = on_shutdown
        self.task_name = task_name
        self.events = events  # shared with the engine
        self.started = time.time()
        self._heartbeat_now = threading.Event()
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="control-plane", daemon=True)
        self._ready = threading.Event()
        self._node: Any = None

    # ----- lifecycle -------------------------------------------------------------------------
    def start(self, timeout: float = 10.0) -> None:
        """Start the thread; returns once the node listens (or after ``timeout``)."""
        self._thread.start()
        if not self._ready.wait(timeout):
            log.warning("control plane not listening after %g s; still trying", timeout)

    def close(self) -> None:
        """Say ``worker-offline`` and stop listening."""
        self._closing.set()
        self._thread.join(5.0)

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                with self.app.connection_for_write() as conn:
                    self._serve_on(conn)
            except Exception as exc:  # the broker went away: listen again when it is back
                log.warning("control plane lost the broker (%s); reconnecting", exc)
                self._closing.wait(1.0)

    def _serve_on(self, conn: Any) -> None:
        from celery.worker.state import SOFTWARE_INFO

        node = self.app.control.mailbox.Node(
            self.hostname, state=self, handlers=_handlers(), channel=conn.channel()
        )
        self._node = node
        consumer = node.listen(callback=self._on_message)
        dispatcher = self.app.events.Dispatcher(conn, hostname=self.hostname, enabled=True)
        with consumer, dispatcher:
            self._ready.set()
            self._heartbeat(dispatcher, "worker-online", SOFTWARE_INFO)
            next_beat = time.monotonic() + HEARTBEAT_S
            while not self._closing.is_set():
                self._publish_events(dispatcher)
                if time.monotonic() >= next_beat or self._heartbeat_now.is_set():
                    self._heartbeat_now.clear()
                    self._heartbeat(dispatcher, "worker-heartbeat", SOFTWARE_INFO)
                    next_beat = time.monotonic() + HEARTBEAT_S
                with contextlib.suppress(TimeoutError):  # socket.timeout: nothing came
                    conn.drain_events(timeout=POLL_S)
            self._publish_events(dispatcher)
            self._heartbeat(dispatcher, "worker-offline", SOFTWARE_INFO)

    def _publish_events(self, dispatcher: Any) -> None:
        for kind, fields in self.events.drain():
            try:
                dispatcher.send(kind, **fields)
            except (TypeError, ValueError) as exc:  # a malformed event: drop it, keep going
                log.error("dropped a %s event: %s", kind, exc)

    def _heartbeat(self, dispatcher: Any, kind: str, software: dict[str, Any]) -> None:
        from celery.utils.sysinfo import load_average

        dispatcher.send(
            kind,
            freq=HEARTBEAT_S,
            active=len(self.engine.in_flight()),
            processed=self.engine.processed,
            loadavg=load_average(),
            engine="batch",
            **software,
        )

    def _on_message(self, body: Any, message: Any) -> None:
        try:
            self._node.handle_message(body, message)
        except Exception:  # a bad request must not stop the control plane
            log.exception("control message %r failed", body)

    # ----- what the handlers read ------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Celery's ``stats`` shape, from the batch engine."""
        usage = resource.getrusage(resource.RUSAGE_SELF)
        broker = {k: v for k, v in self.app.connection_for_read().info().items()
                  if k != "password"}  # fmt: skip
        return {
            "total": {self.task_name: self.engine.processed},
            "pid": os.getpid(),
            "clock": str(self.app.clock.value),
            "uptime": round(time.time() - self.started),
            "pool": {
                "implementation": "codedfarm.worker.batch_engine:BatchEngine",
                "max-concurrency": self.engine.slots,
                "processes": [os.getpid()],
                "in-flight": len(self.engine.in_flight()),
            },
            "broker": broker,
            "prefetch_count": self.engine.slots,
            "rusage": {
                name: getattr(usage, f"ru_{name}")
                for name in ("utime", "stime", "maxrss", "minflt", "majflt", "nvcsw", "nivcsw")
            },
            "engine": "batch",
        }

    def active_queues(self) -> list[dict[str, Any]]:
        from kombu.entity import Exchange, Queue

        queues = [Queue(q, Exchange(q), routing_key=q) for q in self.engine.queues]  # type: ignore[no-untyped-call]
        return [dict(q.as_dict(recurse=True)) for q in queues]  # type: ignore[no-untyped-call]

    def active(self) -> list[dict[str, Any]]:
        """Celery's ``Request.info()`` shape for every task the engine holds."""
        return [
            {
                "id": t.task_id,
                "name": self.task_name,
                "args": [],
                "kwargs": t.kwargs,
                "type": self.task_name,
                "hostname": self.hostname,
                "time_start": t.received_at,
                "acknowledged": False,
                "delivery_info": {
                    "exchange": "",
                    "routing_key": t.queue,
                    "priority": 0,
                    "redelivered": False,
                },
                "worker_pid": os.getpid(),
            }
            for t in self.engine.in_flight()
        ]


def _ok(value: str) -> dict[str, str]:
    return {"ok": value}


def _shutdown(plane: ControlPlane, msg: str = "Got shutdown from remote", **_: Any) -> Any:
    log.warning(msg)
    plane.on_shutdown()
    return _ok("shutting down")


def _set_events(enabled: bool) -> Callable[..., Any]:
    def handler(plane: ControlPlane, **_: Any) -> Any:
        already = plane.events.enabled == enabled
        plane.events.enabled = enabled
        word = "enabled" if enabled else "disabled"
        return _ok(f"task events already {word}" if already else f"task events {word}")

    return handler


def _heartbeat_now(plane: ControlPlane, **_: Any) -> None:
    plane._heartbeat_now.set()


def _handlers() -> dict[str, Callable[..., Any]]:
    from celery.worker.control import Panel

    celery_own = {name: Panel.data[name] for name in ("ping", "clock", "conf", "hello",
                                                      "registered")}  # fmt: skip
    return {
        **celery_own,
        "stats": lambda plane, **_: plane.stats(),
        "active_queues": lambda plane, **_: plane.active_queues(),
        "active": lambda plane, **_: plane.active(),
        "reserved": lambda plane, **_: [],
        "scheduled": lambda plane, **_: [],
        "revoked": lambda plane, **_: [],
        "shutdown": _shutdown,
        "heartbeat": _heartbeat_now,
        "enable_events": _set_events(True),
        "disable_events": _set_events(False),
    }
