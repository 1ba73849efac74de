"""The Celery app: JSON only, late acks, one prefetched task per process.

Start a worker with ``codedfarm worker``; ``celery -A codedfarm.tasks.app worker`` also works.
"""

from __future__ import annotations

import sys

from celery import Celery

from codedfarm.settings import Settings

__all__ = ["INFER_TASK", "app", "make_celery", "no_restore_on_connection_loss"]

INFER_TASK = "codedfarm.infer"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.redis_url`` that accepts JSON messages only (no pickle)."""
    app = Celery("codedfarm", broker=settings.redis_url, set_as_current=False)
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
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_send_sent_event=False,
        worker_enable_remote_control=True,
        broker_pool_limit=4,
    )
    from codedfarm.tasks.inference import InjectedFailure, run_inference

    app.task(name=INFER_TASK, throws=(InjectedFailure,), ignore_result=True)(run_inference)
    _connect_signals()
    return app


def no_restore_on_connection_loss() -> None:
    """Stop kombu's Redis channel from re-queueing unacked messages when it closes.

    With kombu 5.7, a Redis restart while late-ack tasks run makes that re-queue fail inside
    kombu ("'NoneType' object has no attribute 'hostname'"), and the worker stops with
    "Unrecoverable error". Unacked messages are not lost without it: they stay in Redis's
    unacked set and come back after the visibility timeout, as they do when a worker is
    SIGKILLed.
    """
    from kombu.transport import redis as kombu_redis

    kombu_redis.QoS.restore_at_shutdown = False


_signals_connected = False


def _connect_signals() -> None:
    global _signals_connected
    if _signals_connected:
        return
    _signals_connected = True
    from celery.signals import worker_process_init, worker_ready

    @worker_ready.connect(weak=False)  # type: ignore[untyped-decorator]
    def _announce_ready(sender: object = None, **_: object) -> None:
        # printed whatever the log level, so supervisors can wait for it
        hostname = getattr(sender, "hostname", "worker")
        print(f"codedfarm worker {hostname} ready.", file=sys.stderr, flush=True)

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _load_models_after_fork(**_: object) -> None:
        from codedfarm.tasks.worker_state import state

        worker = state()
        for name in worker.options.preload:
            worker.model(name)


app = make_celery(Settings.from_env())
