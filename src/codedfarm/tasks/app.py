"""The Celery app: JSON only, late acks, one prefetched task per process.

Start a worker with ``codedfarm worker``; ``celery -A codedfarm.tasks.app worker`` also works.
"""

from __future__ import annotations

import sys
from typing import Any

from celery import Celery

from codedfarm.settings import Settings

__all__ = ["INFER_TASK", "app", "make_celery", "survive_connection_loss"]

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


def survive_connection_loss() -> None:
    """Patch kombu's Redis QoS so a Redis restart never stops a Celery worker.

    With kombu 5.7 and late acks, a restart made the worker exit with "Unrecoverable
    error" in two ways, both seen in our fault tests:

    - when its channel closes, kombu re-queues the unacked messages, and that fails inside
      kombu ("'NoneType' object has no attribute 'hostname'"): the re-queue is switched off;
    - a task that finishes after the channel closed is acknowledged on that dead channel
      ("'NoneType' object has no attribute 'client'"): such an ack now raises a
      connection error, which Celery logs ("Couldn't ack") and survives.

    No message is lost either way: it stays in Redis's unacked set and comes back after
    the visibility timeout, as when a worker is SIGKILLed (or it went with the restart).
    """
    from kombu.transport import redis as kombu_redis

    qos = kombu_redis.QoS
    qos.restore_at_shutdown = False
    if getattr(qos, "_codedfarm_guarded", False):
        return
    for name in ("ack", "reject"):
        setattr(qos, name, _on_open_channel(getattr(qos, name)))
    setattr(qos, "_codedfarm_guarded", True)  # noqa: B010 - a class attribute kombu lacks


def _on_open_channel(method: Any) -> Any:
    import redis

    def guarded(self: Any, delivery_tag: Any, *args: Any, **kwargs: Any) -> Any:
        if self.channel.connection is None:
            raise redis.ConnectionError(
                f"channel closed: message {delivery_tag} stays unacked until it is restored"
            )
        return method(self, delivery_tag, *args, **kwargs)

    return guarded


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
