"""``codedfarm models``: list, add and prepare the models the farm serves."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import click

from codedfarm.cli.options import (
    json_option,
    model_repository_option,
    redundancy_option,
    settings_from_context,
)
from codedfarm.errors import ConfigError

__all__ = ["models"]


def _shape(value: str | None, option: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    parts = [v.strip() for v in re.split(r"[,x]", value)]
    shape = tuple(int(v) for v in parts if v.isdigit())
    if not parts or len(shape) != len(parts) or any(d < 1 for d in shape):
        raise ConfigError(f"{option} takes positive integers like 1,32,32, got {value!r}")
    return shape


@click.group(invoke_without_command=True)
@model_repository_option()
@click.option("--train", is_flag=True, hidden=True)  # the old spelling of `models prepare`
@json_option("the models")
@click.pass_context
def models(ctx: click.Context, model_repository: Path | None, train: bool, as_json: bool) -> None:
    """List the models the farm can serve: the model repository's (with their versions),
    then the built-in zoo's, with shapes and whether each is ready.

    Subcommands add a model to the repository and prepare a model before it is needed.
    """
    if ctx.invoked_subcommand is not None:
        return
    from codedfarm.models.catalog import describe_models

    settings = settings_from_context(model_repository=model_repository)
    if train:
        from codedfarm.cli.options import REMOVED_IN, warn
        from codedfarm.models.manage import prepare_model
        from codedfarm.models.training import TRAINABLE

        warn(f"models --train is deprecated and will be removed in codedfarm {REMOVED_IN}; "
             "use `codedfarm models prepare NAME`")  # fmt: skip
        for name in TRAINABLE:
            click.echo(prepare_model(name, settings.cache_dir), err=True)
    rows = describe_models(settings.cache_dir, settings.model_repository)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    for row in rows:
        inputs = "x".join(map(str, row.input_shape)) or "?"
        outputs = "x".join(map(str, row.output_shape)) or "?"
        versions = f" versions {','.join(map(str, row.versions))}" if row.versions else ""
        click.echo(f"{row.name:12} {inputs:>10} -> {outputs:<6} {row.source}{versions}: "
                   f"{row.description}")  # fmt: skip
        click.echo(f"{'':12} {row.status}")
    if settings.model_repository is None:
        click.echo("(no model repository: set CODEDFARM_MODEL_REPOSITORY or --model-repository)",
                   err=True)  # fmt: skip


@models.command(name="add")
@click.argument("name")
@click.argument("file", type=click.Path(path_type=Path))
@click.option(
    "--input-shape", required=True, metavar="D1,D2,...",
    help="One input's shape, without the batch dimension (e.g. 1,32,32).",
)  # fmt: skip
@click.option(
    "--output-shape", default=None, metavar="D1,...",
    help="One output's shape, checked against a run (default: what the model returns).",
)  # fmt: skip
@click.option("--description", default="", help="A line for `codedfarm models`.")
@click.option("--codec", default=None, metavar="SPEC", help="Serving default: the codec.")
@click.option("-n", "n", type=click.IntRange(min=1), default=None, help="Serving default: N.")
@click.option(
    "-s", "--stragglers", "s", type=click.IntRange(min=0), default=None,
    help="Serving default: S.",
)  # fmt: skip
@click.option(
    "--deadline", type=click.FloatRange(min=0, min_open=True), default=None,
    help="Serving default: the deadline in seconds.",
)  # fmt: skip
@redundancy_option("Serving default: tasks per row instead of N, R >= 1 (default: none).")
@click.option(
    "--polynomial-degree", type=click.IntRange(min=1), default=None,
    help="Declare the model a polynomial of this degree (1: linear or affine), so exact codes "
    "(mds, lagrange) decode it exactly without a warning.",
)  # fmt: skip
@model_repository_option(required=True)
@json_option("the new version")
def add(
    name: str,
    file: Path,
    input_shape: str,
    output_shape: str | None,
    description: str,
    codec: str | None,
    n: int | None,
    s: int | None,
    deadline: float | None,
    redundancy: float | None,
    polynomial_degree: int | None,
    model_repository: Path | None,
    as_json: bool,
) -> None:
    """Add FILE, a TorchScript (.pt, torch.jit.save) or torch.export (.pt2, torch.export.save)
    model, as the next version of NAME in the repository, after checking that it runs on a
    zero input of --input-shape. Running workers use it from the next batch."""
    from codedfarm.codecs import plan_codec
    from codedfarm.models.config import ServingDefaults
    from codedfarm.models.manage import add_model

    if codec is not None:
        plan_codec(codec)
    settings = settings_from_context(model_repository=model_repository)
    assert settings.model_repository is not None
    shape = _shape(input_shape, "--input-shape")
    assert shape is not None
    added = add_model(
        settings.model_repository, name, file, input_shape=shape,
        output_shape=_shape(output_shape, "--output-shape"), description=description,
        serving=ServingDefaults(codec, n, s, deadline, redundancy),
        polynomial_degree=polynomial_degree,
    )  # fmt: skip
    if as_json:
        click.echo(json.dumps({"name": added.name, "version": added.version,
                               "path": str(added.directory)}))  # fmt: skip
        return
    click.echo(f"{added.ref}: added as {added.directory} "
               f"({added.config.input_shape} -> {added.config.output_shape})")  # fmt: skip


@models.command(name="prepare")
@click.argument("refs", nargs=-1, required=True, metavar="NAME[@VERSION]...")
@model_repository_option()
def prepare(refs: tuple[str, ...], model_repository: Path | None) -> None:
    """Make models ready before a task needs them: train (and cache) the zoo models that
    need training, with a progress bar; load and run a repository model's version."""
    from codedfarm.models.manage import prepare_model
    from codedfarm.models.resolve import parse_model_ref
    from codedfarm.models.training import TRAINABLE, is_trained

    settings = settings_from_context(model_repository=model_repository)
    for ref in refs:
        name, _ = parse_model_ref(ref)
        if name in TRAINABLE and not is_trained(name, settings.cache_dir):
            epochs = TRAINABLE[name].epochs
            with click.progressbar(length=epochs, label=f"training {name}",
                                   file=sys.stderr) as bar:  # fmt: skip
                line = prepare_model(ref, settings.cache_dir, settings.model_repository,
                                     progress=bar.update)  # fmt: skip
        else:
            line = prepare_model(ref, settings.cache_dir, settings.model_repository)
        click.echo(line)
