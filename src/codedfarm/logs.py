"""One logging setup for every codedfarm process (``codedfarm --log-level --log-format``).

Every line carries its time (UTC, ISO 8601, milliseconds), level, the process's role (the
command: ``serve``, ``worker``, ``collector``, ...), its pid and logger, and, where there is
one, the batch id and the request id(s) it is about::

    2026-12-03T16:40:01.120Z DEBUG worker[4188] codedfarm.worker.core: task 5f1c/3 ok
      in 4.2 ms batch_id=5f1c request_id=r-17,r-18
    2026-12-03T16:40:01.123Z INFO serve[4120] codedfarm.access: 127.0.0.1:51234
      "POST /v2/models/m/infer" 200 9.1 ms request_id=r-17

(one line each, folded here).
``--log-format json`` writes one JSON object per line instead (python-json-logger):
``time``, ``level``, ``role``, ``pid``, ``logger``, ``message``, then ``batch_id`` and
``request_id`` when set and any other fields the line has (the access log's ``status``,
``duration_ms``, ...). A line about a batch of several requests names them all in
``request_id``, comma-separated: a search for one id finds its server, collector and worker
lines alike.

A line is about a batch or request when the call passes ``extra=trace(batch, requests)``,
or when it runs inside :func:`log_context` (contextvars: an asyncio task and the code it
awaits see the context its request set).

Only the command line configures logging (:func:`configure_logging`); the library itself
only logs, as a library should. Lines that say a process is ready (the ones supervisors,
scripts and tests wait for) go to :data:`LIFECYCLE` at INFO and are shown at any level.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from codedfarm.errors import ConfigError

__all__ = [
    "DEFAULT_LOG_LEVEL",
    "LIFECYCLE",
    "LOG_FORMATS",
    "LOG_LEVELS",
    "LogConfig",
    "bind_request_id",
    "configure_logging",
    "current_log_config",
    "log_context",
    "trace",
]

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
LOG_FORMATS = ("text", "json")
DEFAULT_LOG_LEVEL = "info"
LIFECYCLE = "codedfarm.lifecycle"
"""The logger of "ready", "listening" and restart lines: INFO, shown at every level."""
PER_EVENT_LOGGERS = ("httpx", "httpcore", "celery.app.trace", "celery.worker.strategy")
"""Libraries' loggers with an INFO line per request or task: shown at debug only, as
codedfarm's own lines per task and batch are. (Libraries' own debug lines are never shown:
``--log-level debug`` is codedfarm's debug.)"""
LEVEL_VARIABLE = "CODEDFARM_LOG_LEVEL"
FORMAT_VARIABLE = "CODEDFARM_LOG_FORMAT"

_batch_id: contextvars.ContextVar[str] = contextvars.ContextVar("codedfarm_batch_id", default="")
_request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "codedfarm_request_id", default=""
)


@dataclass(frozen=True)
class LogConfig:
    """How a process logs: ``level`` (one of :data:`LOG_LEVELS`), ``format`` (``text`` or
    ``json``) and the ``role`` every line names. Checked when built."""

    level: str = DEFAULT_LOG_LEVEL
    format: str = "text"
    role: str = "codedfarm"

    def __post_init__(self) -> None:
        level, fmt = str(self.level).lower(), str(self.format).lower()
        if level not in LOG_LEVELS:
            raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}, "
                              f"got {self.level!r}")  # fmt: skip
        if fmt not in LOG_FORMATS:
            raise ConfigError(f"log format must be one of {', '.join(LOG_FORMATS)}, "
                              f"got {self.format!r}")  # fmt: skip
        object.__setattr__(self, "level", level)
        object.__setattr__(self, "format", fmt)

    @classmethod
    def from_env(cls, role: str = "codedfarm", level: str | None = None) -> LogConfig:
        """``CODEDFARM_LOG_LEVEL`` and ``CODEDFARM_LOG_FORMAT`` (unset: info, text);
        ``level``, when given, wins over the variable."""
        return cls(level=level or os.environ.get(LEVEL_VARIABLE) or DEFAULT_LOG_LEVEL,
                   format=os.environ.get(FORMAT_VARIABLE) or "text", role=role)  # fmt: skip

    @property
    def levelno(self) -> int:
        return int(logging.getLevelName(self.level.upper()))


def trace(batch_id: str, request_ids: Sequence[str] = ()) -> dict[str, str]:
    """The ``extra`` of a log call about batch ``batch_id`` serving ``request_ids``."""
    return {"batch_id": batch_id, "request_id": ",".join(request_ids)}


@contextlib.contextmanager
def log_context(*, batch_id: str | None = None, request_id: str | None = None) -> Iterator[None]:
    """Lines logged inside (in this thread or asyncio task) name this batch and request."""
    tokens = []
    if batch_id is not None:
        tokens.append((_batch_id, _batch_id.set(batch_id)))
    if request_id is not None:
        tokens.append((_request_id, _request_id.set(request_id)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def bind_request_id(request_id: str) -> None:
    """Lines logged from now on in this asyncio task (or thread) name ``request_id``: for a
    task that serves one request and ends with it (a server's request handler)."""
    _request_id.set(request_id)


class _Context(logging.Filter):
    """Stamps every record with the role, and the batch and request ids of its context
    (``extra=`` wins)."""

    def __init__(self, role: str) -> None:
        super().__init__()
        self.role = role

    def filter(self, record: logging.LogRecord) -> bool:
        record.role = self.role
        if not getattr(record, "batch_id", ""):
            record.batch_id = _batch_id.get()
        if not getattr(record, "request_id", ""):
            record.request_id = _request_id.get()
        return True


def _utc(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{stamp}.{int((record.created - seconds) * 1000):03d}Z"


class _TextFormatter(logging.Formatter):
    """``TIME LEVEL role[pid] logger: message key=value ...`` (the ids when set)."""

    def format(self, record: logging.LogRecord) -> str:
        line = (f"{_utc(record)} {record.levelname} {getattr(record, 'role', '')}"
                f"[{record.process}] {record.name}: {record.getMessage().rstrip()}")  # fmt: skip
        for key in ("batch_id", "request_id"):
            value = getattr(record, key, "")
            if value:
                line += f" {key}={value}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def _json_formatter() -> logging.Formatter:
    from pythonjsonlogger.core import RESERVED_ATTRS
    from pythonjsonlogger.json import JsonFormatter

    class Formatter(JsonFormatter):
        def add_fields(
            self, log_data: dict[str, Any], record: logging.LogRecord, message: dict[str, Any]
        ) -> None:
            log_data["time"] = _utc(record)
            log_data["level"] = record.levelname.lower()
            super().add_fields(log_data, record, message)
            for key in ("batch_id", "request_id"):  # absent rather than empty
                if not log_data.get(key):
                    log_data.pop(key, None)

    return Formatter(
        ["role", "process", "name", "message"],
        rename_fields={"process": "pid", "name": "logger"},
        reserved_attrs=[*RESERVED_ATTRS, "color_message"],
    )  # uvicorn's ANSI copy


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """A handler writing to whatever ``sys.stderr`` is when a line is logged (as logging's
    last-resort handler does), so a replaced stderr (a test runner's) is never kept."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr


_current: LogConfig | None = None


def current_log_config() -> LogConfig | None:
    """What :func:`configure_logging` set in this process (None: it was not called)."""
    return _current


def configure_logging(config: LogConfig) -> None:
    """Log every line of this process (and of the processes it forks) to stderr as
    ``config`` says; replaces an earlier call's handler. Python warnings become log lines."""
    global _current
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "codedfarm", False)]:
        root.removeHandler(handler)
    handler = _Stderr()
    handler.codedfarm = True  # type: ignore[attr-defined]
    handler.addFilter(_Context(config.role))
    handler.setFormatter(_json_formatter() if config.format == "json" else _TextFormatter())
    root.addHandler(handler)
    # debug is codedfarm's own: the libraries' debug chatter (Redis connections, asyncio)
    # stays out, their lines per request or task come in
    root.setLevel(max(config.levelno, logging.INFO))
    logging.getLogger("codedfarm").setLevel(config.levelno)
    logging.getLogger(LIFECYCLE).setLevel(min(logging.INFO, config.levelno))
    for name in PER_EVENT_LOGGERS:
        debug = config.levelno <= logging.DEBUG
        logging.getLogger(name).setLevel(
            logging.INFO if debug else max(logging.WARNING, config.levelno)
        )
    logging.captureWarnings(True)
    _current = config
