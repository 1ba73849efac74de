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
from typing import Any

import numpy as np
import redis

from codedfarm.codecs import CodecPlan
from codedfarm.coordinator.fidelity import FidelitySampler
from codedfarm.coordinator.inbox import InboxReader
from codedfarm.coordinator.liveness import queue_depths
from codedfarm.coordinator.open_batch import WAIT_POLICIES, OpenBatch, RowsCallback
from codedfarm.coordinator.record_relay import RecordDrain, RecordRelay
from codedfarm.errors import CodecError, NotEnoughResultsError, ProtocolError
from codedfarm.logs import trace
from codedfarm.monitoring.hooks import CollectorHooks
from codedfarm.protocol import (
    BatchRecord,
    BatchRegistration,
    Notice,
    parse_inbox_message,
    reply_frame,
)

__all__ = ["Collector", "CollectorHooks"]

log = logging.getLogger(__name__)

FINISHED_MEMORY = 100_000  # batch ids remembered after finishing, to count late results
MAX_BLOCK_S = 1.0  # longest single BLPOP
MAX_REPLIES = 1000  # in-process answers kept for their waiter


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
        self._open: dict[str, OpenBatch] = {}
        self._finished: OrderedDict[str, float] = OrderedDict()
        self.dropped: dict[str, int] = {"late": 0, "duplicate": 0, "corrupt": 0, "unknown": 0}
        self.records: OrderedDict[str, BatchRecord] = OrderedDict()  # recent, bounded
        # in-process use: hand predictions to the caller instead of a reply key in Redis
        self.reply_in_memory = reply_in_memory
        self._replies: OrderedDict[str, tuple[BatchRecord, np.ndarray | None]] = OrderedDict()
        # housekeeping of finished batches, done at the next poll instead of on the hot path
        self._cleanup: list[str] = []  # inputs and outputs to delete
        self._fidelity = FidelitySampler(client, self.hooks.fidelity, self._cleanup.extend,
                                         self.hooks.decoded_fidelity)  # fmt: skip
        self._queues: set[str] = set()
        self._next_depth_check = 0.0
        self.depth_interval = 2.0  # seconds between queue-depth reads
        self._ready: dict[str, bool] = {}  # batches whose wait policy is met -> at deadline?
        self._early_rows: set[str] = set()  # open batches with own results to hand out
        self._woke_at = 0.0  # when the current poll's messages were taken
        self._inbox = InboxReader(client, inbox)
        self._drain = RecordDrain(client, records_key, self.hooks) if records_key else None

    # ----- the loop ----------------------------------------------------------------------
    def poll(self, timeout: float) -> list[BatchRecord]:
        """Wait up to ``timeout`` s (less if a deadline comes first); handle what arrived."""
        self.flush_cleanup()
        now = self.clock()
        nearest = min((b.reg.deadline if b.late_tried or b.decode_at is None
                       else min(b.decode_at, b.reg.deadline)
                       for b in self._open.values()), default=now + timeout)  # fmt: skip
        # short blocking calls: redis-py's socket timeout (5 s by default) bounds one BLPOP
        wait = max(0.0, min(timeout, nearest - now, MAX_BLOCK_S))
        finished: list[BatchRecord] = []
        raw_messages = self._inbox.take(wait) if wait >= 0.001 else []
        self._woke_at = time.time()  # wall clock, as the workers' stamps
        for raw in raw_messages:
            self._handle(raw)
        finished.extend(self._finish_ready())
        if self._early_rows:
            self._tell_early_rows()
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

    def wait_for(
        self, batch: str, timeout: float, on_rows: RowsCallback | None = None
    ) -> tuple[BatchRecord, np.ndarray | None] | None:
        """Run the loop until ``batch`` finishes (the in-process collector, which must be
        built with ``reply_in_memory=True``); returns its record and predictions.
        ``on_rows`` receives rows answered early (``wait="own"``), from this thread."""
        end = time.monotonic() + timeout
        state = self._open.get(batch)
        if state is not None and on_rows is not None:
            state.on_rows = on_rows
            if state.own_in and state.early:
                self._early_rows.add(batch)
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
            if reg.wait not in WAIT_POLICIES:
                raise CodecError(f"wait must be one of {WAIT_POLICIES}, got {reg.wait!r}")
            plan = CodecPlan(reg.codec, tuple(sorted(reg.codec_params.items())))
            codec = plan.codec(reg.k, reg.n, reg.s)
        except (CodecError, TypeError) as exc:  # TypeError: unhashable JSON parameters
            self._finish_failed(reg, f"bad codec in registration: {exc}")
            return
        self._open[reg.batch] = OpenBatch(
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
        dropped = batch.accept(notice, self._woke_at, self.clock())
        if dropped is not None:
            self._drop(dropped)
            return
        if batch.policy_met(self.clock()):
            self._ready[batch.reg.batch] = False
        elif batch.all_answered() or batch.hopeless():
            # nobody else will answer, or too many failed to ever decode: decode like at the
            # deadline if it can, else fail now with the workers' reason (not a timeout)
            self._ready[batch.reg.batch] = True
        if batch.on_rows is not None and batch.early:
            self._early_rows.add(batch.reg.batch)  # told after this poll's finished batches

    def _expire_deadlines(self) -> list[BatchRecord]:
        now = self.clock()
        late = [b for b in self._open.values() if not b.late_tried
                and b.decode_at is not None and b.decode_at <= now < b.reg.deadline]  # fmt: skip
        records = []
        for batch in late:  # missing own results are late now: decode their rows
            batch.late_tried = True
            if record := self._try_finish(batch, at_deadline=False):
                records.append(record)
        due = [b for b in self._open.values() if b.reg.deadline <= now]
        for batch in due:
            record = self._try_finish(batch, at_deadline=True)
            if record is None:  # still not decodable: give up
                record = self._finish(batch, "timeout")
            records.append(record)
        return records

    # ----- decoding ----------------------------------------------------------------------
    def _try_finish(self, batch: OpenBatch, *, at_deadline: bool) -> BatchRecord | None:
        if batch.early and batch.every_row_own:  # every row exact: nothing to decode
            return self._finish_own(batch)
        if len(batch.received) < batch.codec.min_results:
            if at_deadline and (batch.all_answered() or batch.hopeless()):
                return self._finish(batch, "failed", error=batch.error_summary())
            return None
        workers, y, bad = batch.fetch(self.redis, sorted(batch.received))
        for _ in range(bad):
            self._drop("corrupt")
        if y is None or (not at_deadline and not batch.policy_met(self.clock())):
            return None
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
            return self._finish(batch, "failed", error=error)
        predictions = np.asarray(decoded.values, np.float32)
        own = set(decoded.own)
        position = {task: i for i, task in enumerate(workers)}
        for row, task in batch.own_in.items():  # a row whose own result is in is that result
            if task in position:
                predictions[row] = y[position[task]]
                own.add(row)
        decode_s = time.perf_counter() - start
        outcome = "deadline_decoded" if at_deadline and batch.policy_met_at is None else "decoded"
        rejected = [{"index": i, "worker": batch.received[i].worker} for i in decoded.rejected]
        return self._finish(batch, outcome, predictions, workers=list(decoded.workers),
                            decode_s=decode_s,
                            lam=decoded.lam_dec, rejected=rejected,
                            rows_own=sorted(own))  # fmt: skip

    def _finish_own(self, batch: OpenBatch) -> BatchRecord | None:
        """Every row's own result is in: the answer is those results, in row order."""
        rows = sorted(batch.own_in)
        tasks = [batch.own_in[r] for r in rows]
        good, y, bad = batch.fetch(self.redis, tasks)
        for _ in range(bad):
            self._drop("corrupt")
        if y is None or len(good) < len(tasks):
            return None  # a corrupt own result: wait for a decode instead
        return self._finish(batch, "decoded", y.astype(np.float32, copy=False), workers=tasks,
                            decode_s=0.0,
                            rows_own=rows)  # fmt: skip

    def _tell_early_rows(self) -> None:
        """Hand rows whose own results came in to their batch's ``on_rows`` (in-process)."""
        dirty, self._early_rows = self._early_rows, set()
        for batch_id in dirty:
            batch = self._open.get(batch_id)
            if batch is None or batch.on_rows is None:
                continue
            new = batch.take_new_rows()
            if not new:
                continue
            good, y, bad = batch.fetch(self.redis, [task for _, task in new])
            for _ in range(bad):
                self._drop("corrupt")
            if y is None:
                continue
            rows = [row for row, task in new if task in good]
            batch.rows_told.difference_update(r for r, t in new if t not in good)
            batch.on_rows(rows, y)

    def _finish(
        self,
        batch: OpenBatch,
        outcome: str,
        predictions: np.ndarray | None = None,
        **details: Any,
    ) -> BatchRecord:
        """Answer ``batch`` with ``outcome``; ``details``: :meth:`OpenBatch.record`'s."""
        reg = batch.reg
        now = self.clock()
        record = batch.record(outcome, now, predictions=predictions, **details)
        # inputs and outputs are deleted (late workers then skip; late outputs expire) after
        # the reply, at the next poll: the client should not wait for housekeeping
        self._cleanup.append(reg.input_key)
        if reg.reference and predictions is not None:
            self._fidelity.add(reg, reg.codec, predictions, batch.references, now + reg.ttl,
                               decoded_rows=record.rows_decoded)  # fmt: skip
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
        if log.isEnabledFor(logging.DEBUG):
            log.debug("batch %s %s: k=%d n=%d, %d rows own, %d decoded, %d results in", reg.batch,
                      record.outcome, reg.k, reg.n, len(record.rows_own),
                      len(record.rows_decoded), record.results_received,
                      extra=trace(reg.batch, reg.requests))  # fmt: skip
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
        batch.out_shape = list(reg.output_shape)
        for index in results:
            notice = Notice(reg.batch, index, True, "float32", list(reg.output_shape),
                            written_at=now)  # fmt: skip
            batch.accept(notice, now, now)
        if batch.policy_met(now):
            batch.policy_met_at = batch.policy_met_at or now
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
