"""Reading Celery task messages the way the batch engine receives them: JSON only.

A message on a farm queue is kombu's Redis envelope around a Celery protocol-2 task (see
``coordinator.celery_messages``). The batch engine reads it without kombu or Celery: it
checks the content type (JSON only: pickle and every other serializer are refused, never
decoded), the task name, and the body ``[args, kwargs, embed]``, and turns the kwargs into
a :class:`~codedfarm.protocol.TaskMessage`.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from codedfarm.errors import MessageRefusedError, ProtocolError
from codedfarm.protocol import TaskMessage

__all__ = ["Envelope", "read_envelope"]

_SERIALIZERS = {
    "application/x-python-serialize": "pickle",
    "application/x-yaml": "yaml",
    "application/x-msgpack": "msgpack",
}


@dataclass(frozen=True)
class Envelope:
    """One received task: its kombu delivery tag, its kwargs and when it may start."""

    tag: str
    task: TaskMessage
    not_before: float = 0.0  # wall-clock seconds (a Celery ``eta``); 0: at once


def _timestamp(value: Any, what: str, tag: str) -> float:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        raise MessageRefusedError(f"task {what} {value!r} is not an ISO 8601 time", tag) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read_envelope(raw: bytes, task_name: str) -> Envelope:
    """Parse one queue message; raises :class:`MessageRefusedError` for anything not runnable."""
    try:
        envelope = json.loads(raw)
        properties = envelope["properties"]
        tag = properties["delivery_tag"]
    except (ValueError, TypeError, KeyError) as exc:
        raise MessageRefusedError(f"not a kombu message envelope ({exc!r})", None) from None
    if not isinstance(tag, str):
        raise MessageRefusedError("not a kombu message envelope (delivery tag)", None)
    content_type = envelope.get("content-type")
    if content_type != "application/json":
        kind = _SERIALIZERS.get(str(content_type), "an unknown serializer")
        raise MessageRefusedError(
            f"refusing to deserialize untrusted content of type {kind} ({content_type}): "
            "only JSON is accepted",
            tag,
        )
    headers = envelope.get("headers") or {}
    name = headers.get("task") if isinstance(headers, dict) else None
    if name != task_name:
        raise MessageRefusedError(f"unknown task {name!r} (this worker serves {task_name})", tag)
    if headers.get("compression"):
        compression = headers["compression"]
        raise MessageRefusedError(f"compressed messages are not supported ({compression})", tag)
    body = envelope.get("body", "")
    try:
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body, validate=True)
        args, kwargs, _embed = json.loads(body)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise MessageRefusedError(f"task body is not a protocol-2 JSON body ({exc})", tag) from None
    if args:
        raise MessageRefusedError("the inference task takes keyword arguments only", tag)
    try:
        task = TaskMessage.from_dict(kwargs)
    except ProtocolError as exc:
        raise MessageRefusedError(str(exc), tag) from None
    if headers.get("expires") and _timestamp(headers["expires"], "expires", tag) < time.time():
        raise MessageRefusedError(f"task expired at {headers['expires']}", tag)
    eta = _timestamp(headers["eta"], "eta", tag) if headers.get("eta") else 0.0
    return Envelope(tag, task, eta)
