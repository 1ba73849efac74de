"""The record a client gets for each batch (it travels in the collector's reply): who
answered, how long each stage took."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

__all__ = ["OUTCOMES", "BatchRecord", "StageTimings"]

OUTCOMES = ("decoded", "deadline_decoded", "timeout", "failed")
"""decoded: the wait policy was met. deadline_decoded: decoded from what had arrived when
the deadline passed (or when every worker had answered without meeting the policy).
timeout: too few results to decode by the deadline. failed: the batch could not be
decoded for another reason (see ``error``)."""


@dataclass(frozen=True)
class StageTimings:
    """Seconds spent in each stage; ``overhead`` is end-to-end minus the moment the
    result that met the wait policy was written (None when no such result)."""

    encode: float = 0.0
    dispatch: float = 0.0
    wait: float = 0.0
    decode: float = 0.0
    end_to_end: float = 0.0
    overhead: float | None = None


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
        return cls(**values)

    def with_client_timings(
        self,
        *,
        encode: float,
        dispatch: float,
        end_to_end: float,
        reply_at: float,
        tasks_sent: int = 0,
    ) -> BatchRecord:
        """Fill in the stages only the client sees."""
        overhead = None if self.needed_written_at is None else reply_at - self.needed_written_at
        timings = StageTimings(
            encode=encode,
            dispatch=dispatch,
            wait=self.timings.wait,
            decode=self.timings.decode,
            end_to_end=end_to_end,
            overhead=overhead,
        )
        return replace(self, timings=timings, tasks_sent=tasks_sent, retries=self.retries)
