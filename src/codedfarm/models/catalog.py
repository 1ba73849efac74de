"""What ``codedfarm models`` shows: each model with its shapes and whether it is ready."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedfarm.models.registry import MODELS

__all__ = ["ModelInfo", "describe_models"]


@dataclass(frozen=True)
class ModelInfo:
    """One model of the zoo. ``trained``: None for models that need no training; else
    whether cached weights exist, with their digits test accuracy and training time."""

    name: str
    input_shape: tuple[int, ...]
    num_outputs: int
    description: str
    trained: bool | None = None
    test_accuracy: float | None = None
    train_seconds: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "input_shape": list(self.input_shape)}


def describe_models(cache_dir: Path, *, train: bool = False) -> list[ModelInfo]:
    """Every zoo model; ``train`` first trains (and caches) the trainable ones missing."""
    from codedfarm.models.training import TRAINABLE, training_metadata

    rows = []
    for name, spec in MODELS.items():
        info = ModelInfo(name, spec.input_shape, spec.num_outputs, spec.description)
        if name in TRAINABLE:
            meta_file = cache_dir / f"{name}-digits.json"
            if train and not meta_file.exists():
                training_metadata(name, cache_dir)
            meta = json.loads(meta_file.read_text()) if meta_file.exists() else None
            info = ModelInfo(
                name, spec.input_shape, spec.num_outputs, spec.description,
                trained=meta is not None,
                test_accuracy=None if meta is None else float(meta["test_accuracy"]),
                train_seconds=None if meta is None else float(meta["train_seconds"]),
            )  # fmt: skip
        rows.append(info)
    return rows
