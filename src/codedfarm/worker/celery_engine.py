"""The Celery engine: a Celery app (JSON only, late acks, one prefetched task per process)
whose one task runs the model on a coded input.

Start a worker with ``codedfarm worker --engine celery``; ``celery -A
codedfarm.worker.celery_engine worker`` also works (the ``app`` attribute is built from the
``CODEDFARM_*`` environment on first access, not at import).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import Celery

from codedfarm.errors import ModelUnavailableError, ProtocolError
from codedfarm.logs import LogConfig, configure_logging, current_log_config, trace
from codedfarm.protocol import INFER_TASK, TaskMessage, array_from_bytes
from codedfarm.redis_conn import celery_broker
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate
from codedfarm.worker.core import (
    CANCEL_POLL_S,
    InjectedFailure,
    Report,
    announce_ready,
    batch_open,
    log_task,
    predict,
    preload_models,
    start_heartbeat,
    stop_heartbeat,
    task_fate,
)
from codedfarm.worker.liveness import engine_progress
from codedfarm.worker.state import WorkerState, state, worker_hooks

__all__ = ["make_celery", "run_inference"]

log = logging.getLogger(__name__)
_app: Celery | None = None


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.redis_url`` that accepts JSON messages only (no pickle)."""
    broker, sentinel_options = celery_broker(settings.redis_url)
    app = Celery("codedfarm", broker=broker, set_as_current=False)
    visibility = settings.visibility_timeout or settings.key_ttl
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_serializer="json",
        result_accept_content=["json"],
        event_serializer="json",
        task_ignore_result=True,
        task_store_errors_even_if_ignored=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        # on a lost broker connection, cancel running late-ack tasks instead of acking them
        # later on a dead channel (which wedges the consumer: kombu fails with
        # "NoneType has no attribute hostname" and the worker never consumes again)
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queues[0],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            # a task whose worker died unacked goes back to the queue after this long
            # (CODEDFARM_VISIBILITY_TIMEOUT; by default the key TTL, past which its batch is gone)
            "visibility_timeout": visibility,
            # sweep for such tasks every few seconds (kombu's default: every ~100 s)
            "unacked_restore_interval": max(1, min(10, int(visibility / 3))),
            "unacked_restore_throttle": 1,
            "socket_keepalive": True,
            "health_check_interval": 10,
            **sentinel_options,  # master_name (and Sentinel auth) for redis+sentinel:// URLs
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=True,
        # Celery's default: Flower and `celery inspect` run their calls in parallel, each
        # holding a pooled connection (with 4, Flower's worker refresh hung past 120 s)
        broker_pool_limit=10,
    )
    app.task(name=INFER_TASK, throws=(InjectedFailure,), ignore_result=True)(run_inference)
    app.steps["consumer"].add(_loop_stamps_step())
    _connect_signals()
    return app


STAMP_S = 1.0
"""How often the consumer's event loop stamps the engine's progress."""


def _loop_stamps_step() -> type:
    """A consumer bootstep that stamps the engine's progress (:mod:`~codedfarm.worker.
    liveness`) from the consumer's event loop timer while the consumer runs: a blocked loop
    stops stamping; a consumer that reconnects to its broker is not judged meanwhile."""
    from celery import bootsteps

    class LoopStamps(bootsteps.StartStopStep):  # type: ignore[misc]
        requires = ("celery.worker.consumer.tasks:Tasks",)

        def __init__(self, parent: Any, **kwargs: Any) -> None:
            super().__init__(parent, **kwargs)
            self.tref: Any = None

        def start(self, c: Any) -> None:
            timer = getattr(c, "timer", None)
            if timer is None:
                return
            progress = engine_progress()
            progress.turn()
            self.tref = timer.call_repeatedly(STAMP_S, progress.turn)

        def stop(self, c: Any) -> None:
            if self.tref is not None:
                self.tref.cancel()
                self.tref = None
            engine_progress().reset()

        def shutdown(self, c: Any) -> None:
            self.stop(c)

    return LoopStamps


_signals_connected = False


def _connect_signals() -> None:
    global _signals_connected
    if _signals_connected:
        return
    _signals_connected = True
    from celery.signals import (
        setup_logging,
        task_rejected,
        task_unknown,
        worker_init,
        worker_process_init,
        worker_ready,
        worker_shutdown,
    )

    @setup_logging.connect(weak=False)  # type: ignore[untyped-decorator]
    def _log_as_codedfarm(loglevel: Any = None, **_: object) -> None:
        # Celery leaves logging to a receiver of this signal: codedfarm's lines, with Celery's
        # -l as the level (`celery -A ... worker` reads CODEDFARM_LOG_FORMAT for the format)
        base = current_log_config() or LogConfig.from_env(role="worker")
        level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
        configure_logging(LogConfig(str(level or base.level).lower(), base.format, base.role))

    @worker_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _guard_kombu(**_: object) -> None:
        # also for workers started as `celery -A codedfarm.worker.celery_engine worker`
        from codedfarm.worker.kombu_guards import refuse_poison_messages, survive_connection_loss

        survive_connection_loss()
        refuse_poison_messages()

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _announce_ready(sender: Any = None, **_: object) -> None:
        hostname = getattr(sender, "hostname", "worker")
        try:
            queues = [q.name for q in sender.task_consumer.queues]
        except AttributeError:
            queues = list(state().options.queue_names)
        start_heartbeat(state(), queues, hostname)
        announce_ready(hostname)

    @worker_shutdown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _leave(**_: object) -> None:
        stop_heartbeat()

    @task_unknown.connect(weak=False)  # type: ignore[untyped-decorator]
    def _count_unknown(**_: object) -> None:
        worker_hooks().refused("unknown_task")

    @task_rejected.connect(weak=False)  # type: ignore[untyped-decorator]
    def _count_rejected(**_: object) -> None:
        worker_hooks().refused("serializer")

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _load_models_after_fork(**_: object) -> None:
        preload_models(state())


def run_inference(**kwargs: Any) -> str:
    """The Celery task body. Returns a short status string (results are not stored)."""
    worker = state()
    try:
        msg = TaskMessage.from_dict(kwargs)
    except ProtocolError as exc:
        log.error("dropping malformed task message: %s", exc)
        return "malformed"
    start = time.perf_counter()
    received_at = time.time()
    fate = task_fate(msg, worker)
    status = "error"
    # a task run inside the event loop (--pool solo) holds it for its delay and forward pass
    progress = engine_progress()
    progress.busy(fate.delay + msg.ttl)
    try:
        status = _run(worker, msg, fate, received_at)
    except InjectedFailure:
        status = "failed"
        raise
    finally:
        progress.idle()
        seconds = time.perf_counter() - start
        worker_hooks().observe(msg.queue, msg.model, status, seconds, fate.delay)
        log_task(msg, status, seconds)
    return status


def _run(worker: WorkerState, msg: TaskMessage, fate: TaskFate, received_at: float) -> str:
    if fate.delay > 0 and not _straggle(worker, msg, fate.delay):
        return "cancelled"  # the batch finished while this task straggled
    if fate.fail:
        raise InjectedFailure(f"batch {msg.batch} task {msg.index}: injected failure")
    data = worker.redis.getrange(msg.input_key, msg.offset, msg.offset + msg.nbytes - 1)
    if not data:  # the batch is finished (inputs deleted) or expired: nothing to do
        return "skipped"
    report = Report()
    try:
        x = array_from_bytes(data, msg.dtype, msg.shape)
        started_at = time.time()
        outputs, compute = predict(worker, msg.model, x[None], msg.version)
        status = report.ok(msg, outputs[0], compute, fate.delay, worker.name,
                           received_at=received_at, started_at=started_at)  # fmt: skip
    except ModelUnavailableError as exc:  # the error says it all; no traceback per task
        log.error("task %s/%d: %s", msg.batch, msg.index, exc, extra=trace(msg.batch, msg.requests))
        status = report.error(msg, exc, worker.name)
    except Exception as exc:  # a model or data error: tell the collector instead of hanging
        log.exception("task %s/%d failed", msg.batch, msg.index,
                      extra=trace(msg.batch, msg.requests))  # fmt: skip
        status = report.error(msg, exc, worker.name)
    report.send(worker)
    return status


def _straggle(worker: WorkerState, msg: TaskMessage, delay: float) -> bool:
    """Sleep ``delay`` seconds, waking every 50 ms to see whether the batch is still open.

    Returns False as soon as it is not: a straggling task whose result nobody needs gives
    its slot back, like a revoked task.
    """
    end = time.monotonic() + delay
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, CANCEL_POLL_S))
        if left > CANCEL_POLL_S and not batch_open(worker, msg):
            return False
    return True


def __getattr__(name: str) -> Any:
    """``app``: the Celery app for the ``CODEDFARM_*`` environment, built on first access
    (for ``celery -A codedfarm.worker.celery_engine``; importing this module builds none)."""
    global _app
    if name == "app":
        if _app is None:
            _app = make_celery(Settings.from_env())
        return _app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
