"""``codedfarm parity``: learned parity models (ParM) for the models the farm serves."""

from __future__ import annotations

import json
import sys
from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from codedfarm.cli.options import json_option, model_repository_option, settings_from_context
from codedfarm.models.config import PARITY_INITS, PARITY_TARGETS
from codedfarm.models.parity import DEFAULT_EPOCHS, DEFAULT_INIT, DEFAULT_TARGET, default_epochs

if TYPE_CHECKING:
    from codedfarm.models.parity import ParityProgress, TrainedParity

__all__ = ["parity"]


@click.group()
def parity() -> None:
    """Parity models (ParM, Kosaian et al., SOSP'19): a network F_P trained so that
    F_P(x1+...+xk) is close to F(x1)+...+F(xk) for a model F, so that one parity task
    reconstructs any one of k missing predictions as F_P(P) minus the others."""


class _Bar:
    """A click progress bar on stderr, made at the first minibatch (when the number of
    minibatches is known), per minibatch, with the epoch and its running loss."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.stack = ExitStack()
        self.bar: Any = None
        self.text = ""

    def __call__(self, step: ParityProgress) -> None:
        if self.bar is None:
            self.bar = self.stack.enter_context(click.progressbar(
                length=step.epochs * step.steps, label=self.label, file=sys.stderr,
                item_show_func=lambda _: self.text,
            ))  # fmt: skip
            self.bar.update((step.epoch - 1) * step.steps)  # resumed: epochs already done
        self.text = f"epoch {step.epoch}/{step.epochs} loss {step.loss:.4g}"
        self.bar.update(1, current_item=self.text)


def _report(trained: TrainedParity) -> dict[str, Any]:
    info = trained.info
    return {
        "name": trained.model.name, "version": trained.model.version,
        "path": str(trained.model.directory), **info.to_dict(),
        "heldout_rows": trained.heldout.rows, "resumed_from_epoch": trained.resumed_from,
        "train_seconds": trained.train_seconds,
    }  # fmt: skip


@parity.command(name="train")
@click.argument("ref", metavar="MODEL[@VERSION]")
@click.option("-k", "--k", "k", type=int, required=True,
              help="Queries summed into one parity query (K >= 2).")  # fmt: skip
@click.option(
    "--data", default="digits", show_default=True, metavar="digits|PATH.npz",
    help="Training inputs: sklearn's digits at the model's input shape, or a .npz file with an "
    "array x of shape (N, *input_shape); 20% (digits: its test split) is held out.",
)  # fmt: skip
@click.option(
    "--epochs", type=int, default=None,
    help="Epochs of N parity queries each (default, at K=2: "
    + ", ".join(f"{name} {epochs}" for name, epochs in DEFAULT_EPOCHS.items())
    + f", other models {default_epochs('')}; times K/2 for larger K).",
)  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the initialization and the parity queries: a second run with "
              "the same seed gives the same weights, bit for bit.")  # fmt: skip
@click.option(
    "--target", type=click.Choice(PARITY_TARGETS), default=DEFAULT_TARGET, show_default=True,
    help="What F_P learns to sum: logits (the model's outputs as served) or probs (their "
    "softmax). logits reconstructs better (docs/cli.md, `parity`).",
)  # fmt: skip
@click.option(
    "--init", type=click.Choice(PARITY_INITS), default=DEFAULT_INIT, show_default=True,
    help="Start from the base model's weights (base) or a fresh initialization (scratch, as "
    "in ParM; needs a zoo model or a factory).",
)  # fmt: skip
@click.option(
    "--combine", type=click.Choice(["auto", "sum", "mean"]), default="auto", show_default=True,
    help="F_P learns the sum of the k outputs, or their mean (a model that ends in a softmax "
    "can only output probability vectors); auto: mean when the model's outputs are "
    "probability vectors.",
)  # fmt: skip
@click.option("--batch-size", type=int, default=64, show_default=True,
              help="Parity queries per minibatch.")  # fmt: skip
@click.option("--lr", type=float, default=None,
              help="Adam's learning rate, cosine-annealed to 0 (default: the best of 1e-3, "
              "3e-4 and 1e-4 in a short probe run).")  # fmt: skip
@click.option("--torch-threads", type=int, default=1, show_default=True,
              help="torch threads (bit-for-bit equal runs need the same number).")  # fmt: skip
@click.option(
    "--resume/--no-resume", default=True, show_default=True,
    help="Continue an interrupted run from its last epoch (a checkpoint in the cache, kept "
    "for the same model, k, data, seed and settings).",
)  # fmt: skip
@model_repository_option()
@json_option("the new version and its held-out numbers")
def train(
    ref: str,
    k: int,
    data: str,
    epochs: int | None,
    seed: int,
    target: str,
    init: str,
    combine: str,
    batch_size: int,
    lr: float | None,
    torch_threads: int,
    resume: bool,
    model_repository: Path | None,
    as_json: bool,
) -> None:
    """Train the parity model of MODEL for K queries and store it in the model repository as
    MODEL.parity-kK (a new version; its config.json names the base model, K and the data;
    a repository MODEL's config.json lists it). Prints the held-out MSE and how often a
    reconstructed prediction's top-1 class is the model's own."""
    from codedfarm.models.parity import ParityTraining, parity_name, train_parity

    request = ParityTraining(
        ref, k, data, epochs, seed, target, init, combine, batch_size, lr, torch_threads, resume
    )
    settings = settings_from_context(model_repository=model_repository)
    label = f"training {parity_name(ref.partition('@')[0], k)}"
    bar = _Bar(label)
    with bar.stack:
        trained = train_parity(
            request, settings.model_repository, settings.cache_dir, progress=bar,
            notice=lambda line: click.echo(line, err=True),
        )  # fmt: skip
    report = _report(trained)
    if as_json:
        click.echo(json.dumps(report))
        return
    info = trained.info
    resumed = f", resumed after epoch {trained.resumed_from}" if trained.resumed_from else ""
    click.echo(
        f"{trained.model.ref}: {info.epochs} epochs on {info.data} ({trained.train_seconds:g} s"
        f"{resumed}); held out: MSE {info.heldout_mse:.4g} ({info.target}), top-1 agreement "
        f"of reconstructed rows with {info.base} {info.heldout_agreement:.3f} "
        f"({trained.heldout.rows} rows); stored in {trained.model.directory}"
    )
