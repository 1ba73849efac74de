"""Farm commands: ``worker``, ``collector`` and ``submit``."""

from __future__ import annotations

import json
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import click
import numpy as np

from codedfarm.cli.options import (
    DynamicHelpOption,
    SettingOption,
    codec_help,
    deprecated_alias,
    engine_option,
    json_option,
    metrics_options,
    model_help,
    model_repository_option,
    preload_option,
    queues_option,
    redundancy_option,
    settings_from_context,
)
from codedfarm.errors import ConfigError, InputWarning
from codedfarm.logs import LOG_LEVELS

__all__ = ["collector", "submit", "worker"]


@click.command()
@queues_option("Queues to consume (repeatable; default: from --device: cpu, gpu0, gpu1, ...).")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda or cuda:N.")
@engine_option(
    "batch: one process that serves many tasks per Redis round trip and per forward pass; "
    "celery: a Celery worker with Celery's pools. Same queues, messages and late acks; both "
    "answer celery inspect/control and show in Flower."
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
    "-P",
    type=click.Choice(["prefork", "threads", "solo"]),
    default=None,
    help="Celery pool (default prefork); not for --engine batch.",
)
@click.option(
    "--slowdown",
    type=click.FloatRange(min=1.0),
    default=1.0,
    help="A persistently slow node: multiply compute time by this.",
)
@click.option(
    "--straggle",
    default="none",
    help="Default straggler spec for tasks whose batch gives none: none, exp:shift=S,rate=R, "
    "pareto:scale=S,alpha=A, fail:p=P, late:p=P,delay=D, joined with +.",
)
@click.option(
    "--corrupt",
    default="none",
    metavar="MODE:p=P",
    help="Testing facility: make a fraction P of this worker's outputs wrong, large (noise "
    "of 100x the output's spread), subtle (of its spread) or swap (its entries rotated: another "
    "class's answer), e.g. large:p=0.5. For "
    "testing byzantine decoding; never in production.",
)
@preload_option("Models to load in each process at start (repeatable)")
@click.option(
    "--torch-threads", type=click.IntRange(min=1), default=1, help="torch threads per process."
)
@metrics_options(0, "every pool process")
@click.option(
    "--hostname", "-n", default=None, help="Node name (as Celery's -n; default celery@HOST)."
)
@click.option(
    "--events",
    "-E",
    is_flag=True,
    default=False,
    help="Send task events (as Celery's -E) for `celery events` and Flower; worker "
    "heartbeats are sent either way.",
)
@model_repository_option()
@click.option(
    "--liveness-timeout",
    type=click.FloatRange(min=2.0),
    default=15.0,
    help="Seconds the engine's loop may stand still (longer while a task may legitimately "
    "run) before /livez fails and the worker restarts its engine (docs/operations.md).",
)
@click.option(
    "--loglevel",
    "-l",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=None,
    help="This worker's log level, Celery's spelling (default: codedfarm --log-level; "
    "debug logs a line per task).",
)
def worker(
    queues: tuple[str, ...],
    device: str,
    engine: str,
    concurrency: int | None,
    pool: str | None,
    slowdown: float,
    straggle: str,
    corrupt: str,
    preload: tuple[str, ...],
    torch_threads: int,
    metrics_port: int,
    metrics_addr: str,
    hostname: str | None,
    events: bool,
    model_repository: Path | None,
    liveness_timeout: float,
    loglevel: str | None,
) -> None:
    """Run a worker that serves coded inference tasks (the batch engine, or a Celery worker)."""
    from codedfarm.worker import WorkerOptions, run_worker

    options = WorkerOptions(
        queues=queues, engine=engine, concurrency=concurrency, pool=pool, device=device,
        slowdown=slowdown, straggle=straggle, preload=preload, torch_threads=torch_threads,
        metrics_port=metrics_port, metrics_addr=metrics_addr, hostname=hostname,
        loglevel=loglevel and loglevel.lower(), events=events, corrupt=corrupt,
        liveness_timeout=liveness_timeout,
    )  # fmt: skip
    sys.exit(run_worker(settings_from_context(model_repository=model_repository), options))


@click.command()
@click.option("--name", default="default", help="Collector name (its inbox).")
@metrics_options(9808, "the collector")
def collector(name: str, metrics_port: int, metrics_addr: str) -> None:
    """Run the long-lived collector service (decodes batches submitted with --collector NAME)."""
    from codedfarm.coordinator.service import run_collector
    from codedfarm.signals import stop_on_signals

    stop = threading.Event()
    stop_on_signals(stop)
    run_collector(settings_from_context(), name, metrics_port, metrics_addr, stop)


@click.command()
@click.argument("input_file", metavar="INPUT.npy", type=click.Path(path_type=Path))
@click.option(
    "--model", "-m", required=True, cls=DynamicHelpOption, help_fn=model_help("Model to run")
)
@click.option(
    "--codec", default=None, metavar="SPEC", cls=DynamicHelpOption,
    help_fn=codec_help("Codec spec (default: the model's config.json, else {default})"),
)  # fmt: skip
@click.option(
    "-n", "n", type=int, default=None, help="Workers / coded inputs (default depends on the codec)."
)
@click.option(
    "-s", "--stragglers", "s", type=int, default=None,
    help="Stragglers to tolerate, S (default: the model's config.json, else 0).",
)  # fmt: skip
@redundancy_option(
    "Tasks per input instead of -n: K inputs get K + max(1, ceil((R-1) K)) tasks and the "
    "batch tolerates losing all but K of them (default: the model's config.json, else none)."
)
@click.option(
    "--wait",
    "wait_for",
    type=int,
    default=None,
    help="Decode once this many results are in (default n - s).",
)
@click.option(
    "--wait-policy",
    type=click.Choice(["own", "results"]),
    default="own",
    show_default=True,
    help="own: also return as soon as every row's own result is in (systematic codes, "
    "uncoded, replication: exact, nothing decoded); results: wait for --wait results.",
)
@click.option("--straggle", default=None, help="Straggler spec, e.g. fixed:S=4,delay=2.")
@click.option(
    "--deadline",
    type=float,
    default=None,
    cls=SettingOption,
    setting="deadline",
    read_env=False,
    help="Seconds; decode from what arrived, or time out (default: the model's config.json, "
    "else CODEDFARM_DEADLINE, 30).",
)
@queues_option(
    "Worker queues (repeatable; tasks go round-robin; default CODEDFARM_QUEUES).", setting=True
)
@deprecated_alias("--queue", "-Q/--queues", "queues", multiple=True)
@click.option(
    "--collector",
    "collector_name",
    default=None,
    cls=SettingOption,
    setting="collector",
    read_env=False,
    help="Use this collector service instead of collecting in-process "
    "(default: CODEDFARM_COLLECTOR; unset: in-process).",
)
@click.option("--seed", type=int, default=None, help="Seed of the straggler draw.")
@click.option(
    "--retries", type=click.IntRange(min=0), default=1,
    help="Send a batch lost with Redis (a restart, a failover) again, within its deadline.",
)  # fmt: skip
@click.option(
    "--wait-for-workers", is_flag=True,
    help="Send the batch even if no live worker serves a queue (it waits there until the "
    "deadline); by default such a batch is refused at once with exit status 3.",
)  # fmt: skip
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    default=None,
    help="Save predictions to this file (.npy format, written at exactly this path; checked "
    "before the batch runs).",
)
@model_repository_option()
@json_option("the batch record")
def submit(
    input_file: Path,
    model: str,
    codec: str | None,
    n: int | None,
    s: int | None,
    redundancy: float | None,
    wait_for: int | None,
    wait_policy: str,
    straggle: str | None,
    deadline: float | None,
    queues: tuple[str, ...],
    collector_name: str | None,
    seed: int | None,
    retries: int,
    wait_for_workers: bool,
    out: Path | None,
    model_repository: Path | None,
    as_json: bool,
) -> None:
    """Submit a batch (a .npy array of shape (K, *input_shape)) and print the result.

    Inputs are float32. A uint8 batch (images in 0..255) is scaled to [0, 1] by /255 with a
    warning; other integer or bool batches are refused: convert them as your model expects.

    Exit status: 0 decoded, 1 the batch failed or timed out, 2 bad input or usage, 3 the
    farm is unavailable (Redis, a live worker on a queue, the collector)."""
    from codedfarm.coordinator import BatchSpec, FarmClient
    from codedfarm.coordinator.batch_file import (
        check_output_path,
        load_batch_file,
        save_predictions,
    )

    if out is not None:
        check_output_path(out)
    batch = load_batch_file(input_file)
    spec = BatchSpec(
        model=model,
        codec=codec,
        n=n,
        s=s,
        redundancy=redundancy,
        wait_for=wait_for,
        wait=wait_policy,
        straggle=straggle,
        deadline=deadline,
        queues=queues or None,
        seed=seed,
    )
    settings = settings_from_context(model_repository=model_repository)
    client = FarmClient(
        settings, collector=collector_name, wait_for_workers=wait_for_workers, retries=retries
    )
    with client, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", InputWarning)
        result = client.submit(batch, spec)
    for warning in caught:
        if issubclass(warning.category, InputWarning):
            click.echo(f"warning: {warning.message}", err=True)
    record = result.record
    if out is not None and result.predictions is not None:
        save_predictions(out, result.predictions)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2))
    else:
        click.echo(_summary(record, result.predictions, out))
    if result.predictions is None:
        sys.exit(1)


def _summary(record: Any, predictions: np.ndarray | None, out: Path | None) -> str:
    t = record.timings
    lines = [
        f"batch {record.batch}: {record.outcome}  ({record.codec}, model {record.model}"
        + (f"@{record.model_version})" if record.model_version is not None else ")"),
        f"  k={record.k} n={record.n} s={record.s} wait_for={record.wait_for}; "
        f"results received {record.results_received}, used {len(record.workers_used)}",
        f"  rows: {len(record.rows_own)} answered from their own result, "
        f"{len(record.rows_decoded)} decoded",
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
    if record.rejected:
        shown = ", ".join(f"{d['index']} ({d['worker'] or '?'})" for d in record.rejected)
        lines.append(f"  rejected as wrong (byzantine decode): {shown}")
    if record.error:
        lines.append(f"  error: {record.error}")
    if predictions is not None:
        argmax = predictions.reshape(len(predictions), -1).argmax(-1).tolist()
        lines.append(f"  predictions {tuple(predictions.shape)}; argmax: {argmax[:20]}")
        if out is not None:
            lines.append(f"  saved to {out}")
    return "\n".join(lines)


@click.command()
@click.argument("url", envvar="CODEDFARM_PROBE_URL", default="http://127.0.0.1:9809/readyz")
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=3.0,
              help="Seconds to wait for the answer.")  # fmt: skip
def probe(url: str, timeout: float) -> None:
    """Ask a health endpoint (a healthcheck's command): exit 0 when it answers 200, else 1.

    URL defaults to CODEDFARM_PROBE_URL, else a worker's /readyz on this host. Workers and
    the collector serve /livez and /readyz on their metrics port, the server on its own."""
    import urllib.error
    import urllib.request

    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"the probe URL must start with http:// or https://, got {url!r}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            click.echo(response.read().decode(errors="replace").strip())
    except urllib.error.HTTPError as exc:
        click.echo(exc.read().decode(errors="replace").strip() or str(exc), err=True)
        sys.exit(1)
    except OSError as exc:
        click.echo(f"cannot reach {url}: {exc}", err=True)
        sys.exit(1)
