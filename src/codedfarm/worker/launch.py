"""Start a worker process: check the options and the machine, then run the chosen engine
under the supervisor (``codedfarm worker`` delegates here), which watches the engine's loop
(:mod:`codedfarm.worker.liveness`) and answers ``/livez`` for it."""

from __future__ import annotations

import atexit
import logging
import shutil
import sys

from codedfarm.errors import ConfigError
from codedfarm.logs import LIFECYCLE
from codedfarm.settings import Settings
from codedfarm.worker.options import WorkerOptions

__all__ = ["celery_argv", "check_device", "prepare_zoo_models", "run_worker"]


def check_device(device: str) -> None:
    """Raise :class:`ConfigError` unless ``device`` (cpu, cuda, cuda:N) exists here."""
    if device == "cpu":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available on this machine")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )


def prepare_zoo_models(settings: Settings, options: WorkerOptions) -> None:
    """Train the preloaded zoo models that need it, once, before any process forks and
    before the worker says it is ready (Celery's pool children then only load weights)."""
    from codedfarm.models.resolve import resolve_model
    from codedfarm.models.training import TRAINABLE, is_trained, trained_model

    for ref in options.preload:
        zoo = resolve_model(ref, settings.model_repository).source == "zoo"
        if zoo and ref in TRAINABLE and not is_trained(ref, settings.cache_dir):
            logging.getLogger(LIFECYCLE).info(
                "codedfarm worker: training %s on digits before serving (cached in %s) ...",
                ref, settings.cache_dir)  # fmt: skip
            trained_model(ref, settings.cache_dir)


def celery_argv(options: WorkerOptions) -> list[str]:
    """The arguments of Celery's ``worker`` command for these options."""
    from codedfarm.logs import LogConfig, current_log_config

    level = options.loglevel or (current_log_config() or LogConfig.from_env()).level
    argv = [
        "--quiet",  # no banner on stdout: every line is a log line (one JSON object in json)
        "worker",
        f"--queues={','.join(options.queue_names)}",
        f"--concurrency={options.slots}",
        f"--pool={options.pool or 'prefork'}",
        f"--loglevel={level}",  # Celery's lines per task are debug (codedfarm.logs)
        # worker heartbeats stay on (Flower and `celery events` show workers by them);
        # gossip and mingle are worker-to-worker chatter the farm does not use
        "--without-gossip",
        "--without-mingle",
    ]
    if options.events:
        argv.append("--task-events")
    if options.hostname:
        argv.append(f"--hostname={options.hostname}")
    return argv


def _exit_with(code: int | None) -> None:
    """Celery's ``app.start`` returns the worker's exit status (``worker_main`` drops it):
    hand it to the supervisor, which restarts the worker after an abnormal stop."""
    sys.exit(code or 0)


def run_worker(settings: Settings, options: WorkerOptions) -> int:
    """Validate, set up metrics, connect, then serve until told to stop; returns the exit
    status. Raises :class:`~codedfarm.errors.CodedFarmError` before anything starts."""
    from codedfarm.logs import LogConfig, configure_logging, current_log_config
    from codedfarm.worker.liveness import EngineWatch, install_progress

    if options.loglevel is not None:  # -l: this worker's own level
        base = current_log_config() or LogConfig.from_env(role="worker")
        configure_logging(LogConfig(options.loglevel, base.format, base.role))
    watch = EngineWatch(options.liveness_timeout)  # CODEDFARM_WORKER_LIVENESS_TIMEOUT
    options.check_models(settings.model_repository)
    check_device(options.device)
    from codedfarm.redis_conn import connect
    from codedfarm.worker.state import configure, install_worker_hooks, state, worker_hooks

    connect(settings).close()
    install_progress(watch.progress)  # before the fork: the engine stamps, the supervisor reads
    if options.metrics_port:
        # before prometheus_client is imported: pool children write sample files there
        from codedfarm.monitoring.multiproc import prepare_multiprocess_dir

        samples = prepare_multiprocess_dir()
        atexit.register(shutil.rmtree, samples, True)
        from codedfarm.heartbeat import LIVENESS_S
        from codedfarm.monitoring.health import probe_redis, worker_ready
        from codedfarm.monitoring.worker_metrics import WorkerMetrics, serve_worker_metrics
        from codedfarm.protocol import Keys
        from codedfarm.worker.batch_worker import node_name

        # ready: the engine's heartbeat (models loaded, taking tasks) on every queue
        keys = Keys(settings.key_prefix)
        live = [keys.live_workers(q) for q in options.queues]
        ready = worker_ready(probe_redis(settings), live, node_name(options.hostname),
                             LIVENESS_S)  # fmt: skip
        serve_worker_metrics(options.metrics_port, options.metrics_addr, ready, watch)
        # before the fork: the supervised child and Celery's pool processes inherit them
        install_worker_hooks(WorkerMetrics())
    worker_hooks().engine_started(options.engine)  # the engine label of every task metric
    import torch  # noqa: F401 - imported before the fork so pool children share it

    prepare_zoo_models(settings, options)
    from codedfarm.worker.celery_engine import make_celery
    from codedfarm.worker.kombu_guards import refuse_poison_messages, survive_connection_loss
    from codedfarm.worker.supervisor import supervise

    configure(settings, options)  # inherited by the supervised child and its pool
    app = make_celery(settings)
    if options.engine == "batch":
        from codedfarm.worker.batch_worker import serve

        return supervise(lambda: serve(app, state()), watch=watch)
    survive_connection_loss()
    refuse_poison_messages()
    argv = celery_argv(options)
    return supervise(lambda: _exit_with(app.start(argv=argv)), watch=watch)
