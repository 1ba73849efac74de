"""The batch engine: a worker that serves many coded tasks per Redis round trip.

``codedfarm worker`` (the default engine) consumes the same Celery task messages, from the
same queues and with the same late acknowledgement, as ``--engine celery``; the two can
serve one farm side by side, and both answer Celery's remote control (here through
:mod:`~codedfarm.worker.control_plane`). A Celery worker spends three Redis round trips of
kombu bookkeeping and two of the farm's on every task, about 1 ms of CPU per task on a
small machine before any model runs. The batch engine, one process, instead:

1. pops up to ``slots`` messages and records each in kombu's unacked hash and index, in one
   Lua script (a message is never off its queue without its unacked record);
2. reads all their coded inputs with one pipeline of GETRANGEs, as it takes them (a task
   with an injected delay has its input in hand when the delay ends);
3. runs each model once on the stacked inputs (one forward pass for the group, which is
   also how a GPU likes its work);
4. stores the outputs, pushes the completion notices and acknowledges the messages in one
   Lua script.

If the process dies, its unacked messages go back on their queues after the visibility
timeout through kombu's own ``restore_visible`` sweep, which this engine runs every few
seconds (as Celery workers of the farm do). Injected stragglers wait in a timer heap, each
holding one of the ``slots``, and give the slot back as soon as their batch is finished:
a straggling task delays only itself, like a slow pool process.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from codedfarm.errors import ConfigError, MessageRefusedError, ModelUnavailableError, ProtocolError
from codedfarm.logs import trace
from codedfarm.protocol import (
    INFER_TASK,
    Keys,
    TaskMessage,
    array_from_bytes,
    queue_keys,
    read_envelope,
)
from codedfarm.stragglers import TaskFate
from codedfarm.worker.control_plane import InFlight, TaskEvents
from codedfarm.worker.core import (
    CANCEL_POLL_S,
    Report,
    log_task,
    predict,
    task_fate,
)
from codedfarm.worker.liveness import engine_progress
from codedfarm.worker.state import WorkerState, worker_hooks
from codedfarm.worker.wake_alarm import WakeAlarm

__all__ = ["BatchEngine"]

log = logging.getLogger(__name__)

# KEYS: queue lists in order, then unacked index (zset) and unacked hash; ARGV: how many to
# pop, the time, then messages already popped by BRPOP. Each message is recorded as kombu
# records it: index score = delivery time, hash value = JSON [payload, exchange, routing key].
POP_SCRIPT = """
local nq = #KEYS - 2
local index, unacked = KEYS[nq + 1], KEYS[nq + 2]
local want, now = tonumber(ARGV[1]), ARGV[2]
local out = {}
local function record(m)
  local ok, msg = pcall(cjson.decode, m)
  if ok and type(msg) == 'table' and type(msg.properties) == 'table' then
    local p = msg.properties
    local info = type(p.delivery_info) == 'table' and p.delivery_info or {}
    if type(p.delivery_tag) == 'string' then
      local ex = type(info.exchange) == 'string' and info.exchange or ''
      local rk = type(info.routing_key) == 'string' and info.routing_key or ''
      redis.call('ZADD', index, now, p.delivery_tag)
      redis.call('HSET', unacked, p.delivery_tag,
                 '[' .. m .. ',' .. cjson.encode(ex) .. ',' .. cjson.encode(rk) .. ']')
    end
  end
  out[#out + 1] = m
end
for i = 3, #ARGV do record(ARGV[i]) end
for q = 1, nq do
  while #out < want do
    local m = redis.call('RPOP', KEYS[q])
    if not m then break end
    record(m)
  end
end
return out
"""


@dataclass(order=True)
class _Task:
    due: float  # monotonic time its injected delay ends
    seq: int
    tag: str = field(compare=False)
    msg: TaskMessage = field(compare=False)
    fate: TaskFate = field(compare=False)
    received: float = field(compare=False)  # perf_counter at receipt
    task_id: str = field(compare=False, default="")  # Celery's task id
    received_at: float = field(compare=False, default=0.0)  # wall clock at receipt
    data: bytes | None = field(compare=False, default=None)  # its coded input, once read


class BatchEngine:
    """Serves ``codedfarm.infer`` tasks from ``queues`` with up to ``slots`` in flight."""

    def __init__(
        self,
        worker: WorkerState,
        queues: Sequence[str],
        slots: int,
        *,
        kombu_connection: Any,
        task_name: str = INFER_TASK,
        restore_interval: float = 5.0,
        events: TaskEvents | None = None,
    ) -> None:
        if slots < 1:
            raise ConfigError(f"slots must be >= 1, got {slots}")
        self.worker = worker
        self.queues = list(queues)
        self.slots = slots
        self.task_name = task_name
        self.restore_interval = restore_interval
        self._kombu = kombu_connection  # kombu's QoS restores unacked messages
        channel_cls = kombu_connection.transport.Channel
        self._unacked = [channel_cls.unacked_index_key, channel_cls.unacked_key]
        self._waiting: list[_Task] = []  # heap by due time
        self._acks: list[str] = []  # tags to acknowledge without a notice
        self._seq = itertools.count()
        self._rotation = 0
        self._next_restore = 0.0
        self._next_cancel_check = 0.0
        self._alarm = WakeAlarm(worker.redis, Keys(worker.settings.key_prefix).wake(worker.name))
        self._pop = worker.script(POP_SCRIPT)
        self.events = events or TaskEvents(enabled=False)  # Celery task events
        self.processed = 0  # tasks finished, for ``celery inspect stats`` and heartbeats
        self._running: list[_Task] = []

    def in_flight(self) -> list[InFlight]:
        """The tasks this engine holds (straggling, due or running), for remote control."""
        tasks = [*self._waiting, *self._running]  # copies: safe from another thread
        return [InFlight(t.task_id, t.msg.to_dict(), t.tag, t.msg.queue, t.received_at)
                for t in tasks]  # fmt: skip

    # ----- the loop ----------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set, then put straggling tasks back on their queues.
        Every turn of the loop is stamped (:mod:`codedfarm.worker.liveness`)."""
        progress = engine_progress()
        while not stop.is_set():
            progress.turn()
            try:
                self.step()
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                # Redis restarted (its queues and batches are gone) or the network dropped
                # (the unacked records bring the tasks back): start over with a clean slate
                log.warning("redis unavailable (%s); retrying", exc)
                self._waiting.clear()
                self._acks.clear()
                stop.wait(0.5)
        self.requeue_waiting()

    def step(self) -> int:
        """Fetch what there is (blocking up to 1 s when idle), run what is due, report.
        Returns the number of tasks finished (reported, skipped, cancelled or failed)."""
        now = time.monotonic()
        if now >= self._next_restore:
            self._next_restore = now + self.restore_interval
            self._restore_visible()
        free = self.slots - len(self._waiting)
        raws = self._fetch(free, block=not self._due(now)) if free > 0 else []
        if free <= 0:
            time.sleep(max(0.0, min(CANCEL_POLL_S, self._waiting[0].due - now)))
        received = [task for raw in raws if (task := self._receive(raw)) is not None]
        self._read_inputs(received)  # now, not when due: off the critical path of a delay
        ready: list[_Task] = []
        for task in received:
            if task.due > time.monotonic():
                heapq.heappush(self._waiting, task)
            else:
                ready.append(task)
        while self._waiting and self._waiting[0].due <= time.monotonic():
            ready.append(heapq.heappop(self._waiting))
        finished = self._execute(ready)
        return finished + self._cancel_finished_batches()  # after the due work, not before

    def _due(self, now: float) -> bool:
        return bool(self._waiting) and self._waiting[0].due <= now

    def _fetch(self, free: int, *, block: bool) -> list[bytes]:
        keys = self._rotated_keys()
        client = self.worker.redis
        if not block:
            return list(self._pop(keys=keys, args=[free, time.time()]))
        # BRPOP returns at once when a queue has messages: no non-blocking pop before it
        if self._waiting:  # wake for the next due task or cancel check
            self._alarm.arm(min(self._waiting[0].due, self._next_cancel_check))
        try:
            item = client.brpop([*keys[:-2], self._alarm.key], timeout=1)
        finally:
            self._alarm.disarm()
        if item is None or item[0] == self._alarm.key_bytes:
            return []
        # record the message BRPOP took (and any more that came) in the unacked set at once
        return list(self._pop(keys=keys, args=[free - 1, time.time(), item[1]]))

    def _rotated_keys(self) -> list[str]:
        """Queue lists starting at the next queue in turn (fairness, as kombu's cycle)."""
        self._rotation = (self._rotation + 1) % len(self.queues)
        queues = self.queues[self._rotation :] + self.queues[: self._rotation]
        return [*queue_keys(queues), *self._unacked]

    def _receive(self, raw: bytes) -> _Task | None:
        try:
            envelope = read_envelope(raw, self.task_name)
        except MessageRefusedError as exc:
            log.error("refused a queue message (dropped, never run): %s", exc)
            worker_hooks().refused(exc.kind)
            if exc.tag is not None:
                self._acks.append(exc.tag)
            return None
        msg = envelope.task
        fate = task_fate(msg, self.worker)
        now, wall = time.monotonic(), time.time()
        delay = fate.delay + max(0.0, envelope.not_before - wall)
        if self.events.enabled:
            self.events.send("task-received", uuid=envelope.task_id, name=self.task_name,
                             args="()", kwargs=repr(msg.to_dict()), root_id=envelope.task_id,
                             parent_id=None, retries=0, eta=None, expires=None)  # fmt: skip
        return _Task(now + delay, next(self._seq), envelope.tag, msg, fate, time.perf_counter(),
                     envelope.task_id, wall)  # fmt: skip

    def _cancel_finished_batches(self) -> int:
        """Straggling tasks whose batch is finished (inputs deleted) give their slot back."""
        now = time.monotonic()
        if not self._waiting or now < self._next_cancel_check:
            return 0
        self._next_cancel_check = now + CANCEL_POLL_S
        keys = sorted({t.msg.input_key for t in self._waiting})
        with self.worker.redis.pipeline(transaction=False) as pipe:
            for key in keys:
                pipe.exists(key)
            gone = {k for k, alive in zip(keys, pipe.execute(), strict=True) if not alive}
        if not gone:
            return 0
        cancelled = [t for t in self._waiting if t.msg.input_key in gone]
        self._waiting = [t for t in self._waiting if t.msg.input_key not in gone]
        heapq.heapify(self._waiting)
        self._acks += [task.tag for task in cancelled]
        self._flush(Report())  # acknowledge them now: the slots are free again
        for task in cancelled:
            self._observe(task, "cancelled")
            self._finished_event(task, "cancelled")
        return len(cancelled)

    # ----- running tasks -----------------------------------------------------------------
    def _execute(self, ready: list[_Task]) -> int:
        report = Report()
        live: list[_Task] = []
        failed: list[_Task] = []
        for task in ready:
            if task.fate.fail:  # the plan says this task dies without a result
                report.tags.append(task.tag)
                failed.append(task)
            else:
                live.append(task)
        self._running = live
        if live:
            if self.events.enabled:
                for task in live:
                    self.events.send("task-started", uuid=task.task_id)
            # the forward passes may hold the loop as long as the tasks' batches live
            wall = time.time()
            engine_progress().busy(max(t.msg.ttl - (wall - t.received_at) for t in live))
            try:
                self._read_inputs(live)  # those received before a Redis reconnect, if any
                statuses = self._run_models(live, [t.data or b"" for t in live], report)
            finally:
                engine_progress().idle()
        else:
            statuses = []
        report.tags += [t.tag for t in live]
        self._flush(report)
        self._running = []
        for task in failed:
            self._observe(task, "failed")
            self._finished_event(task, "failed")
        for task, status in zip(live, statuses, strict=True):
            self._observe(task, status)
            self._finished_event(task, status)
        return len(ready)

    def _finished_event(self, task: _Task, status: str) -> None:
        """``task-succeeded`` (result: the status) or ``task-failed``, as Celery sends them."""
        self.processed += 1
        if not self.events.enabled:
            return
        runtime = time.perf_counter() - task.received
        if status in ("failed", "error"):
            what = "InjectedFailure" if status == "failed" else "the model failed (see the log)"
            self.events.send("task-failed", uuid=task.task_id, exception=what, traceback="")
        else:
            self.events.send("task-succeeded", uuid=task.task_id, result=repr(status),
                             runtime=runtime)  # fmt: skip

    def _read_inputs(self, tasks: list[_Task]) -> None:
        """Read the coded inputs of ``tasks`` not read yet, in one round trip (b"" when the
        batch is finished or expired)."""
        unread = [t for t in tasks if t.data is None and not t.fate.fail]
        if not unread:
            return
        with self.worker.redis.pipeline(transaction=False) as pipe:
            for task in unread:
                m = task.msg
                pipe.getrange(m.input_key, m.offset, m.offset + m.nbytes - 1)
            for task, data in zip(unread, pipe.execute(), strict=True):
                task.data = data

    def _run_models(self, tasks: list[_Task], inputs: list[bytes], report: Report) -> list[str]:
        """Forward passes, one per (model, dtype, shape) group; fills ``report``."""
        statuses = ["skipped"] * len(tasks)  # no input: the batch is finished or expired
        groups: dict[tuple[str, int | None, str, tuple[int, ...]], list[int]] = defaultdict(list)
        arrays: dict[int, np.ndarray] = {}
        for i, (task, data) in enumerate(zip(tasks, inputs, strict=True)):
            if not data:
                continue
            m = task.msg
            try:
                arrays[i] = array_from_bytes(data, m.dtype, m.shape)
            except ProtocolError as exc:
                statuses[i] = report.error(task.msg, exc, self.worker.name)
                continue
            groups[(m.model, m.version, m.dtype, tuple(m.shape))].append(i)
        for (model, version, _, _), members in groups.items():
            started_at = time.time()
            try:
                outputs, compute = predict(
                    self.worker, model, np.stack([arrays[i] for i in members]), version
                )
            except ModelUnavailableError as exc:  # no use trying one by one
                log.error("%d task(s) failed: %s", len(members), exc)
                for i in members:
                    statuses[i] = report.error(tasks[i].msg, exc, self.worker.name)
                continue
            except Exception:  # one bad input must not fail the others: run them one by one
                log.exception("group forward of %d tasks failed; retrying one by one", len(members))
                for i in members:
                    statuses[i] = self._run_one(report, tasks[i], arrays[i])
                continue
            for row, i in enumerate(members):
                task = tasks[i]
                share = compute / len(members)
                statuses[i] = report.ok(
                    task.msg,
                    outputs[row],
                    share,
                    task.fate.delay,
                    self.worker.name,
                    received_at=task.received_at,
                    started_at=started_at,
                    forward_s=compute,
                )
        return statuses

    def _run_one(self, report: Report, task: _Task, x: np.ndarray) -> str:
        started_at = time.time()
        try:
            outputs, compute = predict(self.worker, task.msg.model, x[None], task.msg.version)
        except Exception as exc:
            log.exception("task %s/%d failed", task.msg.batch, task.msg.index,
                          extra=trace(task.msg.batch, task.msg.requests))  # fmt: skip
            return report.error(task.msg, exc, self.worker.name)
        return report.ok(task.msg, outputs[0], compute, task.fate.delay, self.worker.name,
                         received_at=task.received_at, started_at=started_at)  # fmt: skip

    def _flush(self, report: Report) -> None:
        """Notices, outputs and acknowledgements in one round trip."""
        report.tags += self._acks
        self._acks = []
        report.send(self.worker, self._unacked)

    def _observe(self, task: _Task, status: str) -> None:
        m = task.msg
        seconds = time.perf_counter() - task.received
        worker_hooks().observe(m.queue, m.model, status, seconds, task.fate.delay)
        log_task(m, status, seconds)

    # ----- unacked messages --------------------------------------------------------------
    def _restore_visible(self) -> None:
        """kombu's sweep: unacked messages older than the visibility timeout go back."""
        try:
            qos = self._kombu.default_channel.qos
            qos.restore_visible(num=qos.channel.unacked_restore_limit, interval=1)
        except Exception as exc:  # a failed sweep is retried next interval
            log.warning("unacked sweep failed: %s", exc)
            self._kombu.close()

    def requeue_waiting(self) -> None:
        """Warm shutdown: tasks still straggling go back on their queues at once."""
        self._flush(Report())
        waiting, self._waiting = self._waiting, []
        if not waiting:
            return
        try:
            qos = self._kombu.default_channel.qos
            for task in waiting:
                qos.restore_by_tag(task.tag)
        except Exception as exc:  # they return after the visibility timeout
            log.warning("could not requeue straggling tasks at shutdown: %s", exc)
            return
        log.warning("requeued %d straggling task(s) at shutdown", len(waiting))
