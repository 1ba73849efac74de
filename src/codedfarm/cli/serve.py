"""``codedfarm serve`` (the Open Inference Protocol over HTTP, coding single requests) and
``codedfarm loadgen`` (an open-loop load on it)."""

from __future__ import annotations

from pathlib import Path

import click

from codedfarm.cli.options import (
    DynamicHelpOption,
    SettingOption,
    codec_help,
    json_option,
    model_repository_option,
    queues_option,
    redundancy_option,
    settings_from_context,
)

__all__ = ["loadgen", "serve"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@queues_option("Queues the coding groups go to (default: CODEDFARM_QUEUES).", setting=True)
@click.option(
    "--group-size", "-k", type=click.IntRange(min=1), default=8, show_default=True,
    help="Requests' rows coded together (K); a group forms when K rows wait.",
)  # fmt: skip
@click.option(
    "--max-queue-delay", type=click.FloatRange(min=0), default=20.0, show_default=True,
    help="Milliseconds the oldest waiting row waits for a full group before a partial one.",
)  # fmt: skip
@click.option(
    "--max-queue", type=click.IntRange(min=1), default=512, show_default=True,
    help="Rows that may wait per model; beyond it requests get 503 at once.",
)  # fmt: skip
@click.option(
    "--groups-in-flight", type=click.IntRange(min=1), default=16, show_default=True,
    help="Coding groups in the farm at once (farm clients, each a thread).",
)  # fmt: skip
@click.option(
    "--codec", default=None, metavar="SPEC", cls=DynamicHelpOption,
    help_fn=codec_help("Codec of models whose config.json sets none (default: {default}, "
                       "see docs/serve.md)", default="spline:systematic=true"),
)  # fmt: skip
@click.option("-n", "n", type=int, default=None,
              help="N of models whose config.json sets none (default: the codec's).")  # fmt: skip
@click.option("-s", "--stragglers", "s", type=int, default=None,
              help="S of models whose config.json sets none (default: 0).")  # fmt: skip
@redundancy_option(
    "Tasks per row for models whose config.json sets none: a group of r rows "
    "gets r + max(1, ceil((R-1) r)) tasks and tolerates losing all but r of "
    "them (-n, when given, wins over it; default: 1.5 unless -n is given)."
)
@click.option("--deadline", type=float, default=None, cls=SettingOption, setting="deadline",
              read_env=False, help="Seconds per group, for models whose config.json sets none "
              "(default: CODEDFARM_DEADLINE).")  # fmt: skip
@click.option(
    "--wait", "wait_for", type=click.IntRange(min=1), default=None,
    help="Results a group decodes at (default: N - S; for replication K, the first copy "
    "of each input).",
)  # fmt: skip
@click.option(
    "--straggle", default=None,
    help="Inject stragglers into every coding group (experiments), e.g. fixed:S=4,delay=0.5.",
)  # fmt: skip
@click.option(
    "--hedge-after", type=click.FloatRange(min=0, min_open=True), default=None, metavar="MS",
    help="Hedged requests (The Tail at Scale): re-send a group's task not back after MS "
    "milliseconds; the first copy wins (default: none). The baseline to --codec uncoded.",
)  # fmt: skip
@click.option(
    "--straggle-seed", type=int, default=None,
    help="Seed of the injected stragglers: group i draws with seed + i, so runs compare "
    "on the same draws (default: fresh draws).",
)  # fmt: skip
@click.option(
    "--access-log/--no-access-log", default=False, show_default=True,
    help="Log a line per HTTP request (client, method, path, status, milliseconds, request "
    "id) at info level on codedfarm.access.",
)  # fmt: skip
@model_repository_option()
def serve(
    host: str,
    port: int,
    queues: tuple[str, ...],
    group_size: int,
    max_queue_delay: float,
    max_queue: int,
    groups_in_flight: int,
    codec: str | None,
    n: int | None,
    s: int | None,
    redundancy: float | None,
    deadline: float | None,
    wait_for: int | None,
    straggle: str | None,
    straggle_seed: int | None,
    hedge_after: float | None,
    access_log: bool,
    model_repository: Path | None,
) -> None:
    """Serve the farm's models over HTTP with the Open Inference Protocol (KServe v2)."""
    from codedfarm.server.app import ServeConfig
    from codedfarm.server.app import serve as run_server
    from codedfarm.server.batcher import BatcherConfig

    batcher = BatcherConfig(group_size, max_queue_delay / 1e3, max_queue, groups_in_flight)
    config = ServeConfig(host=host, port=port, batcher=batcher, codec=codec, n=n,
                         s=s, redundancy=redundancy, deadline=deadline, queues=queues,
                         wait_for=wait_for,
                         straggle=straggle, straggle_seed=straggle_seed,
                         hedge_after=None if hedge_after is None else hedge_after / 1e3,
                         clients=groups_in_flight, access_log=access_log)  # fmt: skip
    run_server(settings_from_context(model_repository=model_repository), config)


@click.command()
@click.option("--url", default="http://127.0.0.1:8000", show_default=True,
              help="The server (codedfarm serve, or any KServe v2 server).")  # fmt: skip
@click.option("--model", "-m", default="lenet5", show_default=True, help="Model to call.")
@click.option("--rate", type=click.FloatRange(min=0, min_open=True), default=100.0,
              show_default=True, help="Requests per second (Poisson arrivals).")  # fmt: skip
@click.option("--seconds", type=click.FloatRange(min=0, min_open=True), default=60.0,
              show_default=True, help="How long requests keep arriving.")  # fmt: skip
@click.option("--rows", type=click.IntRange(min=1), default=1, show_default=True,
              help="Inputs per request.")  # fmt: skip
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), default=30.0,
              show_default=True, help="Seconds a request may take.")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True)
@json_option("the report")
def loadgen(url: str, model: str, rate: float, seconds: float, rows: int, timeout: float,
            seed: int, as_json: bool) -> None:  # fmt: skip
    """Open-loop load on a server: per-request latency percentiles, errors, achieved rate."""
    import json
    import sys

    from codedfarm.local.loadgen import LoadConfig, run_load

    config = LoadConfig(url=url, model=model, rate=rate, seconds=seconds, rows=rows,
                        timeout=timeout, seed=seed)  # fmt: skip
    with click.progressbar(length=int(rate * seconds), label="requests", file=sys.stderr,
                           show_pos=True) as bar:  # fmt: skip
        report = run_load(config, bar.update)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    lat = report.latency_ms
    click.echo(f"sent {report.sent} requests in {seconds:g} s ({report.offered_rate:.1f}/s "
               f"offered), {report.ok} answered ({report.achieved_rate:.1f}/s)")  # fmt: skip
    if lat:
        click.echo("latency ms: " + "  ".join(f"{k} {v:.1f}" for k, v in lat.items()))
    click.echo("errors: " + (", ".join(f"{k}: {v}" for k, v in report.errors.items()) or "none"))
