"""The ``codedfarm`` command line: a thin click layer over the package."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import click

from codedfarm.errors import CodedFarmError
from codedfarm.farm_commands import engine_option

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


@cli.command(name="eval")
@click.option(
    "--models", default=None, help="Comma-separated models (default lenet5,repvgg,vit_small)."
)
@click.option(
    "--dataset", default="digits", show_default=True, help="digits, mnist, cifar10 or imagenet."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data set folder (imagenet: an ImageFolder).",
)
@click.option("-k", type=int, default=None, help="Inputs per batch (default 20).")
@click.option("-n", type=int, default=None, help="Workers (default 100).")
@click.option("--stragglers", default=None, help="Comma-separated S values (default 0,10,...,60).")
@click.option("--batches", type=int, default=None, help="Held-out batches per model.")
@click.option("--patterns", type=int, default=None, help="Straggler patterns per batch and S.")
@click.option("--quick", is_flag=True, help="A small run: LeNet5, K=8, N=40.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("eval-results"), show_default=True
)
def evaluate(
    models: str | None,
    dataset: str,
    data_dir: Path | None,
    k: int | None,
    n: int | None,
    stragglers: str | None,
    batches: int | None,
    patterns: int | None,
    quick: bool,
    seed: int,
    out: Path,
) -> None:
    """Measure decode fidelity (MSE, RelAcc) of every codec on real models, the lambda sweep,
    convergence in N, and coded-sample pictures. Needs no Redis.

    Writes results.json, fidelity.csv, table.md (NeRCC's Table 1) and PNG plots to --out.
    """
    from codedfarm.evaluation.runner import EvalConfig, run_evaluation
    from codedfarm.settings import Settings

    config = EvalConfig.quick() if quick else EvalConfig()
    changes: dict[str, Any] = {"dataset": dataset, "data_dir": data_dir, "seed": seed}
    if models:
        changes["models"] = tuple(m.strip() for m in models.split(",") if m.strip())
    for name, value in (("k", k), ("n", n), ("batches", batches), ("patterns", patterns)):
        if value is not None:
            changes[name] = value
    if stragglers:
        changes["stragglers"] = tuple(_int_list(stragglers))
    config = dataclasses.replace(config, **changes)
    config.validate()
    from codedfarm.models.registry import get_model_spec

    for name in config.models:
        get_model_spec(name)
    units = len(config.models) * (config.tune_batches * len(config.lam_enc) + config.batches * 8)
    with click.progressbar(length=units, label="evaluating", file=sys.stderr) as bar:
        result = run_evaluation(
            config,
            out,
            Settings.from_env().cache_dir,
            echo=lambda line: click.echo("\n" + line, err=True),
            progress=bar.update,
        )
    click.echo((out / "table.md").read_text())
    for model, s in result["summary"]["models"].items():
        click.echo(
            f"{model}: tuned spline / berrut MSE = {s['tuned_over_berrut']:.3f} (target <= 0.77; "
            f"mean of per-S ratios {s['tuned_over_berrut_per_s_mean']:.3f}); "
            f"auto / best fixed lam_dec = {s['auto_over_best_fixed']:.3f} (target <= 1.05)"
        )
    slope = result["summary"]["noiseless_spline_slope"]
    click.echo(f"noiseless smooth-function slope of log MSE vs log N (spline): {slope:.2f} "
               "(target <= -2.5)")  # fmt: skip
    click.echo(f"results in {out}/ ({result['seconds']} s)")


@cli.command()
@click.option("-k", type=int, default=8, show_default=True, help="Inputs per batch.")
@click.option(
    "-n", type=int, default=24, show_default=True, help="Workers (equal for every scheme)."
)
@click.option("-s", type=int, default=4, show_default=True, help="Stragglers the codes tolerate.")
@click.option("--batches", type=int, default=100, show_default=True, help="Batches per scheme.")
@click.option(
    "--compute",
    type=float,
    default=0.05,
    show_default=True,
    help="Simulated compute per task, seconds.",
)
@click.option(
    "--slow-factor",
    type=float,
    default=10.0,
    show_default=True,
    help="Stragglers take this many times the compute.",
)
@click.option(
    "--stragglers",
    default="none,fixed,exp",
    show_default=True,
    help="Straggler models: none, fixed, exp, pareto, fail, slownode.",
)
@click.option(
    "--schemes",
    default=",".join(["uncoded", "replication", "hedged", "mds", "berrut", "spline"]),
    show_default=True,
)
@click.option("--quick", is_flag=True, help="20 batches per scheme.")
@engine_option("Worker engine of the farm's two workers.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("bench-results"), show_default=True
)
def bench(
    k: int,
    n: int,
    s: int,
    batches: int,
    compute: float,
    slow_factor: float,
    stragglers: str,
    schemes: str,
    quick: bool,
    engine: str,
    out: Path,
) -> None:
    """Latency of uncoded, replication, hedged requests and the coded schemes on a live local
    farm at equal worker count, under straggler models. Writes bench.json, bench.md and
    latency_cdf.png to --out."""
    from codedfarm.evaluation.latency import BenchConfig, run_bench
    from codedfarm.settings import Settings

    config = BenchConfig(
        k=k,
        n=n,
        s=s,
        batches=20 if quick else batches,
        compute=compute,
        slow_factor=slow_factor,
        stragglers=tuple(x.strip() for x in stragglers.split(",") if x.strip()),
        schemes=tuple(x.strip() for x in schemes.split(",") if x.strip()),
        engine=engine,
    )
    config.validate()
    units = len(config.stragglers) * len(config.schemes) * config.batches
    with click.progressbar(length=units, label="benchmarking", file=sys.stderr) as bar:
        report = run_bench(config, out, Settings.from_env(), echo=lambda _: None,
                           progress=bar.update)  # fmt: skip
    click.echo((out / "bench.md").read_text())
    click.echo(f"results in {out}/ (bench.json, bench.md, latency_cdf.png); "
               f"{len(report['rows'])} rows")  # fmt: skip


@cli.command()
@click.option("--seconds", type=click.FloatRange(min=1), default=600.0, show_default=True)
@click.option(
    "--rate",
    type=click.FloatRange(min=0.1),
    default=5.0,
    show_default=True,
    help="Batches per second.",
)
@click.option("--sample-every", type=click.FloatRange(min=0.5), default=10.0, show_default=True)
@engine_option("Worker engine of the soak's two workers.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=Path("soak.json"), show_default=True
)
def soak(seconds: float, rate: float, sample_every: float, engine: str, out: Path) -> None:
    """A bounded steady load on a local farm: prints collector and worker RSS and Redis keys
    over time, and their growth from the first to the last third of the run."""
    from codedfarm.evaluation.soak import SoakConfig, run_soak, write_report
    from codedfarm.settings import Settings

    config = SoakConfig(seconds=seconds, rate=rate, sample_every=sample_every, engine=engine)
    report = run_soak(config, Settings.from_env(), echo=click.echo)
    write_report(report, out)
    click.echo(f"outcomes: {report.outcomes}")
    for attr in ("collector_rss_mb", "workers_rss_mb", "redis_keys", "redis_memory_mb"):
        click.echo(f"growth {attr}: {report.growth(attr):+.2f}")
    click.echo(f"samples in {out}")


@cli.command()
@click.option(
    "--train", is_flag=True, help="Train (and cache) the offline models that are missing."
)
def models(train: bool) -> None:
    """List the model zoo, with the test accuracy of cached weights."""
    import json as json_module

    from codedfarm.models.registry import MODELS
    from codedfarm.models.training import TRAINABLE, training_metadata
    from codedfarm.settings import Settings

    cache = Settings.from_env().cache_dir
    for name, spec in MODELS.items():
        shape = "x".join(map(str, spec.input_shape))
        status = ""
        if name in TRAINABLE:
            meta_file = cache / f"{name}-digits.json"
            if train and not meta_file.exists():
                training_metadata(name, cache)
            if meta_file.exists():
                meta = json_module.loads(meta_file.read_text())
                status = (f"digits test accuracy {meta['test_accuracy']:.3f} "
                          f"({meta['train_seconds']} s to train)")  # fmt: skip
            else:
                status = "not trained yet (trains on first use, or run with --train)"
        click.echo(f"{name:10} {shape:>10} -> {spec.num_outputs:<5} {spec.description}")
        if status:
            click.echo(f"{'':10} {status}")


from codedfarm.farm_commands import register_commands  # noqa: E402

register_commands(cli)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="codedfarm"))
