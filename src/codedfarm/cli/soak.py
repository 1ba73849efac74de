"""``codedfarm soak``: a bounded steady load (memory and keys over time), or with ``--chaos``
the same under injected faults."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from codedfarm.cli.options import (
    DynamicHelpOption,
    codec_help,
    engine_option,
    json_option,
    model_help,
    settings_from_context,
)

__all__ = ["soak"]


@click.command()
@click.option("--seconds", type=click.FloatRange(min=1), default=600.0, help="Run time.")
@click.option("--rate", type=click.FloatRange(min=0.1), default=5.0, help="Batches per second.")
@click.option(
    "--sample-every", type=click.FloatRange(min=0.5), default=10.0, help="Seconds between samples."
)
@engine_option("Worker engine of the soak's two workers.")
@click.option(
    "--model", "-m", default="noop", cls=DynamicHelpOption, help_fn=model_help("Model to serve")
)
@click.option(
    "--codec",
    default=None,
    metavar="SPEC",
    cls=DynamicHelpOption,
    help_fn=codec_help("Codec spec (default: the model's config.json, else {default})"),
)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("soak.json"), help="Report file."
)
@click.option(
    "--chaos", is_flag=True,
    help="Inject faults under load instead (worker and collector kills, a frozen worker, "
    "Redis restarts, poison messages; one every --every seconds) and check every batch.",
)  # fmt: skip
@click.option(
    "--every", type=click.FloatRange(min=0.5), default=4.0, help="--chaos: seconds between faults."
)
@json_option("the report")
def soak(
    seconds: float,
    rate: float,
    sample_every: float,
    engine: str,
    model: str,
    codec: str | None,
    out: Path,
    chaos: bool,
    every: float,
    as_json: bool,
) -> None:
    """A bounded steady load on a local farm: prints collector and worker RSS and Redis keys
    over time, and their growth from the first to the last third of the run.

    With --chaos: faults under load on a farm of both engines and a collector service; exits
    1 if any batch failed, timed out, was refused or decoded to a wrong answer, or any
    process died."""
    if chaos:
        _chaos(seconds, every, out, as_json)
        return
    from codedfarm.local.soak import SoakConfig, run_soak, write_report

    config = SoakConfig(seconds=seconds, rate=rate, sample_every=sample_every, engine=engine,
                        model=model, codec=codec)  # fmt: skip
    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    report = run_soak(config, settings_from_context(), echo=echo)
    write_report(report, out)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"outcomes: {report.outcomes}")
    for attr in ("collector_rss_mb", "workers_rss_mb", "redis_keys", "redis_memory_mb"):
        click.echo(f"growth {attr}: {report.growth(attr):+.2f}")
    click.echo(f"samples in {out}")


def _chaos(seconds: float, every: float, out: Path, as_json: bool) -> None:
    from codedfarm.local.chaos import ChaosConfig, run_chaos

    echo = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    report = run_chaos(ChaosConfig(seconds=seconds, every=every), settings_from_context(), echo)
    data = report.to_dict()
    out.write_text(json.dumps(data, indent=2))
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(
            f"batches {report.batches}: {dict(report.outcomes)}; refused {len(report.refused)}; "
            f"sent again after a lost Redis {report.retried}; faults {len(report.faults)}; "
            f"worst replay error {report.worst_replay_error:.1e}; "
            f"dead processes {report.dead_processes}"
        )
        click.echo(f"report in {out}")
    bad = sum(n for o, n in report.outcomes.items() if o not in ("decoded", "deadline_decoded"))
    if bad or report.refused or report.replay_mismatches or report.dead_processes:
        sys.exit(1)
