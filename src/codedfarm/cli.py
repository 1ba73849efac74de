"""The ``codedfarm`` command line: a thin click layer over the package."""

from __future__ import annotations

import dataclasses
import json
import sys
from typing import Any

import click

from codedfarm.errors import CodedFarmError

__all__ = ["cli", "main"]


class _Group(click.Group):
    """Turns every :class:`CodedFarmError` into a one-line message and exit code 2."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CodedFarmError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(cls=_Group, context_settings={"auto_envvar_prefix": "CODEDFARM"})
@click.version_option(package_name="codedfarm")
@click.option(
    "--redis-url",
    envvar="CODEDFARM_REDIS_URL",
    default=None,
    help="Redis URL (redis://, rediss:// for TLS; user:password@ for auth). "
    "Default: CODEDFARM_REDIS_URL or redis://127.0.0.1:6379/0.",
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None) -> None:
    """codedfarm: straggler-resilient prediction serving with coded computing.

    Every option can also be set with an environment variable CODEDFARM_<COMMAND>_<OPTION>
    (e.g. CODEDFARM_SUBMIT_MODEL); farm-wide settings use CODEDFARM_<SETTING>
    (CODEDFARM_REDIS_URL, CODEDFARM_QUEUES, CODEDFARM_DEADLINE, CODEDFARM_KEY_TTL, ...).
    """
    ctx.obj = {"redis_url": redis_url}


def _int_list(value: str) -> list[int]:
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None


@cli.command()
@click.option("-k", type=int, default=8, show_default=True, help="Inputs per batch.")
@click.option("-n", type=int, default=24, show_default=True, help="Workers (coded inputs).")
@click.option(
    "-s",
    "--stragglers",
    default="0,4,8",
    show_default=True,
    help="Comma-separated straggler counts S.",
)
@click.option("--codec", "codecs", multiple=True, help="Codec spec (repeatable).")
@click.option(
    "--model",
    type=click.Choice(["tanh", "linear"]),
    default="tanh",
    show_default=True,
    help="Toy model: smooth nonlinear, or linear (where mds is exact).",
)
@click.option("--trials", type=int, default=50, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON.")
def compare(
    k: int,
    n: int,
    stragglers: str,
    codecs: tuple[str, ...],
    model: str,
    trials: int,
    seed: int,
    as_json: bool,
) -> None:
    """Compare the codecs on a toy model (a smooth random tanh network, or a linear map).

    Random batches are encoded, S random workers' results are dropped, and the rest are
    decoded; the table shows the decode MSE against the model's true outputs.
    """
    from codedfarm.evaluation.toy import DEFAULT_CODECS, compare_codecs

    rows = compare_codecs(
        codecs or DEFAULT_CODECS,
        k=k,
        n=n,
        stragglers=_int_list(stragglers),
        trials=trials,
        seed=seed,
        model=model,
    )
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    click.echo(f"{model} toy model, k={k}, {trials} random batches per row; MSE vs true outputs")
    click.echo(f"{'codec':34} {'n':>4} {'S':>4} {'decoded':>8} {'MSE':>11} {'max|err|':>10}")
    for r in rows:
        mse = f"{r.mse:11.3e}" if r.decoded else f"{'-':>11}"
        worst = f"{r.max_abs_error:10.2e}" if r.decoded else f"{'-':>10}"
        decoded = f"{r.decoded}/{r.trials}"
        click.echo(f"{r.codec:34} {r.n:4d} {r.stragglers:4d} {decoded:>8} {mse} {worst}")


from codedfarm.farm_commands import register_commands  # noqa: E402

register_commands(cli)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="codedfarm"))
