"""The Python API: submit a batch, get the K predictions and the batch's record."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from codedfarm.coordinator.collector import Collector
from codedfarm.coordinator.dispatch import Dispatcher, PreparedBatch
from codedfarm.coordinator.liveness import FarmCheck
from codedfarm.coordinator.open_batch import RowsCallback
from codedfarm.coordinator.record_relay import RecordRelay
from codedfarm.coordinator.resolution import BatchSettings, BatchSpec
from codedfarm.errors import ConfigError, FarmUnavailableError, RedisUnavailableError
from codedfarm.heartbeat import LIVENESS_S
from codedfarm.protocol import BatchRecord, Keys, as_bytes, read_reply_frame
from codedfarm.redis_conn import connect, mask_url
from codedfarm.settings import Settings

__all__ = ["BatchResult", "FarmClient"]

REPLY_GRACE_S = 5.0  # how long past the deadline a client waits for a collector service
NO_WORKER_GRACE_S = 0.75  # how long a queue may lack a live worker before a batch is refused


@dataclass(frozen=True)
class BatchResult:
    """Predictions ``(K, *out_shape)`` (None unless decoded) and the batch record."""

    predictions: npt.NDArray[np.float32] | None
    record: BatchRecord

    @property
    def outcome(self) -> str:
        return self.record.outcome


class FarmClient:
    """Submits batches to the farm.

    With ``collector=""`` (the default unless ``CODEDFARM_COLLECTOR`` is set) the client
    collects its own results in-process; otherwise it waits for the reply of the named
    ``codedfarm collector`` service. A batch for a queue with no live worker, or for a
    collector service that is not running, raises :class:`~codedfarm.errors.NoWorkerError`
    or :class:`~codedfarm.errors.CollectorUnavailableError` before anything is written,
    unless ``wait_for_workers`` (then its tasks wait in the queue until the deadline).
    ``retries``: how often a batch lost with Redis is sent again (within its deadline).
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        collector: str | None = None,
        wait_for_workers: bool = False,
        retries: int = 1,
    ) -> None:
        if retries < 0:
            raise ConfigError(f"retries must be >= 0, got {retries}")
        self.retries = retries
        self.settings = settings or Settings.from_env()
        self.redis = connect(self.settings)
        self.keys = Keys(self.settings.key_prefix)
        self.dispatcher = Dispatcher(self.settings, self.redis)
        self.collector_name = self.settings.collector if collector is None else collector
        self.wait_for_workers = wait_for_workers
        self._farm_check = FarmCheck(self.redis, self.keys)
        self._own_inbox = self.keys.inbox(f"client-{uuid.uuid4().hex[:12]}")
        self._collector = self._new_collector()

    def _new_collector(self) -> Collector:
        # what it finishes goes to the collector service's /metrics (record_relay.py)
        relay = RecordRelay(self.keys.records(), self.settings.key_ttl)
        return Collector(self.redis, self._own_inbox, reply_in_memory=True, relay=relay)

    def submit(
        self,
        x: Any,
        spec: BatchSpec | BatchSettings,
        *,
        on_rows: RowsCallback | None = None,
        request_ids: Sequence[str] = (),
    ) -> BatchResult:
        """Encode ``x`` ``(K, *input_shape)``, dispatch, and wait for the decoded predictions.

        ``spec`` is resolved against the model's ``config.json`` and the farm's settings
        (:func:`~codedfarm.coordinator.resolution.resolve_batch`), or is resolved already.
        Under ``wait="own"`` (the default) the batch returns as soon as every row's own
        result is in (exact) or enough results are in to decode the rest; ``on_rows``, if
        given, receives rows answered early ``(rows, predictions)`` from this thread, before
        ``submit`` returns (the in-process collector only: a collector service answers once).
        ``request_ids``: the requests the batch serves, named in its log lines (the
        collector's and the workers', at debug level).

        A batch that fails because Redis was lost (a restart, a failover) is sent again once
        Redis answers, within its deadline, up to ``retries`` times (inference is
        idempotent); its record counts the retries. Raises
        :class:`~codedfarm.errors.CodedFarmError` subclasses for bad input (nothing is
        written) and :class:`~codedfarm.errors.FarmUnavailableError` when the farm cannot
        serve it."""
        start = time.perf_counter()
        prepared = self.dispatcher.prepare(x, spec, request_ids)
        retried = 0
        if not self.wait_for_workers:
            try:
                self._farm_check.require(prepared.queues, self.collector_name)
            except RedisUnavailableError:  # Redis is restarting or failing over
                if not self.retries or not self._await_farm(prepared, prepared.deadline_s):
                    raise
            except FarmUnavailableError:  # workers re-announce within a beat after a restart
                grace = NO_WORKER_GRACE_S
                if self._farm_check.restarted_within(LIVENESS_S, prepared.queues):
                    grace = LIVENESS_S
                if not self._await_farm(prepared, min(grace, prepared.deadline_s)):
                    raise
        end = start + prepared.deadline_s  # every retry fits in the batch's own deadline
        while True:
            result = self._submit_once(prepared, start, on_rows)
            lost = result.outcome == "failed" and result.record.error.startswith("lost Redis")
            left = end - time.perf_counter()
            if not lost or retried >= self.retries or left <= 0.05:
                return BatchResult(result.predictions, replace(result.record, retries=retried))
            retried += 1
            if not self._await_farm(prepared, left):
                return BatchResult(None, replace(result.record, retries=retried))
            left = end - time.perf_counter()
            prepared = replace(prepared, batch=uuid.uuid4().hex, deadline_s=max(left, 0.05),
                               submitted_at=time.time())  # fmt: skip

    def check_farm(self, queues: Sequence[str]) -> None:
        """Raise :class:`~codedfarm.errors.FarmUnavailableError` unless Redis answers and
        every queue has a live worker (and the collector service, if one is used, is live)."""
        try:
            self.redis.ping()
        except redis.RedisError as exc:
            where = mask_url(self.settings.redis_url)
            raise RedisUnavailableError(f"cannot reach Redis at {where}: {exc}") from exc
        self._farm_check.require(queues, self.collector_name)

    def _await_farm(self, prepared: PreparedBatch, budget: float) -> bool:
        """After a lost Redis: wait (up to ``budget`` s) until Redis answers and, unless the
        client waits for workers anyway, the batch's workers have announced themselves."""
        end = time.monotonic() + budget
        while time.monotonic() < end:
            try:
                self.redis.ping()
                if not self.wait_for_workers:
                    self._farm_check.require(prepared.queues, self.collector_name)
                return True
            except (redis.RedisError, FarmUnavailableError):
                time.sleep(0.1)
        return False

    def _submit_once(
        self, prepared: PreparedBatch, start: float, on_rows: RowsCallback | None = None
    ) -> BatchResult:
        inbox = self.keys.inbox(self.collector_name) if self.collector_name else self._own_inbox
        lost = ""
        reply: tuple[BatchRecord, Any] | None = None
        dispatch_s = 0.0
        dispatched_at: float | None = None
        tasks_sent = prepared.n + (0 if prepared.reference is None else prepared.k)
        budget = prepared.deadline_s + REPLY_GRACE_S
        try:
            durable = self.keys.open_batches(self.collector_name) if self.collector_name else None
            own = not self.collector_name
            registration = self.dispatcher.registration(prepared)
            if own:  # the in-process collector: told directly, not through its inbox
                self._collector.register(registration)
            dispatch_s = self.dispatcher.dispatch(
                prepared, inbox, durable, announce=not own, registration=registration
            )
            dispatched_at = time.time()
            if self.collector_name:
                reply = self._wait_for_service(prepared.batch, budget)
            elif prepared.settings.hedge_after is not None:
                reply, hedged = self._wait_hedged(
                    prepared, budget, prepared.settings.hedge_after, on_rows
                )
                tasks_sent += hedged
            else:
                reply = self._collector.wait_for(prepared.batch, budget, on_rows)
        except redis.RedisError as exc:  # e.g. Redis restarted: the batch's state is gone
            lost = f"lost Redis at {mask_url(self.settings.redis_url)} during the batch: {exc}"
            self._collector = self._new_collector()
        reply_at = time.time()
        end_to_end = time.perf_counter() - start
        if reply is None:
            record = BatchRecord(
                batch=prepared.batch,
                model=prepared.model.name,
                model_version=prepared.model.version,
                codec=prepared.codec.spec,
                k=prepared.k,
                n=prepared.n,
                s=prepared.s,
                wait_for=prepared.wait_for,
                outcome="failed" if lost else "timeout",
                slowed=prepared.slowed,
                queues=list(prepared.queues),
                error=lost
                or "no reply from the collector"
                + (f" {self.collector_name!r}" if self.collector_name else ""),
            )
            with contextlib.suppress(redis.RedisError):
                self.redis.delete(
                    self.keys.inputs(prepared.batch), self.keys.outputs(prepared.batch)
                )
            return BatchResult(None, record)
        record, predictions = reply
        record = record.with_client_timings(
            encode=prepared.encode_s,
            dispatch=dispatch_s,
            end_to_end=end_to_end,
            reply_at=reply_at,
            tasks_sent=tasks_sent,
            dispatched_at=dispatched_at,
        )
        return BatchResult(predictions, record)

    def _wait_hedged(
        self,
        prepared: PreparedBatch,
        budget: float,
        hedge_after: float,
        on_rows: RowsCallback | None = None,
    ) -> tuple[tuple[BatchRecord, Any] | None, int]:
        """Hedged requests ("The Tail at Scale"): after ``hedge_after`` s, send a second copy
        of every task that has not answered; the first copy to answer wins."""
        start = time.monotonic()
        reply = self._collector.wait_for(prepared.batch, hedge_after, on_rows)
        if reply is not None:
            return reply, 0
        answered = self._collector.answered(prepared.batch) or set()
        missing = [j for j in range(prepared.n) if j not in answered]
        sent = self.dispatcher.redispatch(prepared, self._own_inbox, missing) if missing else 0
        left = budget - (time.monotonic() - start)
        return self._collector.wait_for(prepared.batch, max(left, 0.0), on_rows), sent

    def _wait_for_service(self, batch: str, budget: float) -> tuple[BatchRecord, Any] | None:
        end = time.monotonic() + budget
        item = None
        while item is None and (left := end - time.monotonic()) > 0:
            item = self.redis.blpop([self.keys.reply(batch)], timeout=max(0.01, min(left, 1.0)))
        if item is None:
            return None
        return read_reply_frame(as_bytes(item[1]))

    def flush_cleanup(self) -> None:
        """Delete the inputs and outputs of the batches finished so far, now: their
        straggling tasks then give their worker slots back. ``submit`` leaves this to the
        client's next poll so as not to delay its answer; a client that may sit idle
        between batches (one of a pool) calls this after each."""
        self._collector.flush_cleanup()

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._collector.flush_cleanup()
            self.redis.delete(self._own_inbox)
        self.redis.close()

    def __enter__(self) -> FarmClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
