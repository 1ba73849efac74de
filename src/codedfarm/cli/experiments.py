"""Offline experiments: ``compare`` (codecs on a toy model) and ``eval`` (fidelity on real
models). Neither needs Redis."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from codedfarm.cli.options import (
    DynamicHelpOption,
    codec_help,
    codecs_option,
    deprecated_alias,
    json_option,
    model_help,
    model_repository_option,
    settings_from_context,
    split_commas,
)
from codedfarm.errors import ConfigError

if TYPE_CHECKING:
    from codedfarm.evaluation.degraded import DegradedConfig
    from codedfarm.evaluation.runner import EvalConfig

__all__ = ["compare", "evaluate"]


def _ints(values: tuple[str, ...], option: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in values)
    except ValueError as exc:
        raise ConfigError(f"{option} takes integers, got {', '.join(values)}") from exc


@click.command()
@click.option("-k", type=int, default=8, help="Inputs per batch.")
@click.option("-n", type=int, default=24, help="Workers (coded inputs).")
@click.option(
    "-s", "--stragglers", "stragglers", multiple=True, callback=split_commas,
    default=("0", "4", "8"), metavar="S[,S...]", help="Straggler counts S (repeatable).",
)  # fmt: skip
@codecs_option(codec_help("Codec specs (repeatable; default: a set of every kind)"))
@click.option(
    "--toy",
    type=click.Choice(["tanh", "linear"]),
    default="tanh",
    help="Toy model: smooth nonlinear, or linear (where mds is exact).",
)
@deprecated_alias("--model", "--toy", "toy")
@click.option("--trials", type=int, default=50, help="Random batches per row.")
@click.option("--seed", type=int, default=0, help="Seed of the batches and straggler draws.")
@json_option("the rows")
def compare(
    k: int,
    n: int,
    stragglers: tuple[str, ...],
    codecs: tuple[str, ...],
    toy: str,
    trials: int,
    seed: int,
    as_json: bool,
) -> None:
    """Compare the codecs on a toy model (a smooth random tanh network, or a linear map).

    Random batches are encoded, S random workers' results are dropped, and the rest are
    decoded; the table shows the decode MSE against the model's true outputs.
    """
    from codedfarm.evaluation.compare import DEFAULT_CODECS, compare_codecs

    rows = compare_codecs(
        codecs or DEFAULT_CODECS,
        k=k,
        n=n,
        stragglers=_ints(stragglers, "-s/--stragglers"),
        trials=trials,
        seed=seed,
        model=toy,
    )
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
        return
    click.echo(f"{toy} toy model, k={k}, {trials} random batches per row; MSE vs true outputs")
    click.echo(f"{'codec':34} {'n':>4} {'S':>4} {'decoded':>8} {'MSE':>11} {'max|err|':>10}")
    for r in rows:
        mse = f"{r.mse:11.3e}" if r.decoded else f"{'-':>11}"
        worst = f"{r.max_abs_error:10.2e}" if r.decoded else f"{'-':>10}"
        decoded = f"{r.decoded}/{r.trials}"
        click.echo(f"{r.codec:34} {r.n:4d} {r.stragglers:4d} {decoded:>8} {mse} {worst}")


@click.command(name="eval")
@click.option(
    "--model", "-m", "models", multiple=True, callback=split_commas, metavar="MODEL[,MODEL...]",
    cls=DynamicHelpOption,
    help_fn=model_help("Models (repeatable; default lenet5, repvgg, vit_small)"),
)  # fmt: skip
@deprecated_alias("--models", "-m/--model", "models")
@click.option(
    "--dataset", default="digits", help="digits, mnist, cifar10 or imagenet (an ImageFolder)."
)
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path),
    default=None,
    help="Data set folder (imagenet: an ImageFolder).",
)
@click.option(
    "-k", "k", multiple=True, callback=split_commas, metavar="K[,K...]",
    help="Inputs per batch (default 20); with --decoded-rows the group sizes K (repeatable; "
    "default 8); with --degraded the rows per parity task (default 2,3,4).",
)  # fmt: skip
@click.option("-n", type=int, default=None, help="Workers (default 100).")
@click.option(
    "-s", "--stragglers", "stragglers", multiple=True, callback=split_commas, metavar="S[,S...]",
    help="Straggler counts S (repeatable; default 0,10,...,60).",
)  # fmt: skip
@click.option(
    "--batches", type=int, default=None,
    help="Held-out batches per model (default 12; quick 3); with --decoded-rows per model and K.",
)  # fmt: skip
@click.option(
    "--patterns", type=int, default=None,
    help="Straggler patterns per batch and S (default 8; quick 3); with --decoded-rows the "
    "draws per batch of each number of rows or tasks lost.",
)  # fmt: skip
@click.option(
    "--output-space", type=click.Choice(["probs", "logits"]), default="probs", show_default=True,
    help="What workers return: probs (the network with its softmax, NeRCC's setting) or logits.",
)  # fmt: skip
@click.option(
    "--wrong-results", "corrupt", default=None, metavar="A[,A...]",
    help="Wrong results A for the wrong-results table (K=8, n=24, S=4; default 0,1,2).",
)  # fmt: skip
@click.option(
    "--byzantine", type=click.IntRange(min=1), default=None,
    help="A the byzantine decoder is built for in that table (default 2).",
)  # fmt: skip
@click.option(
    "--decoded-rows", is_flag=True,
    help="Instead of the fidelity suite: top-1 accuracy of decoded rows against the "
    "redundancy budget R (systematic codes; rows lost, and 1/5/10% stragglers); default "
    "models lenet5, repvgg (docs/redundancy.md).",
)  # fmt: skip
@click.option(
    "--redundancy", "redundancy", multiple=True, callback=split_commas, metavar="R[,R...]",
    help="Redundancy budgets R of --decoded-rows, tasks per row as the server's --redundancy "
    "(repeatable; default 1.25,1.5,2); implies --decoded-rows.",
)  # fmt: skip
@click.option(
    "--degraded", is_flag=True,
    help="Instead of the fidelity suite: ParM's degraded mode against systematic berrut and "
    "spline: k rows (-k) and one parity task (n = k+1), one row's own result lost, and 1/5/10% "
    "of tasks lost; default models lenet5, repvgg, vit_small. Trains the parity models it "
    "does not find (docs/results.md).",
)  # fmt: skip
@click.option(
    "--parity-epochs", type=int, default=None,
    help="Epochs of a parity model --degraded trains when none is found (default: the "
    "model's, as `parity train`).",
)  # fmt: skip
@model_repository_option()
@codecs_option(codec_help(
    "Codecs of --decoded-rows and --degraded (repeatable; default berrut:systematic=true, "
    "spline:systematic=true)"
))  # fmt: skip
@click.option("--quick", is_flag=True, help="A small run: LeNet5, K=8, N=40.")
@click.option("--seed", type=int, default=0, help="Seed of the batches and straggler draws.")
@click.option(
    "--out-dir", type=click.Path(path_type=Path), default=Path("eval-results"),
    help="Folder for results.json, fidelity.csv, table.md and the plots.",
)  # fmt: skip
@deprecated_alias("--out", "--out-dir", "out_dir", merge=lambda _new, old: Path(old))
@json_option("the summary")
def evaluate(
    models: tuple[str, ...],
    dataset: str,
    data_dir: Path | None,
    k: tuple[str, ...],
    n: int | None,
    stragglers: tuple[str, ...],
    batches: int | None,
    patterns: int | None,
    output_space: str,
    corrupt: str | None,
    byzantine: int | None,
    decoded_rows: bool,
    redundancy: tuple[str, ...],
    degraded: bool,
    parity_epochs: int | None,
    model_repository: Path | None,
    codecs: tuple[str, ...],
    quick: bool,
    seed: int,
    out_dir: Path,
    as_json: bool,
) -> None:
    """Measure decode fidelity (MSE, RelAcc) of every codec on real models, the lambda sweep,
    convergence in N, and coded-sample pictures. Needs no Redis.

    Writes results.json, fidelity.csv, table.md (NeRCC's Table 1) and PNG plots to --out-dir.

    With --decoded-rows (or --redundancy): instead, top-1 agreement and accuracy of the rows
    a systematic code decodes, per model, codec, group size K (-k) and redundancy R, with
    one or two rows' own results lost and with 1/5/10% of tasks straggling, beside the
    published ApproxIFER and ParM figures (results.json, decoded_rows.csv, table.md).

    With --degraded: instead, ParM's degraded mode against systematic berrut and spline, per
    model and k (-k, default 2,3,4) rows with one parity task: the rebuilt row's agreement
    and accuracy, and the overall accuracy with 1/5/10% of tasks lost (results.json,
    table.md). Parity models come from --model-repository, else are trained into the cache.
    """
    from codedfarm.evaluation.runner import EvalConfig, run_evaluation
    from codedfarm.models.registry import get_model_spec
    from codedfarm.settings import Settings

    config = EvalConfig.quick() if quick else EvalConfig()
    changes: dict[str, Any] = {
        "dataset": dataset, "data_dir": data_dir, "seed": seed, "output_space": output_space
    }  # fmt: skip
    ks = _ints(k, "-k")
    if degraded:
        others = {"-n": n, "-s/--stragglers": stragglers, "--wrong-results": corrupt,
                  "--byzantine": byzantine, "--decoded-rows": decoded_rows or None,
                  "--redundancy": redundancy, "--data-dir": data_dir}  # fmt: skip
        if click.get_current_context().get_parameter_source("output_space") not in (
                ParameterSource.DEFAULT, ParameterSource.DEFAULT_MAP):  # fmt: skip
            others["--output-space"] = output_space
        if dataset != "digits":
            others["--dataset"] = dataset
        degraded_config = _degraded_config(quick, models, ks, codecs, batches, patterns, seed,
                                           parity_epochs, model_repository, others)  # fmt: skip
        _run_degraded(degraded_config, out_dir, as_json)
        return
    if decoded_rows or redundancy:
        fidelity_only = {"-n": n, "-s/--stragglers": stragglers, "--wrong-results": corrupt,
                         "--byzantine": byzantine}  # fmt: skip
        _decoded_rows_changes(changes, quick, models, ks, redundancy, codecs, fidelity_only)
    else:
        if codecs:
            raise ConfigError("--codec applies to --decoded-rows and --degraded (the fidelity "
                              "suite runs its own list of codecs)")  # fmt: skip
        if len(ks) > 1:
            raise ConfigError(f"-k takes one value except with --decoded-rows, got {', '.join(k)}")
        if corrupt is not None:
            changes["corrupt"] = _ints(tuple(corrupt.split(",")), "--wrong-results")
        if byzantine is not None:
            changes["byzantine"] = byzantine
        if models:
            changes["models"] = models
        for name, value in (("k", ks[0] if ks else None), ("n", n)):
            if value is not None:
                changes[name] = value
        if stragglers:
            changes["stragglers"] = _ints(stragglers, "-s/--stragglers")
    for name, value in (("batches", batches), ("patterns", patterns)):
        if value is not None:
            changes[name] = value
    config = dataclasses.replace(config, **changes)
    for name in config.models:
        get_model_spec(name)
    if config.decoded_rows:
        _run_decoded_rows(config, out_dir, as_json)
        return
    per_model = config.tune_batches * len(config.lam_enc) + config.batches * 10
    units = len(config.models) * (per_model + config.robust_batches * 3)
    with click.progressbar(length=units, label="evaluating", file=sys.stderr) as bar:
        result = run_evaluation(
            config,
            out_dir,
            Settings.from_env().cache_dir,
            echo=lambda line: click.echo("\n" + line, err=True),
            progress=bar.update,
        )
    if as_json:
        click.echo(json.dumps(result["summary"], indent=2, default=float))
        return
    click.echo((out_dir / "table.md").read_text())
    for model, s in result["summary"]["models"].items():
        click.echo(
            f"{model}: tuned spline / berrut MSE = {s['tuned_over_berrut']:.3f} (target <= 0.77; "
            f"mean of per-S ratios {s['tuned_over_berrut_per_s_mean']:.3f}); "
            f"auto / best fixed lam_dec = {s['auto_over_best_fixed']:.3f} (target <= 1.05)"
        )
        log = s["over_berrut"].get("spline (log space)")
        if log:
            low, high = log["ci95"]
            click.echo(f"{model}: spline (log space) / berrut MSE = {log['ratio']:.3f} "
                       f"[{low:.3f}, {high:.3f}] (target <= 0.77)")  # fmt: skip
    slope = result["summary"]["noiseless_spline_slope"]
    click.echo(f"noiseless smooth-function slope of log MSE vs log N (spline): {slope:.2f} "
               "(target <= -2.5)")  # fmt: skip
    click.echo(f"results in {out_dir}/ ({result['seconds']} s)")


def _floats(values: tuple[str, ...], option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in values)
    except ValueError as exc:
        raise ConfigError(f"{option} takes numbers, got {', '.join(values)}") from exc


def _decoded_rows_changes(
    changes: dict[str, Any],
    quick: bool,
    models: tuple[str, ...],
    ks: tuple[int, ...],
    redundancy: tuple[str, ...],
    codecs: tuple[str, ...],
    fidelity_only: dict[str, Any],
) -> None:
    """``eval --decoded-rows``'s settings into ``changes``. The fidelity suite's own options
    (``fidelity_only``: option -> value given) are refused, one line and exit 2, rather
    than ignored."""
    from codedfarm.evaluation.redundancy import DEFAULT_MODELS

    given = [option for option, value in fidelity_only.items() if value not in (None, ())]
    if given:
        raise ConfigError(f"{', '.join(given)}: an option of the fidelity suite, not of "
                          "--decoded-rows")  # fmt: skip
    changes["decoded_rows"] = True
    if models or not quick:  # --quick keeps its one model
        changes["models"] = models or DEFAULT_MODELS
    if ks:
        changes["group_sizes"] = ks
    if redundancy:
        changes["redundancy"] = _floats(redundancy, "--redundancy")
    if codecs:
        changes["redundancy_codecs"] = codecs


def _run_decoded_rows(config: EvalConfig, out_dir: Path, as_json: bool) -> None:
    from codedfarm.evaluation.redundancy import TARGET_AGREEMENT, TARGET_RATE, run_decoded_rows
    from codedfarm.settings import Settings

    units = (len(config.models) * len(config.group_sizes) * len(config.redundancy)
             * len(config.redundancy_codecs) * config.batches)  # fmt: skip
    with click.progressbar(length=units, label="decoded rows", file=sys.stderr) as bar:
        result = run_decoded_rows(
            config, out_dir, Settings.from_env().cache_dir,
            echo=lambda line: click.echo("\n" + line, err=True), progress=bar.update,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps(result["summary"], indent=2, default=float))
        return
    click.echo((out_dir / "table.md").read_text())
    for m in result["summary"]["meets"]:
        at = ", ".join(f"R={r}: {a:.4f}" for r, a in m["agreement"].items())
        verdict = (f"from R={m['smallest_redundancy']:g}" if m["smallest_redundancy"] is not None
                   else "at no R measured")  # fmt: skip
        top = max(config.straggle_rates)
        rates = ", ".join(f"R={r}: " + ("none" if p is None else f"{'>=' * (p >= top)}{p:.1%}")
                          for r, p in m["max_rate"].items())  # fmt: skip
        click.echo(
            f"{m['model']} K={m['k']} {m['codec']}: overall agreement >= {TARGET_AGREEMENT:g} "
            f"at {TARGET_RATE:.0%} stragglers {verdict} ({at}); met up to straggle rate "
            f"{rates}"
        )
    click.echo(f"results in {out_dir}/ ({result['seconds']} s)")


def _degraded_config(
    quick: bool,
    models: tuple[str, ...],
    ks: tuple[int, ...],
    codecs: tuple[str, ...],
    batches: int | None,
    patterns: int | None,
    seed: int,
    parity_epochs: int | None,
    model_repository: Path | None,
    others: dict[str, Any],
) -> DegradedConfig:
    """``eval --degraded``'s settings; the options it does not take (``others``: option ->
    value given) are refused, one line and exit 2, rather than ignored."""
    from codedfarm.evaluation.degraded import DegradedConfig
    from codedfarm.models.resolve import resolve_model

    given = [option for option, value in others.items() if value not in (None, (), False)]
    if given:
        raise ConfigError(f"{', '.join(given)}: not an option of --degraded (it runs the "
                          "models' own outputs on digits, the parity models' data)")  # fmt: skip
    repository = settings_from_context(model_repository=model_repository).model_repository
    changes: dict[str, Any] = {"seed": seed, "parity_epochs": parity_epochs,
                               "repository": repository}  # fmt: skip
    for name, value in (("models", models), ("group_sizes", ks), ("codecs", codecs),
                        ("batches", batches), ("patterns", patterns)):  # fmt: skip
        if value:
            changes[name] = value
    config = dataclasses.replace(DegradedConfig.quick() if quick else DegradedConfig(),
                                 **changes)  # fmt: skip
    for name in config.models:
        resolve_model(name, repository)
    return config


def _run_degraded(config: DegradedConfig, out_dir: Path, as_json: bool) -> None:
    from codedfarm.evaluation.degraded import run_degraded

    settings = settings_from_context(model_repository=config.repository)
    units = (len(config.models) * len(config.group_sizes) * (1 + len(config.codecs))
             * config.batches)  # fmt: skip
    with click.progressbar(length=units, label="degraded mode", file=sys.stderr) as bar:
        result = run_degraded(
            config, out_dir, settings.cache_dir,
            echo=lambda line: click.echo("\n" + line, err=True), progress=bar.update,
        )  # fmt: skip
    if as_json:
        click.echo(json.dumps({key: result[key] for key in ("rows", "winners", "targets")},
                              indent=2, default=float))  # fmt: skip
        return
    click.echo((out_dir / "table.md").read_text())
    click.echo(f"results in {out_dir}/ ({result['seconds']} s)")
