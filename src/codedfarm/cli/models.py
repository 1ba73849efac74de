"""``codedfarm models``: the models the farm can serve."""

from __future__ import annotations

import json

import click

from codedfarm.cli.options import json_option, settings_from_context

__all__ = ["models"]


@click.command()
@click.option(
    "--train", is_flag=True, help="Train (and cache) the offline models that are missing."
)
@json_option("the models")
def models(train: bool, as_json: bool) -> None:
    """List the model zoo, with the test accuracy of cached weights."""
    from codedfarm.models.catalog import describe_models

    rows = describe_models(settings_from_context().cache_dir, train=train)
    if as_json:
        click.echo(json.dumps([row.to_dict() for row in rows], indent=2))
        return
    for row in rows:
        shape = "x".join(map(str, row.input_shape))
        click.echo(f"{row.name:10} {shape:>10} -> {row.num_outputs:<5} {row.description}")
        if row.trained:
            click.echo(f"{'':10} digits test accuracy {row.test_accuracy:.3f} "
                       f"({row.train_seconds:g} s to train)")  # fmt: skip
        elif row.trained is False:
            click.echo(f"{'':10} not trained yet (trains on first use, or run with --train)")
