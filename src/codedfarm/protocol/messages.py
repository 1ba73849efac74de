"""The farm's own messages: task kwargs, completion notices, registrations, reply frames.

Tensors travel as raw little-endian bytes in Redis keys (see :mod:`codedfarm.protocol.keys`);
every message is small JSON. Nothing here is pickled, and nothing that arrives is unpickled.
"""

from __future__ import annotations

import functools
import json
import math
import struct
from dataclasses import asdict, dataclass, field, fields
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import orjson

from codedfarm.errors import ProtocolError

__all__ = [
    "ALLOWED_DTYPES",
    "BatchRegistration",
    "Notice",
    "TaskMessage",
    "array_from_bytes",
    "as_bytes",
    "pack_frame",
    "parse_inbox_message",
    "unpack_frame",
]

ALLOWED_DTYPES = ("float32", "float64", "float16")
_ITEMSIZE = {"float32": 4, "float64": 8, "float16": 2}
T = TypeVar("T")


@functools.cache
def _field_names(cls: Any) -> frozenset[str]:
    return frozenset(f.name for f in fields(cls))


def _from_mapping(cls: type[T], data: object, what: str) -> T:
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(data).__name__}")
    names = _field_names(cls)  # type: ignore[arg-type]
    try:
        return cls(**{k: v for k, v in data.items() if k in names})
    except TypeError as exc:
        raise ProtocolError(f"malformed {what}: {exc}") from exc


def _loads(raw: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"{what} is not JSON: {exc}") from exc


@dataclass(frozen=True)
class TaskMessage:
    """The kwargs of one coded task: keys and small metadata only."""

    batch: str
    index: int
    model: str
    input_key: str
    offset: int
    nbytes: int
    dtype: str
    shape: list[int]
    output_key: str
    inbox: str
    ttl: float
    delay: float | None = None  # None: no per-batch straggler plan; use the worker's default
    fail: bool = False
    queue: str = ""  # the queue the task was sent to (a metrics label)
    version: int | None = None  # a repository model's version (None: a zoo model)
    requests: list[str] = field(default_factory=list)  # the batch's request ids (its logs)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)  # flat fields: no need for asdict's deep copy

    @classmethod
    def from_dict(cls, data: object) -> TaskMessage:
        msg = _from_mapping(cls, data, "task message")
        if msg.dtype not in ALLOWED_DTYPES:
            raise ProtocolError(f"task message dtype {msg.dtype!r} not in {ALLOWED_DTYPES}")
        if not isinstance(msg.shape, list) or not all(type(d) is int and d > 0 for d in msg.shape):
            raise ProtocolError(f"task message shape {msg.shape!r} is not a list of sizes > 0")
        expected = math.prod(msg.shape) * _ITEMSIZE[msg.dtype]
        if msg.version is not None and (
            not isinstance(msg.version, int) or isinstance(msg.version, bool) or msg.version < 1
        ):
            raise ProtocolError(f"task message model version {msg.version!r} is not >= 1")
        if not isinstance(msg.requests, list) or not all(isinstance(r, str) for r in msg.requests):
            raise ProtocolError(f"task message requests {msg.requests!r} is not a list of ids")
        if msg.nbytes != expected or msg.offset < 0 or msg.index < 0:
            raise ProtocolError(
                f"task message for batch {msg.batch}: nbytes={msg.nbytes} does not match "
                f"shape {msg.shape} of {msg.dtype} ({expected} bytes)"
            )
        return msg


@dataclass(frozen=True)
class Notice:
    """A worker's completion notice (its output bytes are in the batch's output hash)."""

    batch: str
    index: int
    ok: bool
    dtype: str = "float32"
    shape: list[int] = field(default_factory=list)
    error: str = ""
    written_at: float = 0.0  # wall-clock time of the report call, seconds since the epoch
    compute_s: float = 0.0  # the model's forward pass (its share of a grouped pass)
    delay_s: float = 0.0  # injected straggler delay
    worker: str = ""
    kind: str = "result"
    received_at: float = 0.0  # wall-clock time the worker took the task off its queue
    started_at: float = 0.0  # wall-clock time the forward pass started
    forward_s: float = 0.0  # the whole forward pass that computed it (a group's, grouped)

    def to_json(self, written_at: float | None = None) -> bytes:
        """The notice as JSON, stamped ``written_at`` when given."""
        fields = self.__dict__
        if written_at is not None:
            fields = {**fields, "written_at": written_at}
        return orjson.dumps(fields)  # flat fields


@dataclass(frozen=True)
class BatchRegistration:
    """What a collector needs to finish a batch, sent to its inbox before the tasks."""

    batch: str
    codec: str  # codec name
    codec_params: dict[str, Any]
    k: int
    n: int
    s: int
    wait_for: int  # decode as soon as this many results are in
    deadline: float  # wall-clock seconds since the epoch
    model: str
    submitted_at: float
    reply_key: str
    input_key: str
    output_key: str
    ttl: float
    reference_key: str = ""
    slowed: list[dict[str, Any]] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    encode_s: float = 0.0
    reference: bool = False  # also computed uncoded (tasks n..n+k-1), to measure fidelity
    model_version: int | None = None  # a repository model's version (None: a zoo model)
    output_shape: list[int] = field(default_factory=list)  # one result's shape, if known
    wait: str = "results"  # "own": also finish once every row's own result is in
    late_after: float = 1.0  # "own": a missing own result is late after this fraction of the
    # time the batch took to get wait_for results (coordinator/open_batch.py)
    requests: list[str] = field(default_factory=list)  # the ids of the requests it serves
    kind: str = "batch"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()


def parse_inbox_message(raw: bytes) -> Notice | BatchRegistration:
    """Decode one inbox entry; raises :class:`ProtocolError` on anything malformed."""
    data = _loads(raw, "inbox message")
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "result":
        return _from_mapping(Notice, data, "notice")
    if kind == "batch":
        return _from_mapping(BatchRegistration, data, "batch registration")
    raise ProtocolError(f"inbox message of unknown kind {kind!r}")


_HEADER = struct.Struct(">I")


def pack_frame(header: dict[str, Any], payload: bytes = b"") -> bytes:
    """``4-byte length + JSON header + raw payload``: a reply in one Redis value."""
    head = json.dumps(header, separators=(",", ":")).encode()
    return _HEADER.pack(len(head)) + head + payload


def unpack_frame(frame: bytes) -> tuple[dict[str, Any], bytes]:
    if len(frame) < _HEADER.size:
        raise ProtocolError("reply frame is truncated")
    (size,) = _HEADER.unpack_from(frame)
    header = _loads(frame[_HEADER.size : _HEADER.size + size], "reply header")
    if not isinstance(header, dict):
        raise ProtocolError("reply header must be a JSON object")
    return header, frame[_HEADER.size + size :]


def as_bytes(value: bytes | str) -> bytes:
    """Redis replies typed ``bytes | str``: the farm's clients never decode responses."""
    return value if isinstance(value, bytes) else value.encode()


def array_from_bytes(
    data: bytes | str, dtype: str, shape: list[int] | tuple[int, ...]
) -> npt.NDArray[Any]:
    """Raw bytes -> array, checking the byte count against ``shape`` and ``dtype``."""
    if dtype not in ALLOWED_DTYPES:
        raise ProtocolError(f"dtype {dtype!r} not in {ALLOWED_DTYPES}")
    expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    data = as_bytes(data)
    if len(data) != expected:
        raise ProtocolError(
            f"{len(data)} bytes cannot hold shape {tuple(shape)} of {dtype} ({expected} bytes)"
        )
    return np.frombuffer(data, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape)
