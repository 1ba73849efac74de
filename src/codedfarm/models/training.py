"""Train the offline models on a data set and cache their weights with training metadata."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from codedfarm.errors import ModelUnavailableError

if TYPE_CHECKING:
    from torch import nn

    from codedfarm.models.digits import DigitsSplit

__all__ = [
    "TRAINABLE",
    "TrainingRecipe",
    "is_trained",
    "train_classifier",
    "trained_lenet5",
    "trained_model",
    "training_metadata",
]


@dataclass(frozen=True)
class TrainingRecipe:
    build: Callable[[], nn.Module]
    input_shape: tuple[int, int, int]
    epochs: int
    lr: float
    batch_size: int = 64


def _lenet5() -> nn.Module:
    from codedfarm.models.lenet import LeNet5

    return LeNet5()


def _repvgg() -> nn.Module:
    from codedfarm.models.repvgg import RepVGG

    return RepVGG()


def _vit_small() -> nn.Module:
    from codedfarm.models.vit import small_vit

    return small_vit()


TRAINABLE: dict[str, TrainingRecipe] = {
    "lenet5": TrainingRecipe(_lenet5, (1, 32, 32), epochs=15, lr=2e-3),
    "repvgg": TrainingRecipe(_repvgg, (3, 32, 32), epochs=12, lr=1e-3),
    "vit_small": TrainingRecipe(_vit_small, (3, 32, 32), epochs=40, lr=1e-3),
}


def train_classifier(
    model: nn.Module,
    data: DigitsSplit,
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    seed: int = 0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Adam + cross-entropy with a cosine schedule; returns metadata with test accuracy.
    ``progress(1)`` is called after every epoch."""
    import torch

    torch.manual_seed(seed)
    x = torch.from_numpy(data.train_x)
    y = torch.from_numpy(data.train_y)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * -(-len(y) // batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(y), generator=generator)
        for idx in order.split(batch_size):  # type: ignore[no-untyped-call]
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
            schedule.step()
        if progress is not None:
            progress(1)
    model.eval()
    with torch.no_grad():
        predicted = torch.cat(
            [model(chunk).argmax(1) for chunk in torch.from_numpy(data.test_x).split(256)]  # type: ignore[no-untyped-call]
        ).numpy()
    return {
        "train_size": len(data.train_y),
        "test_size": len(data.test_y),
        "test_accuracy": float(np.mean(predicted == data.test_y)),
        "epochs": epochs,
        "lr": lr,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 2),
        "torch": str(torch.__version__),
    }


def is_trained(name: str, cache_dir: Path, dataset: str = "digits") -> bool:
    """True if model ``name`` has cached weights for ``dataset`` in ``cache_dir``."""
    return (cache_dir / f"{name}-{dataset}.pt").exists()


def trained_model(
    name: str,
    cache_dir: Path,
    dataset: str = "digits",
    *,
    train: bool = True,
    progress: Callable[[int], None] | None = None,
) -> nn.Module:
    """Model ``name`` with weights trained on ``dataset``, training and caching them first
    if needed (``progress(1)`` per epoch). Concurrent callers serialize on a lock file;
    weights are written atomically next to a JSON file with the training metadata
    (accuracy, epochs, time). With ``train=False`` a model without cached weights raises
    :class:`~codedfarm.errors.ModelUnavailableError` instead of training (minutes)."""
    import torch

    from codedfarm.models.datasets import load_dataset

    recipe = TRAINABLE[name]
    path = cache_dir / f"{name}-{dataset}.pt"
    if not train and not path.exists():
        raise ModelUnavailableError(
            f"model {name} is not prepared (no trained weights in {cache_dir}): run "
            f"`codedfarm models prepare {name}` with the same CODEDFARM_CACHE_DIR, or start "
            f"the worker with --preload {name}"
        )
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{name}-{dataset}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            model = recipe.build()
            data = load_dataset(dataset, recipe.input_shape, cache_dir)
            metadata = {
                "model": name,
                "dataset": f"{dataset} at {'x'.join(map(str, recipe.input_shape))}",
                **train_classifier(
                    model,
                    data,
                    epochs=recipe.epochs,
                    lr=recipe.lr,
                    batch_size=recipe.batch_size,
                    progress=progress,
                ),
            }
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"state_dict": model.state_dict(), "metadata": metadata}, tmp)
            os.replace(tmp, path)
            path.with_suffix(".json").write_text(json.dumps(metadata, indent=2))
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = recipe.build()
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model


def training_metadata(name: str, cache_dir: Path, dataset: str = "digits") -> dict[str, Any]:
    """The metadata stored with a cached model (trains it first if needed)."""
    trained_model(name, cache_dir, dataset)
    data: dict[str, Any] = json.loads((cache_dir / f"{name}-{dataset}.json").read_text())
    return data


def trained_lenet5(cache_dir: Path) -> nn.Module:
    """LeNet5 trained on digits (the farm's default model)."""
    return trained_model("lenet5", cache_dir)
