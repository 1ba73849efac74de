"""The collector: waits on Redis for completion notices and decodes at N−S or the deadline.

One loop serves both the long-running ``codedfarm collector`` service and the in-process
collector of ``codedfarm submit``: it blocks on its inbox list (BLPOP), keeps a small
state per open batch, and when a batch's wait policy is met fetches the needed outputs
with one HMGET, decodes, and pushes the reply in one pipeline. Late, duplicate and
corrupt results are dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import redis

from codedfarm.codecs import Codec, CodecPlan
from codedfarm.coordinator.fidelity import FidelitySampler
from codedfarm.coordinator.inbox import InboxReader
from codedfarm.coordinator.liveness import queue_depths
from codedfarm.coordinator.record_relay import RecordDrain, RecordRelay
from codedfarm.errors import CodecError, NotEnoughResultsError, ProtocolError
from codedfarm.monitoring.hooks import CollectorHooks
from codedfarm.protocol import (
    BatchRecord,
    BatchRegistration,
    CriticalStamps,
    Notice,
    StageTimings,
    array_from_bytes,
    parse_inbox_message,
    reply_frame,
)

__all__ = ["Collector", "CollectorHooks"]

log = logging.getLogger(__name__)

FINISHED_MEMORY = 100_000  # batch ids remembered after finishing, to count late results
MAX_BLOCK_S = 1.0  # longest single BLPOP
MAX_REPLIES = 1000  # in-process answers kept for their waiter


@dataclass
class _Open:
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


class Collector:
    """Decodes batches registered in inbox ``inbox`` (a Redis list key)."""

    def __init__(
        self,
        client: redis.Redis,
        inbox: str,
        *,
        hooks: CollectorHooks | None = None,
        clock: Callable[[], float] = time.time,
        reply_in_memory: bool = False,
        durable_key: str | None = None,
        relay: RecordRelay | None = None,
        records_key: str | None = None,
    ) -> None:
        self.redis = client
        self.relay = relay  # in-process: relay what it finishes to the service (record_relay)
        self.inbox = inbox
        self.durable_key = durable_key  # the service's hash of open batches (see recovery.py)
        self.hooks = hooks or relay or CollectorHooks()
        self.clock = clock
        self._open: dict[str, _Open] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()
        self.dropped: dict[str, int] = {"late": 0, "duplicate": 0, "corrupt": 0, "unknown": 0}
        self.records: OrderedDict[str, BatchRecord] = OrderedDict()  # recent, bounded
        # in-process use: hand predictions to the caller instead of a reply key in Redis
        self.reply_in_memory = reply_in_memory
        self._replies: OrderedDict[str, tuple[BatchRecord, np.ndarray | None]] = OrderedDict()
        # housekeeping of finished batches, done at the next poll instead of on the hot path
        self._cleanup: list[str] = []  # inputs and outputs to delete
        self._fidelity = FidelitySampler(client, self.hooks.fidelity, self._cleanup.extend)
        self._queues: set[str] = set()
        self._next_depth_check = 0.0
        self.depth_interval = 2.0  # seconds between queue-depth reads
        self._ready: dict[str, bool] = {}  # batches whose wait policy is met -> at deadline?
        self._woke_at = 0.0  # when the current poll's messages were taken
        self._inbox = InboxReader(client, inbox)
        self._drain = RecordDrain(client, records_key, self.hooks) if records_key else None

    # ----- the loop ----------------------------------------------------------------------
    def poll(self, timeout: float) -> list[BatchRecord]:
        """Wait up to ``timeout`` s (less if a deadline comes first); handle what arrived."""
        self.flush_cleanup()
        now = self.clock()
        nearest = min((b.reg.deadline for b in self._open.values()), default=now + timeout)
        # short blocking calls: redis-py's socket timeout (5 s by default) bounds one BLPOP
        wait = max(0.0, min(timeout, nearest - now, MAX_BLOCK_S))
        finished: list[BatchRecord] = []
        raw_messages = self._inbox.take(wait) if wait >= 0.001 else []
        self._woke_at = time.time()  # wall clock, as the workers' stamps
        for raw in raw_messages:
            self._handle(raw)
        finished.extend(self._finish_ready())
        finished.extend(self._expire_deadlines())
        self._fidelity.expire(self.clock())
        self.hooks.open_batches(len(self._open))
        if self._queues and self.clock() >= self._next_depth_check:
            self._next_depth_check = self.clock() + self.depth_interval
            self.hooks.queue_depths(queue_depths(self.redis, self._queues))
        if self._drain is not None:  # the service: in-process clients' batches too
            self._drain.maybe(self.clock())
        return finished

    def serve_forever(self, stop: threading.Event, tick: float = 1.0) -> None:
        """Run until ``stop`` is set (the ``codedfarm collector`` service)."""
        while not stop.is_set():
            try:
                self.poll(tick)
            except redis.ConnectionError as exc:
                log.warning("redis unavailable (%s); retrying", exc)
                stop.wait(0.5)

    def wait_for(self, batch: str, timeout: float) -> tuple[BatchRecord, np.ndarray | None] | None:
        """Run the loop until ``batch`` finishes (the in-process collector, which must be
        built with ``reply_in_memory=True``); returns its record and predictions."""
        end = time.monotonic() + timeout
        while batch not in self._replies and time.monotonic() < end:
            self.poll(end - time.monotonic())
        return self._replies.pop(batch, None)

    # ----- messages ----------------------------------------------------------------------
    def _handle(self, raw: bytes) -> None:
        try:
            message = parse_inbox_message(raw)
        except ProtocolError as exc:
            log.warning("dropping malformed inbox message: %s", exc)
            self._drop("corrupt")
            return
        if isinstance(message, BatchRegistration):
            self._register(message)
        else:
            self._on_notice(message)

    def _finish_ready(self) -> list[BatchRecord]:
        """Decode the batches whose wait policy the messages of this poll met. A batch uses
        every result in by then, which is often more than N−S: workers that answer in groups
        (the batch engine) send several at once, and more results mean a better decode."""
        ready, self._ready = self._ready, {}
        records = []
        for batch_id, at_deadline in ready.items():
            batch = self._open.get(batch_id)
            if batch is not None and (record := self._try_finish(batch, at_deadline=at_deadline)):
                records.append(record)
        return records

    def register(self, reg: BatchRegistration) -> None:
        """Open batch ``reg`` without its registration message (an in-process collector is
        told directly, a round trip less than reading it back from its inbox)."""
        self._register(reg)

    def _register(self, reg: BatchRegistration) -> None:
        if reg.batch in self._open or reg.batch in self._finished:
            return
        try:
            plan = CodecPlan(reg.codec, tuple(sorted(reg.codec_params.items())))
            codec = plan.codec(reg.k, reg.n, reg.s)
        except (CodecError, TypeError) as exc:  # TypeError: unhashable JSON parameters
            self._finish_failed(reg, f"bad codec in registration: {exc}")
            return
        self._open[reg.batch] = _Open(
            reg, codec, self.clock(), out_shape=list(reg.output_shape) or None
        )
        self._queues.update(reg.queues)
        self.hooks.batch_registered(reg)

    def _drop(self, reason: str) -> None:
        self.dropped[reason] += 1
        self.hooks.result_dropped(reason)

    def _on_notice(self, notice: Notice) -> None:
        batch = self._open.get(notice.batch)
        if batch is not None and batch.reg.reference and notice.index >= batch.reg.n:
            if notice.ok and notice.index < batch.reg.n + batch.reg.k:
                batch.references.add(notice.index - batch.reg.n)
            return
        if self._fidelity.on_reference(notice.batch, notice.index, notice.ok):
            return
        if batch is None:
            self._drop("late" if notice.batch in self._finished else "unknown")
            return
        if not 0 <= notice.index < batch.reg.n:
            self._drop("corrupt")
            batch.corrupt += 1
            return
        if notice.index in batch.received or notice.index in batch.errors:
            self._drop("duplicate")
            batch.duplicates += 1
            return
        if not notice.ok:
            batch.errors[notice.index] = notice.error
        elif notice.dtype != "float32" or (
            batch.out_shape is not None and notice.shape != batch.out_shape
        ):
            self._drop("corrupt")
            batch.corrupt += 1
            return
        else:
            batch.out_shape = list(notice.shape)
            batch.received[notice.index] = notice
            if len(batch.received) == batch.reg.wait_for:
                batch.needed_written_at = notice.written_at
                batch.policy_met_at = self.clock()
                batch.critical = (notice, self._woke_at)
        if len(batch.received) >= batch.reg.wait_for:
            self._ready[batch.reg.batch] = False
        elif len(batch.received) + len(batch.errors) >= batch.reg.n or self._hopeless(batch):
            # nobody else will answer, or too many failed to ever decode: decode like at the
            # deadline if it can, else fail now with the workers' reason (not a timeout)
            self._ready[batch.reg.batch] = True

    def _expire_deadlines(self) -> list[BatchRecord]:
        now = self.clock()
        due = [b for b in self._open.values() if b.reg.deadline <= now]
        records = []
        for batch in due:
            record = self._try_finish(batch, at_deadline=True)
            if record is None:  # still not decodable: give up
                record = self._finish(batch, "timeout", None, None, None)
            records.append(record)
        return records

    # ----- decoding ----------------------------------------------------------------------
    def _fetch(self, batch: _Open) -> tuple[list[int], np.ndarray] | None:
        indices = sorted(batch.received)
        raw = self.redis.hmget(batch.reg.output_key, [str(i) for i in indices])
        good: list[int] = []
        arrays: list[np.ndarray] = []
        assert batch.out_shape is not None
        for index, data in zip(indices, raw, strict=True):
            try:
                if data is None:
                    raise ProtocolError("output bytes missing")
                arrays.append(array_from_bytes(data, "float32", batch.out_shape))
                good.append(index)
            except ProtocolError as exc:
                log.warning("batch %s result %d dropped: %s", batch.reg.batch, index, exc)
                del batch.received[index]
                batch.corrupt += 1
                self._drop("corrupt")
        if not good:
            return None
        return good, np.stack(arrays)

    @staticmethod
    def _hopeless(batch: _Open) -> bool:
        """True when so many tasks failed that the results still possible cannot decode."""
        return batch.reg.n - len(batch.errors) < batch.codec.min_results

    def _try_finish(self, batch: _Open, *, at_deadline: bool) -> BatchRecord | None:
        if len(batch.received) < batch.codec.min_results:
            answered = len(batch.received) + len(batch.errors) >= batch.reg.n
            if at_deadline and (answered or self._hopeless(batch)):
                return self._finish(
                    batch, "failed", None, None, None, error=self._error_summary(batch)
                )
            return None
        fetched = self._fetch(batch)
        if fetched is None or (not at_deadline and len(fetched[0]) < batch.reg.wait_for):
            return None
        workers, y = fetched
        start = time.perf_counter()
        try:
            decoded = batch.codec.decode_report(y, workers)
        except NotEnoughResultsError:
            return None  # e.g. replication without a copy of every input yet: keep waiting
        except Exception as exc:  # bad results, or a codec's bug: the batch fails, not the loop
            error = str(exc) if isinstance(exc, CodecError) else f"decode failed: {exc!r}"
            if isinstance(exc, CodecError):
                self._drop("corrupt")
            else:
                log.exception("batch %s: %s", batch.reg.batch, error)
            return self._finish(batch, "failed", None, None, None, error=error)
        decode_s = time.perf_counter() - start
        outcome = "deadline_decoded" if at_deadline and batch.policy_met_at is None else "decoded"
        predictions = np.asarray(decoded.values, np.float32)
        rejected = [{"index": i, "worker": batch.received[i].worker} for i in decoded.rejected]
        return self._finish(batch, outcome, predictions, list(decoded.workers), decode_s,
                            lam=decoded.lam_dec, rejected=rejected)  # fmt: skip

    @staticmethod
    def _error_summary(batch: _Open) -> str:
        first = next(iter(batch.errors.values()), None)
        return "" if first is None else f"{len(batch.errors)} worker(s) failed, e.g.: {first}"

    def _finish(
        self,
        batch: _Open,
        outcome: str,
        predictions: np.ndarray | None,
        workers: list[int] | None,
        decode_s: float | None,
        error: str = "",
        lam: float | None = None,
        rejected: list[dict[str, object]] | None = None,
    ) -> BatchRecord:
        reg = batch.reg
        now = self.clock()
        met = batch.policy_met_at if batch.policy_met_at is not None else now
        registered = batch.registered_at
        record = BatchRecord(
            batch=reg.batch,
            model=reg.model,
            codec=batch.codec.spec,
            k=reg.k,
            n=reg.n,
            s=reg.s,
            wait_for=reg.wait_for,
            outcome=outcome,
            workers_used=workers or [],
            results_received=len(batch.received),
            worker_errors=len(batch.errors),
            duplicates=batch.duplicates,
            corrupt=batch.corrupt,
            slowed=reg.slowed,
            queues=reg.queues,
            lam_dec=lam if predictions is not None else None,
            rejected=rejected or [],
            error=error or ("" if predictions is not None else self._error_summary(batch)),
            timings=StageTimings(
                encode=reg.encode_s,
                dispatch=max(0.0, registered - reg.submitted_at),  # as the collector sees it
                wait=max(0.0, met - reg.submitted_at),
                decode=decode_s or 0.0,
            ),
            needed_written_at=batch.needed_written_at if outcome == "decoded" else None,
            model_version=reg.model_version,
            critical=(
                CriticalStamps.of(*batch.critical, finished_at=time.time())
                if outcome == "decoded" and batch.critical is not None
                else None
            ),
        )
        # inputs and outputs are deleted (late workers then skip; late outputs expire) after
        # the reply, at the next poll: the client should not wait for housekeeping
        self._cleanup.append(reg.input_key)
        if reg.reference and predictions is not None:
            self._fidelity.add(reg, reg.codec, predictions, batch.references, now + reg.ttl)
        else:
            self._cleanup += [reg.output_key, *([reg.reference_key] if reg.reference else [])]
        self._deliver(reg, record, predictions)
        self._open.pop(reg.batch, None)
        self._remember(reg.batch, record)
        self.hooks.batch_finished(record)
        return record

    def _deliver(
        self, reg: BatchRegistration, record: BatchRecord, predictions: np.ndarray | None
    ) -> None:
        """Answer the client: in memory (in-process: nothing is written to Redis, and answers
        nobody waits for any more are dropped beyond ``MAX_REPLIES``) or under the batch's
        reply key (collector service)."""
        if self.reply_in_memory:
            self._replies[reg.batch] = (record, predictions)
            while len(self._replies) > MAX_REPLIES:
                self._replies.popitem(last=False)
            return
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.rpush(reg.reply_key, reply_frame(record, predictions))
            pipe.expire(reg.reply_key, max(1, int(reg.ttl)))
            if self.durable_key is not None:
                pipe.hdel(self.durable_key, reg.batch)
            pipe.execute()

    def _finish_failed(self, reg: BatchRegistration, error: str) -> None:
        record = BatchRecord(
            batch=reg.batch,
            model=reg.model,
            codec=reg.codec,
            k=reg.k,
            n=reg.n,
            s=reg.s,
            wait_for=reg.wait_for,
            outcome="failed",
            error=error,
            model_version=reg.model_version,
        )
        self._cleanup.append(reg.input_key)
        self._deliver(reg, record, None)
        self._remember(reg.batch, record)
        self.hooks.batch_finished(record)

    def _remember(self, batch: str, record: BatchRecord) -> None:
        self._finished[batch] = self.clock()
        self.records[batch] = record
        while len(self._finished) > FINISHED_MEMORY:
            self._finished.popitem(last=False)
        while len(self.records) > 1000:
            self.records.popitem(last=False)

    def adopt(self, reg: BatchRegistration, results: list[int]) -> None:
        """Take over an open batch another collector process left (see recovery.py), with
        the results already stored for it (their notices went with that process)."""
        self._register(reg)
        batch = self._open.get(reg.batch)
        if batch is None or not reg.output_shape:
            return
        now = self.clock()
        for index in results:
            if 0 <= index < reg.n and index not in batch.received:
                batch.received[index] = Notice(reg.batch, index, True, "float32",
                                               list(reg.output_shape), written_at=now)  # fmt: skip
        batch.out_shape = list(reg.output_shape)
        if len(batch.received) >= reg.wait_for:
            batch.policy_met_at = now
            self._ready[reg.batch] = False

    def answered(self, batch: str) -> set[int] | None:
        """Coded indices of an open batch that answered (result or error); None: not open."""
        state = self._open.get(batch)
        return None if state is None else set(state.received) | set(state.errors)

    def flush_cleanup(self) -> None:
        """Delete finished batches' inputs and outputs, and relay their records: one call."""
        if not self._cleanup and not (self.relay and self.relay.pending):
            return
        keys, self._cleanup[:] = list(self._cleanup), []
        with self.redis.pipeline(transaction=False) as pipe:
            if keys:
                pipe.delete(*keys)
            if self.relay is not None:
                self.relay.flush_into(pipe)
            pipe.execute()

    @property
    def open_batches(self) -> int:
        return len(self._open)
