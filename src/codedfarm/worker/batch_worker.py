"""The batch engine as a worker process: its models, its seat on Celery's control plane,
its heartbeat and its signals (``codedfarm worker``, the default engine)."""

from __future__ import annotations

import threading
from typing import Any

from codedfarm.protocol import INFER_TASK
from codedfarm.worker.batch_engine import BatchEngine
from codedfarm.worker.control_plane import ControlPlane, TaskEvents
from codedfarm.worker.core import announce_ready, preload_models, start_heartbeat, stop_heartbeat
from codedfarm.worker.state import WorkerState

__all__ = ["node_name", "serve"]


def node_name(hostname: str | None) -> str:
    """The worker's node name, as Celery's ``-n`` makes it: ``celery@<host>`` by default,
    ``%h``, ``%n`` and ``%d`` expanded."""
    from celery.utils.nodenames import default_nodename, host_format

    return str(host_format(default_nodename(hostname)))


def serve(app: Any, worker: WorkerState) -> None:
    """``codedfarm worker`` (the batch engine): load the models, join Celery's control plane,
    then serve until SIGTERM or SIGINT or a remote ``shutdown`` (warm: straggling tasks are
    requeued) or SIGQUIT (cold: exit at once)."""
    from codedfarm.signals import stop_on_signals

    preload_models(worker)
    stop = threading.Event()
    stop_on_signals(stop)
    options = app.conf.broker_transport_options
    name = node_name(worker.options.hostname)
    events = TaskEvents(enabled=worker.options.events)
    engine = BatchEngine(
        worker,
        worker.options.queue_names,
        worker.options.slots,
        kombu_connection=app.connection_for_read(),
        restore_interval=float(options.get("unacked_restore_interval", 5)),
        events=events,
    )
    control = ControlPlane(app, name, engine, stop.set, events=events, task_name=INFER_TASK)
    control.start()
    start_heartbeat(worker, engine.queues, name)
    announce_ready(name)
    try:
        engine.run(stop)
    finally:
        stop_heartbeat()
        control.close()
