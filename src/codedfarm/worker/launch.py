"""Start a worker process: check the options and the machine, then run the chosen engine
under the supervisor (``codedfarm worker`` delegates here)."""

from __future__ import annotations

import atexit
import shutil

from codedfarm.errors import ConfigError
from codedfarm.settings import Settings
from codedfarm.worker.options import WorkerOptions

__all__ = ["celery_argv", "check_device", "run_worker"]


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


def celery_argv(options: WorkerOptions) -> list[str]:
    """The arguments of Celery's ``worker`` command for these options."""
    argv = [
        "worker",
        f"--queues={','.join(options.queue_names)}",
        f"--concurrency={options.slots}",
        f"--pool={options.pool or 'prefork'}",
        f"--loglevel={options.loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if options.hostname:
        argv.append(f"--hostname={options.hostname}")
    return argv


def run_worker(settings: Settings, options: WorkerOptions) -> int:
    """Validate, set up metrics, connect, then serve until told to stop; returns the exit
    status. Raises :class:`~codedfarm.errors.CodedFarmError` before anything starts."""
    options.validate()
    check_device(options.device)
    from codedfarm.redis_conn import connect

    connect(settings).close()
    if options.metrics_port:
        # before prometheus_client is imported: pool children write sample files there
        from codedfarm.monitoring.multiproc import prepare_multiprocess_dir

        samples = prepare_multiprocess_dir()
        atexit.register(shutil.rmtree, samples, True)
        from codedfarm.monitoring.worker_metrics import serve_worker_metrics

        serve_worker_metrics(options.metrics_port, options.metrics_addr)
    import torch  # noqa: F401 - imported before the fork so pool children share it

    from codedfarm.worker.celery_engine import make_celery, survive_connection_loss
    from codedfarm.worker.state import configure, state
    from codedfarm.worker.supervisor import supervise

    configure(settings, options)  # inherited by the supervised child and its pool
    app = make_celery(settings)
    if options.engine == "batch":
        from codedfarm.worker.batch_engine import serve

        return supervise(lambda: serve(app, state()))
    survive_connection_loss()
    argv = celery_argv(options)
    return supervise(lambda: app.worker_main(argv))
