"""Both halves of the Celery wire format the farm speaks: writing and reading task messages.

A message on a farm queue is a Celery protocol-2 task in kombu's Redis envelope, JSON only.

- Writing (:func:`task_envelope`): ``apply_async`` costs 0.4-0.6 ms per task here, and even
  kombu's batched producer 0.16 ms. The coordinator builds the same JSON envelope itself
  (about 20 us) and pushes every task of a batch in the pipeline that writes the batch's
  inputs, so N tasks cost one round trip. A real Celery worker consumes these messages.
- Reading (:func:`read_envelope`): the batch engine reads messages without kombu or Celery.
  It checks the content type (JSON only: pickle and every other serializer are refused,
  never decoded), the task name, and the body ``[args, kwargs, embed]``, and turns the
  kwargs into a :class:`~codedfarm.protocol.messages.TaskMessage`.
- Queues (:func:`queue_keys`): kombu keeps priority levels 3, 6 and 9 of queue ``Q`` in
  lists ``"Q\\x06\\x16P"``, and pops every priority-0 list first.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import os
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import orjson

from codedfarm.errors import MessageRefusedError, ProtocolError
from codedfarm.protocol.messages import TaskMessage

__all__ = [
    "INFER_TASK",
    "Envelope",
    "priority_list",
    "queue_keys",
    "read_envelope",
    "task_envelope",
]

INFER_TASK = "codedfarm.infer"
"""The name of the farm's one task: run the model on one coded input."""

# kombu's Redis transport keeps priority levels 3, 6 and 9 of queue Q in lists "Q\x06\x16P"
PRIORITY_SEP = "\x06\x16"
PRIORITY_STEPS = (0, 3, 6, 9)


def priority_list(queue: str, priority: int) -> str:
    """The Redis list kombu keeps ``queue``'s messages of ``priority`` in (0: ``queue``)."""
    return queue if priority == 0 else f"{queue}{PRIORITY_SEP}{priority}"


def queue_keys(queues: Sequence[str]) -> list[str]:
    """The Redis lists of ``queues``, in kombu's BRPOP order (every priority 0 list first)."""
    return [q if p == 0 else f"{q}{PRIORITY_SEP}{p}" for p in PRIORITY_STEPS for q in queues]


# ----- writing ---------------------------------------------------------------------------
_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"
_EMBED = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _random_ids() -> tuple[bytes, bytes]:
    """Two random version-4 UUIDs (a task id and a delivery tag), faster than ``uuid4``."""
    h = os.urandom(32).hex()
    a, b = (f"{h[i:i + 8]}-{h[i + 8:i + 12]}-4{h[i + 13:i + 16]}-a{h[i + 17:i + 20]}-"
            f"{h[i + 20:i + 32]}".encode() for i in (0, 32))  # fmt: skip
    return a, b


def task_envelope(task: str, kwargs: dict[str, Any], queue: str, priority: int = 0) -> bytes:
    """One message for task ``task`` with ``kwargs``, routed to ``queue`` (JSON, never pickle),
    of kombu priority ``priority`` (0 first; it goes to :func:`priority_list`).

    The dispatcher sends thousands a second: the message is cut from a per-(task, queue)
    skeleton, filling in the body and fresh ids (what Celery's ``send_task`` would write)."""
    body = base64.b64encode(orjson.dumps([[], kwargs, _EMBED]))
    task_id, tag = _random_ids()
    s = _skeleton(task, queue, priority)
    return b"".join((s[0], body, s[1], task_id, s[2], task_id, s[3], task_id, s[4], tag, s[5]))


_MARKS = {"body": "@@BODY@@", "id": "@@ID@@", "tag": "@@TAG@@"}


@functools.lru_cache(maxsize=256)
def _skeleton(task: str, queue: str, priority: int = 0) -> tuple[bytes, ...]:
    """The message of ``task`` on ``queue`` as JSON, cut where the body, the task id (three
    times: id, root id, correlation id) and the delivery tag go."""
    task_id = _MARKS["id"]
    message = {
        "body": _MARKS["body"],
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": "()",
            "kwargsrepr": "",
            "origin": _ORIGIN,
            "ignore_result": True,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "reply_to": "",
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": priority,
            "body_encoding": "base64",
            "delivery_tag": _MARKS["tag"],
        },
    }
    text = json.dumps(message, separators=(",", ":"))
    parts = re.split("@@(?:BODY|ID|TAG)@@", text)
    order = re.findall("@@(BODY|ID|TAG)@@", text)
    assert order == ["BODY", "ID", "ID", "ID", "TAG"], order  # the fields' places, as cut
    return tuple(part.encode() for part in parts)


# ----- reading ---------------------------------------------------------------------------
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
    task_id: str = ""  # Celery's task id (``headers.id``), for task events


def _timestamp(value: Any, what: str, tag: str) -> float:
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError as exc:
        raise MessageRefusedError(f"task {what} {value!r} is not an ISO 8601 time", tag) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def read_envelope(raw: bytes, task_name: str) -> Envelope:
    """Parse one queue message; raises :class:`MessageRefusedError` for anything not runnable."""
    try:
        envelope = orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MessageRefusedError(f"not JSON ({exc})", None, "not_json") from exc
    try:
        properties = envelope["properties"]
        tag = properties["delivery_tag"]
    except (TypeError, KeyError) as exc:
        raise MessageRefusedError(f"not a kombu message envelope ({exc!r})", None,
                                  "bad_envelope") from exc  # fmt: skip
    if not isinstance(tag, str):
        raise MessageRefusedError("not a kombu message envelope (delivery tag)", None,
                                  "bad_envelope")  # fmt: skip
    content_type = envelope.get("content-type")
    if content_type != "application/json":
        kind = _SERIALIZERS.get(str(content_type), "an unknown serializer")
        raise MessageRefusedError(
            f"refusing to deserialize untrusted content of type {kind} ({content_type}): "
            "only JSON is accepted",
            tag,
            "serializer",
        )
    headers = envelope.get("headers") or {}
    name = headers.get("task") if isinstance(headers, dict) else None
    if name != task_name:
        raise MessageRefusedError(
            f"unknown task {name!r} (this worker serves {task_name})", tag, "unknown_task"
        )
    if headers.get("compression"):
        compression = headers["compression"]
        raise MessageRefusedError(f"compressed messages are not supported ({compression})", tag)
    body = envelope.get("body", "")
    try:
        if properties.get("body_encoding") == "base64":
            body = base64.b64decode(body, validate=True)
        args, kwargs, _embed = orjson.loads(body)
    except (ValueError, TypeError, binascii.Error) as exc:
        raise MessageRefusedError(f"task body is not a protocol-2 JSON body ({exc})", tag) from exc
    if args:
        raise MessageRefusedError("the inference task takes keyword arguments only", tag)
    try:
        task = TaskMessage.from_dict(kwargs)
    except ProtocolError as exc:
        raise MessageRefusedError(str(exc), tag) from exc
    if headers.get("expires") and _timestamp(headers["expires"], "expires", tag) < time.time():
        raise MessageRefusedError(f"task expired at {headers['expires']}", tag, "expired")
    eta = _timestamp(headers["eta"], "eta", tag) if headers.get("eta") else 0.0
    task_id = headers.get("id")
    return Envelope(tag, task, eta, task_id if isinstance(task_id, str) else "")
