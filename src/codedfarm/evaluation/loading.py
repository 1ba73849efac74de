"""The evaluation's models and data: a zoo model as a numpy function, with its test set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from codedfarm.errors import ConfigError
from codedfarm.evaluation.fidelity import Model

__all__ = ["load_eval_model", "numpy_model"]


def numpy_model(module: Any, output_space: str = "logits") -> Model:
    """``module`` as ``(B, *in_shape) -> (B, outputs)`` on numpy arrays, in chunks of 256;
    ``output_space="probs"`` applies the softmax."""
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            outs = [module(torch.from_numpy(np.ascontiguousarray(c))) for c in np.split(
                x, range(256, len(x), 256))]  # fmt: skip
            out = torch.cat(outs).float()
            return (out.softmax(-1) if output_space == "probs" else out).numpy()

    return run


def load_eval_model(
    name: str,
    cache_dir: Path,
    *,
    dataset: str,
    data_dir: Path | None,
    output_space: str,
) -> tuple[Model, Any, dict[str, Any]]:
    """``(model, data, metadata)``: the model (trained on ``dataset`` first if it is one the
    farm trains and its weights are not cached), its test data and training metadata."""
    from codedfarm.models.datasets import load_dataset
    from codedfarm.models.registry import get_model_spec, load_model
    from codedfarm.models.training import TRAINABLE, trained_model, training_metadata

    spec = get_model_spec(name)
    if name in TRAINABLE:
        meta = training_metadata(name, cache_dir, dataset)
        module = trained_model(name, cache_dir, dataset)
    else:
        module, meta = load_model(name, cache_dir), {"model": name}
    shape = spec.input_shape
    if len(shape) != 3:
        raise ConfigError(f"model {name} does not take images")
    data = load_dataset(dataset, shape, cache_dir, data_dir=data_dir)
    return numpy_model(module, output_space), data, meta
