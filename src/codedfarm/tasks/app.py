"""The Celery app: JSON only, late acks, one prefetched task per process.

Start a worker with ``codedfarm worker``; ``celery -A codedfarm.tasks.app worker`` also works.
"""

from __future__ import annotations

from celery import Celery

from codedfarm.settings import Settings

__all__ = ["INFER_TASK", "app", "make_celery"]

INFER_TASK = "codedfarm.infer"


def make_celery(settings: Settings) -> Celery:
    """A Celery app for ``settings.redis_url`` that accepts JSON messages only (no pickle)."""
    app = Celery("codedfarm", broker=settings.redis_url, set_as_current=False)
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
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queues[0],
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        broker_transport_options={
            # a task whose worker died unacked goes back to the queue after this long
            "visibility_timeout": max(60, int(settings.key_ttl)),
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


def _connect_signals() -> None:
    from celery.signals import worker_process_init

    @worker_process_init.connect(weak=False)  # type: ignore[untyped-decorator]
    def _load_models_after_fork(**_: object) -> None:
        from codedfarm.tasks.worker_state import state

        worker = state()
        for name in worker.options.preload:
            worker.model(name)


app = make_celery(Settings.from_env())
