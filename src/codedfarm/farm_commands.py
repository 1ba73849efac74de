"""Farm commands of the CLI: worker, collector, submit (scale and demo live in their modules)."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
import numpy as np

from codedfarm.errors import ConfigError, InputError
from codedfarm.settings import Settings

__all__ = ["engine_option", "load_batch_file", "register_commands", "settings_from_context"]


F = TypeVar("F", bound=Callable[..., Any])


def engine_option(help_text: str) -> Callable[[F], F]:
    """The ``--engine celery|batch`` option (worker engine), shared by every command."""
    return click.option(
        "--engine",
        type=click.Choice(["celery", "batch"]),
        default="celery",
        show_default=True,
        help=help_text,
    )


def settings_from_context() -> Settings:
    """Settings from ``CODEDFARM_*`` plus the group's ``--redis-url``."""
    ctx = click.get_current_context()
    obj = ctx.find_root().obj or {}
    return Settings.from_env(redis_url=obj.get("redis_url"))


def _queue_for_device(device: str) -> str:
    if device == "cpu":
        return "cpu"
    index = device.split(":", 1)[1] if ":" in device else "0"
    return f"gpu{index}"


def _check_device(device: str) -> None:
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda") or (":" in device and not device.split(":", 1)[1].isdigit()):
        raise ConfigError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: no CUDA device is available on this machine")
    index = int(device.split(":", 1)[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )


@click.command()
@click.option(
    "--queues",
    "-Q",
    default=None,
    help="Comma-separated queues (default: from --device: cpu, gpu0, gpu1, ...).",
)
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@engine_option(
    "celery: a Celery worker; batch: one process that serves many tasks per Redis "
    "round trip and per forward pass (same queues and messages, late acks)."
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=None,
    help="celery: pool processes (default 1; one per GPU is the rule). "
    "batch: tasks in flight, run as one forward pass (default 32).",
)
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default=None,
    help="Celery pool (default prefork); not for --engine batch.",
)
@click.option(
    "--slowdown",
    type=click.FloatRange(min=1.0),
    default=1.0,
    show_default=True,
    help="A persistently slow node: multiply compute time by this.",
)
@click.option(
    "--straggle",
    default="none",
    show_default=True,
    help="Default straggler spec for tasks whose batch gives none (exp, pareto, fail).",
)
@click.option(
    "--preload", default="", help="Comma-separated models to load in each process at start."
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Serve Prometheus /metrics of every pool process on this port (0: off).",
)
@click.option("--metrics-addr", default="0.0.0.0", show_default=True)
@click.option("--hostname", "-n", default=None, help="Celery node name.")
@click.option("--loglevel", "-l", default="warning", show_default=True)
def worker(
    queues: str | None,
    device: str,
    engine: str,
    concurrency: int | None,
    pool: str | None,
    slowdown: float,
    straggle: str,
    preload: str,
    metrics_port: int,
    metrics_addr: str,
    hostname: str | None,
    loglevel: str,
) -> None:
    """Run a worker that serves coded inference tasks (a Celery worker, or the batch engine)."""
    from codedfarm.models.registry import get_model_spec
    from codedfarm.stragglers import parse_straggler_spec
    from codedfarm.tasks.worker_state import WorkerOptions

    settings = settings_from_context()
    spec = parse_straggler_spec(straggle)
    if spec.per_batch:
        raise ConfigError(
            "--straggle fixed:... picks S tasks of a batch; give it per submit, not per worker"
        )
    if engine == "batch" and pool is not None:
        raise ConfigError("--pool is for --engine celery; the batch engine is one process")
    models = tuple(m for m in preload.split(",") if m)
    for name in models:
        get_model_spec(name)
    _check_device(device)
    options = WorkerOptions(device, slowdown, straggle, 1, models)
    os.environ.update(options.to_env())
    os.environ["CODEDFARM_REDIS_URL"] = settings.redis_url  # read by the Celery app
    if metrics_port:  # before prometheus_client is imported: pool children write sample files
        from codedfarm.monitoring.multiproc import prepare_multiprocess_dir

        samples = prepare_multiprocess_dir()
        atexit.register(shutil.rmtree, samples, True)
        from codedfarm.monitoring.worker_metrics import serve_worker_metrics

        serve_worker_metrics(metrics_port, metrics_addr)
    import torch  # noqa: F401 - imported before the fork so pool children share it

    from codedfarm.redis_conn import connect
    from codedfarm.tasks.app import app

    connect(settings).close()
    queue_list = queues or _queue_for_device(device)
    from codedfarm.tasks.app import survive_connection_loss
    from codedfarm.tasks.supervisor import supervise

    if engine == "batch":
        from codedfarm.tasks.batch_engine import serve

        names = [q for q in queue_list.split(",") if q]
        sys.exit(supervise(lambda: serve(app, names, concurrency or 32, hostname)))
    argv = [
        "worker",
        f"--queues={queue_list}",
        f"--concurrency={concurrency or 1}",
        f"--pool={pool or 'prefork'}",
        f"--loglevel={loglevel}",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    if hostname:
        argv.append(f"--hostname={hostname}")
    survive_connection_loss()
    sys.exit(supervise(lambda: app.worker_main(argv)))


@click.command()
@click.option("--name", default="default", show_default=True, help="Collector name (its inbox).")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    default=9808,
    show_default=True,
    help="Port of /metrics (0: none).",
)
@click.option("--metrics-addr", default="0.0.0.0", show_default=True)
def collector(name: str, metrics_port: int, metrics_addr: str) -> None:
    """Run the long-lived collector service (decodes batches submitted with --collector NAME)."""
    from codedfarm.coordinator.collector import Collector
    from codedfarm.monitoring.metrics import CollectorMetrics, serve_metrics
    from codedfarm.protocol import Keys
    from codedfarm.redis_conn import connect

    settings = settings_from_context()
    client = connect(settings)
    hooks = CollectorMetrics()
    if metrics_port:
        serve_metrics(metrics_port, metrics_addr)
    inbox = Keys(settings.key_prefix).inbox(name)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(f"collector {name!r} listening on {inbox}; metrics on :{metrics_port}", err=True)
    Collector(client, inbox, hooks=hooks).serve_forever(stop)


def load_batch_file(path: Path) -> np.ndarray:
    """A ``.npy`` file as an array; never unpickles."""
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path}: expected one .npy array, got an .npz archive")
    return array


@click.command()
@click.argument("input_file", metavar="INPUT.npy", type=click.Path(path_type=Path))
@click.option("--model", "-m", required=True, help="Model name (lenet5, linear, noop).")
@click.option(
    "--codec", default="spline", show_default=True, help="Codec spec, e.g. spline:lam_dec=auto."
)
@click.option(
    "-n", "n", type=int, default=None, help="Workers / coded inputs (default depends on the codec)."
)
@click.option("-s", "s", type=int, default=0, show_default=True, help="Stragglers to tolerate.")
@click.option(
    "--wait",
    "wait_for",
    type=int,
    default=None,
    help="Decode once this many results are in (default n - s).",
)
@click.option("--straggle", default=None, help="Straggler spec, e.g. fixed:S=4,delay=2.")
@click.option(
    "--deadline", type=float, default=None, help="Seconds; decode from what arrived, or time out."
)
@click.option("--queue", "queues", multiple=True, help="Worker queue (repeatable; round-robin).")
@click.option(
    "--collector",
    "collector_name",
    default=None,
    help="Use this collector service instead of collecting in-process.",
)
@click.option("--seed", type=int, default=None, help="Seed of the straggler draw.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Save predictions to this .npy file.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
def submit(
    input_file: Path,
    model: str,
    codec: str,
    n: int | None,
    s: int,
    wait_for: int | None,
    straggle: str | None,
    deadline: float | None,
    queues: tuple[str, ...],
    collector_name: str | None,
    seed: int | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Submit a batch (a .npy array of shape (K, *input_shape)) and print the result."""
    from codedfarm.coordinator.client import FarmClient
    from codedfarm.coordinator.dispatch import BatchSpec

    if input_file.suffix != ".npy":
        raise InputError(f"{input_file}: expected a .npy file")
    batch = load_batch_file(input_file)
    spec = BatchSpec(
        model=model,
        codec=codec,
        n=n,
        s=s,
        wait_for=wait_for,
        straggle=straggle,
        deadline=deadline,
        queues=queues or None,
        seed=seed,
    )
    with FarmClient(settings_from_context(), collector=collector_name) as client:
        result = client.submit(batch, spec)
    record = result.record
    if out is not None and result.predictions is not None:
        np.save(out, result.predictions)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
    else:
        click.echo(_summary(record, result.predictions, out))
    if result.predictions is None:
        sys.exit(1)


def _summary(record: Any, predictions: np.ndarray | None, out: Path | None) -> str:
    t = record.timings
    lines = [
        f"batch {record.batch}: {record.outcome}  ({record.codec}, model {record.model})",
        f"  k={record.k} n={record.n} s={record.s} wait_for={record.wait_for}; "
        f"results received {record.results_received}, used {len(record.workers_used)}",
        f"  timings ms: encode {t.encode * 1e3:.2f}  dispatch {t.dispatch * 1e3:.2f}  "
        f"wait {t.wait * 1e3:.1f}  decode {t.decode * 1e3:.2f}  "
        f"end-to-end {t.end_to_end * 1e3:.1f}",
    ]
    if record.slowed:
        shown = ", ".join(
            f"{d['index']}:{'fail' if d['fail'] else format(d['delay'], '.2f') + 's'}"
            for d in record.slowed[:12]
        )
        more = f" (+{len(record.slowed) - 12})" if len(record.slowed) > 12 else ""
        lines.append(f"  slowed tasks: {shown}{more}")
    if record.error:
        lines.append(f"  error: {record.error}")
    if predictions is not None:
        argmax = predictions.reshape(len(predictions), -1).argmax(-1).tolist()
        lines.append(f"  predictions {tuple(predictions.shape)}; argmax: {argmax[:20]}")
        if out is not None:
            lines.append(f"  saved to {out}")
    return "\n".join(lines)


def register_commands(group: click.Group) -> None:
    from codedfarm.local_commands import demo, scale

    for command in (worker, collector, submit, demo, scale):
        group.add_command(command)
