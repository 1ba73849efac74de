"""The record a client gets for each batch (it travels in the collector's reply): who
answered, how long each stage took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import numpy as np

from codedfarm.protocol.messages import Notice, array_from_bytes, pack_frame, unpack_frame

__all__ = [
    "OUTCOMES",
    "TIMELINE_STAGES",
    "BatchRecord",
    "CriticalStamps",
    "StageTimings",
    "read_reply_frame",
    "reply_frame",
]

OUTCOMES = ("decoded", "deadline_decoded", "timeout", "failed")
"""decoded: the wait policy was met. deadline_decoded: decoded from what had arrived when
the deadline passed (or when every worker had answered without meeting the policy).
timeout: too few results to decode by the deadline. failed: the batch could not be
decoded for another reason (see ``error``)."""


TIMELINE_STAGES = (
    "encode",
    "dispatch",
    "queue_wait",
    "receive_to_start",
    "injected_delay",
    "compute",
    "report",
    "collector_wake",
    "collect",
    "decode",
    "reply",
)
"""The stages of a batch's critical path, in order; they add up to ``end_to_end``."""


@dataclass(frozen=True)
class CriticalStamps:
    """Stamps of the result that met the wait policy (the batch's critical path), as the
    collector saw them: wall-clock seconds since the epoch, durations in seconds."""

    received_at: float  # the worker took the task off its queue
    started_at: float  # its forward pass started
    compute_s: float  # the forward pass that computed it (a whole group's, if grouped)
    delay_s: float  # injected straggler delay (simulated compute in experiments)
    written_at: float  # the worker's report call
    woke_at: float  # the collector took the notice off its inbox
    finished_at: float  # the collector had decoded and built the record

    @classmethod
    def of(cls, notice: Notice, woke_at: float, *, finished_at: float) -> CriticalStamps | None:
        """The stamps of ``notice`` (None from workers that send no receipt stamps)."""
        if not notice.received_at:
            return None
        return cls(
            received_at=notice.received_at,
            started_at=notice.started_at,
            compute_s=notice.forward_s or notice.compute_s,
            delay_s=notice.delay_s,
            written_at=notice.written_at,
            woke_at=woke_at,
            finished_at=finished_at,
        )


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage; ``overhead`` is end-to-end minus the moment the
    result that met the wait policy was written (None when no such result).

    The critical-path stages (None when the batch was not decoded at its wait policy; see
    :data:`TIMELINE_STAGES`): ``queue_wait`` dispatched -> a worker took the task;
    ``receive_to_start`` taken -> forward pass started, less the injected delay (the
    engine's own latency: timers, input reads, grouping); ``injected_delay``; ``compute``;
    ``report`` forward pass done -> the worker's report call; ``collector_wake`` report call
    -> the collector took the notice (Redis and the wake-up); ``collect`` the collector's
    work on the batch other than ``decode`` (the other notices of its poll, reading the
    outputs, the record); ``reply`` -> the client has the predictions. Worker stages
    come from wall clocks: across machines, clock skew shows in ``queue_wait`` and
    ``collector_wake``.
    """

    encode: float = 0.0
    dispatch: float = 0.0
    wait: float = 0.0
    decode: float = 0.0
    end_to_end: float = 0.0
    overhead: float | None = None
    queue_wait: float | None = None
    receive_to_start: float | None = None
    injected_delay: float | None = None
    compute: float | None = None
    report: float | None = None
    collector_wake: float | None = None
    collect: float | None = None
    reply: float | None = None

    def timeline(self) -> dict[str, float] | None:
        """The critical path, stage -> seconds (None when it is not known)."""
        values = {name: getattr(self, name) for name in TIMELINE_STAGES}
        if any(v is None for v in values.values()):
            return None
        return values


@dataclass(frozen=True)
class BatchRecord:
    batch: str
    model: str
    codec: str
    k: int
    n: int
    s: int
    wait_for: int
    outcome: str
    workers_used: list[int] = field(default_factory=list)
    results_received: int = 0
    worker_errors: int = 0
    duplicates: int = 0
    corrupt: int = 0
    slowed: list[dict[str, Any]] = field(default_factory=list)
    queues: list[str] = field(default_factory=list)
    lam_dec: float | None = None
    tasks_sent: int = 0  # coded tasks dispatched, hedged copies included (client side)
    error: str = ""
    timings: StageTimings = field(default_factory=StageTimings)
    needed_written_at: float | None = None  # wall time the policy-meeting result was written
    model_version: int | None = None  # a repository model's version (None: a zoo model)
    retries: int = 0  # times the client sent the batch again after losing Redis
    critical: CriticalStamps | None = None  # the policy-meeting result's stamps
    rejected: list[dict[str, Any]] = field(default_factory=list)  # {index, worker}: results
    # a byzantine decode judged wrong and left out
    rows_own: list[int] = field(default_factory=list)  # rows answered with their own result
    rows_decoded: list[int] = field(default_factory=list)  # rows reconstructed by the decoder
    wait: str = "results"  # the wait policy: "own" (finish once every row is own) or "results"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BatchRecord:
        """The record from its JSON form; fields this version does not know are ignored, so
        clients and collectors of neighbouring versions understand each other."""
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in names}
        timing_names = {f.name for f in fields(StageTimings)}
        timings = values.get("timings") or {}
        values["timings"] = StageTimings(**{k: v for k, v in timings.items() if k in timing_names})
        critical = values.get("critical")
        stamp_names = {f.name for f in fields(CriticalStamps)}
        values["critical"] = (
            CriticalStamps(**{k: critical[k] for k in stamp_names})
            if isinstance(critical, dict) and stamp_names <= critical.keys()
            else None
        )
        return cls(**values)

    def with_client_timings(
        self,
        *,
        encode: float,
        dispatch: float,
        end_to_end: float,
        reply_at: float,
        tasks_sent: int = 0,
        dispatched_at: float | None = None,
    ) -> BatchRecord:
        """Fill in the stages only the client sees, and the critical path from the stamps
        (``reply_at`` and ``dispatched_at``: wall-clock seconds)."""
        overhead = None if self.needed_written_at is None else reply_at - self.needed_written_at
        path: dict[str, float] = {}
        c = self.critical
        if c is not None and dispatched_at is not None and self.needed_written_at is not None:
            path = {
                "queue_wait": c.received_at - dispatched_at,
                "receive_to_start": c.started_at - c.received_at - c.delay_s,
                "injected_delay": c.delay_s,
                "compute": c.compute_s,
                "report": c.written_at - c.started_at - c.compute_s,
                "collector_wake": c.woke_at - c.written_at,
                "collect": c.finished_at - c.woke_at - self.timings.decode,
                "reply": reply_at - c.finished_at,
            }
        timings = StageTimings(
            encode=encode,
            dispatch=dispatch,
            wait=self.timings.wait,
            decode=self.timings.decode,
            end_to_end=end_to_end,
            overhead=overhead,
            **path,
        )
        return replace(self, timings=timings, tasks_sent=tasks_sent, retries=self.retries)


def reply_frame(record: BatchRecord, predictions: np.ndarray | None) -> bytes:
    """A collector service's answer: the record as JSON, the predictions as float32 bytes."""
    header: dict[str, Any] = {"record": record.to_dict()}
    payload = b""
    if predictions is not None:
        header["dtype"] = "float32"
        header["shape"] = list(predictions.shape)
        payload = predictions.astype("<f4", copy=False).tobytes()
    return pack_frame(header, payload)


def read_reply_frame(raw: bytes) -> tuple[BatchRecord, np.ndarray | None]:
    """The record and predictions of :func:`reply_frame` (the predictions are a copy)."""
    header, payload = unpack_frame(raw)
    predictions = None
    if "shape" in header:
        predictions = array_from_bytes(payload, header["dtype"], header["shape"]).copy()
    return BatchRecord.from_dict(header["record"]), predictions
