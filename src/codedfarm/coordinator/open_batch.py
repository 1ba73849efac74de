"""One open batch as the collector sees it: what is in, when its wait policy is met, and
the rows that can be answered from their own results before anything is decoded.

Wait policies (the registration's ``wait``):

- ``results``: decode as soon as ``wait_for`` results are in (N−S), or at the deadline.
- ``own`` (the default): also finish as soon as every row's *own* result is in, with no
  decode at all. A row's own result is the result of a task that computed that row
  unchanged (:attr:`~codedfarm.codecs.Codec.own_tasks`: a systematic code's first ``k``
  tasks, uncoded, a replica); it is the model's own prediction, exactly. A row whose own
  task is *late* is decoded once ``wait_for`` results are in. Late: not in within the
  registration's ``late_after`` (``CODEDFARM_LATE_AFTER``) times the time the batch took
  to get ``wait_for`` results (an own result a little behind a parity result, as when the
  workers' queues differ in length, is no straggler, and waiting for it keeps the row
  exact; a 10x straggler is decoded after (1 + late_after)x the batch's time instead).
  Exact codes (``mds``) decode at once: their decode is exact. Rows whose own results are
  in may be handed out before the batch finishes (:attr:`OpenBatch.on_rows`: the server
  answers each request as soon as its rows are).

Codes without own tasks (non-systematic approximate codes, ``byzantine`` decodes, which
must check every result first) behave under ``own`` exactly as under ``results``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import redis

from codedfarm.codecs import Codec
from codedfarm.errors import ProtocolError
from codedfarm.protocol import (
    BatchRecord,
    BatchRegistration,
    CriticalStamps,
    Notice,
    StageTimings,
    array_from_bytes,
)

__all__ = ["WAIT_POLICIES", "OpenBatch", "RowsCallback"]

log = logging.getLogger(__name__)

WAIT_POLICIES = ("own", "results")

MIN_LATE_S = 0.002  # the least wait for a missing own result, seconds

RowsCallback = Callable[[list[int], np.ndarray], None]
"""Receives rows answered early: their indexes in ``[0, k)`` and their predictions
``(len(rows), *out_shape)`` float32 (each the row's own result, exactly)."""


@dataclass
class OpenBatch:
    """A registered batch whose answer is not given yet."""

    reg: BatchRegistration
    codec: Codec
    registered_at: float
    received: dict[int, Notice] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    duplicates: int = 0
    corrupt: int = 0
    out_shape: list[int] | None = None
    needed_written_at: float | None = None
    policy_met_at: float | None = None
    critical: tuple[Notice, float] | None = None  # the policy-meeting notice, when taken
    references: set[int] = field(default_factory=set)  # reference (uncoded) results in
    own_in: dict[int, int] = field(default_factory=dict)  # row -> task of its own result
    on_rows: RowsCallback | None = None  # early rows' receiver (in-process)
    rows_told: set[int] = field(default_factory=set)  # rows handed to on_rows already
    decode_at: float | None = None  # when missing own rows count as late (collector clock)
    late_tried: bool = False  # the collector tried to decode at decode_at already

    @property
    def early(self) -> bool:
        """True when the batch may finish from its rows' own results (``wait="own"``)."""
        return self.reg.wait == "own" and any(r is not None for r in self.codec.own_tasks)

    @property
    def every_row_own(self) -> bool:
        return len(self.own_in) == self.reg.k

    def policy_met(self, now: float) -> bool:
        """True once the batch may be answered before its deadline (``now``: the collector's
        clock): every row is its own result, or ``wait_for`` results are in and the missing
        own results are late."""
        if self.early and self.every_row_own:
            return True
        if len(self.received) < self.reg.wait_for:
            return False
        return self.decode_at is None or self.decode_at <= now

    def accept(self, notice: Notice, woke_at: float, now: float) -> str | None:
        """Take a notice for task ``notice.index``; returns why it was dropped, or None."""
        if not 0 <= notice.index < self.reg.n:
            self.corrupt += 1
            return "corrupt"
        if notice.index in self.received or notice.index in self.errors:
            self.duplicates += 1
            return "duplicate"
        if not notice.ok:
            self.errors[notice.index] = notice.error
            return None
        if notice.dtype != "float32" or (
            self.out_shape is not None and notice.shape != self.out_shape
        ):
            self.corrupt += 1
            return "corrupt"
        self.out_shape = list(notice.shape)
        self.received[notice.index] = notice
        row = self.codec.own_tasks[notice.index]
        if row is not None:
            self.own_in.setdefault(row, notice.index)
        if (
            self.decode_at is None
            and self.early
            and not self.codec.exact
            and len(self.received) >= self.reg.wait_for
            and not self.every_row_own
        ):
            # enough to decode, but an own result is missing: give it a moment (late_after)
            took = max(0.0, now - self.reg.submitted_at)
            self.decode_at = now + max(MIN_LATE_S, self.reg.late_after * took)  # fmt: skip
        if self.policy_met_at is None and self.policy_met(now):
            self.needed_written_at = notice.written_at
            self.policy_met_at = now
            self.critical = (notice, woke_at)
        return None

    def hopeless(self) -> bool:
        """True when so many tasks failed that the results still possible cannot decode."""
        return self.reg.n - len(self.errors) < self.codec.min_results

    def all_answered(self) -> bool:
        return len(self.received) + len(self.errors) >= self.reg.n

    def forget(self, index: int) -> None:
        """Result ``index`` turned out unusable (its bytes are missing or corrupt)."""
        self.received.pop(index, None)
        self.own_in = {r: t for r, t in self.own_in.items() if t != index}
        self.corrupt += 1

    def fetch(
        self, client: redis.Redis, indices: list[int]
    ) -> tuple[list[int], np.ndarray | None, int]:
        """The results of ``indices`` from the batch's output hash (one HMGET): the indices
        that were usable, their arrays stacked, and how many were corrupt (forgotten)."""
        raw = client.hmget(self.reg.output_key, [str(i) for i in indices])
        good: list[int] = []
        arrays: list[np.ndarray] = []
        assert self.out_shape is not None
        bad = 0
        for index, data in zip(indices, raw, strict=True):
            try:
                if data is None:
                    raise ProtocolError("output bytes missing")
                arrays.append(array_from_bytes(data, "float32", self.out_shape))
                good.append(index)
            except ProtocolError as exc:
                log.warning("batch %s result %d dropped: %s", self.reg.batch, index, exc)
                self.forget(index)
                bad += 1
        return good, (np.stack(arrays) if arrays else None), bad

    def take_new_rows(self) -> list[tuple[int, int]]:
        """``(row, task)`` of own results in but not yet handed to ``on_rows``."""
        new = [(r, t) for r, t in sorted(self.own_in.items()) if r not in self.rows_told]
        self.rows_told.update(r for r, _ in new)
        return new

    def error_summary(self) -> str:
        first = next(iter(self.errors.values()), None)
        return "" if first is None else f"{len(self.errors)} worker(s) failed, e.g.: {first}"

    def record(
        self,
        outcome: str,
        now: float,
        *,
        predictions: np.ndarray | None = None,
        workers: list[int] | None = None,
        decode_s: float | None = None,
        error: str = "",
        lam: float | None = None,
        rejected: list[dict[str, object]] | None = None,
        rows_own: list[int] | None = None,
    ) -> BatchRecord:
        """The batch's record as it finishes with ``outcome`` at ``now`` (collector clock)."""
        reg = self.reg
        met = self.policy_met_at if self.policy_met_at is not None else now
        decoded = outcome in ("decoded", "deadline_decoded") and predictions is not None
        own = sorted(rows_own or []) if decoded else []
        return BatchRecord(
            batch=reg.batch,
            model=reg.model,
            codec=self.codec.spec,
            k=reg.k,
            n=reg.n,
            s=reg.s,
            wait_for=reg.wait_for,
            outcome=outcome,
            workers_used=workers or [],
            results_received=len(self.received),
            worker_errors=len(self.errors),
            duplicates=self.duplicates,
            corrupt=self.corrupt,
            slowed=reg.slowed,
            queues=reg.queues,
            lam_dec=lam if predictions is not None else None,
            rejected=rejected or [],
            error=error or ("" if predictions is not None else self.error_summary()),
            timings=StageTimings(
                encode=reg.encode_s,
                dispatch=max(0.0, self.registered_at - reg.submitted_at),  # collector's view
                wait=max(0.0, met - reg.submitted_at),
                decode=decode_s or 0.0,
            ),
            needed_written_at=self.needed_written_at if outcome == "decoded" else None,
            model_version=reg.model_version,
            critical=(
                CriticalStamps.of(*self.critical, finished_at=time.time())
                if outcome == "decoded" and self.critical is not None
                else None
            ),
            rows_own=own,
            rows_decoded=sorted(set(range(reg.k)) - set(own)) if decoded else [],
            wait=reg.wait,
        )
