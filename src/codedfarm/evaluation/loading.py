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
    repository: Path | None = None,
) -> tuple[Model, Any, dict[str, Any]]:
    """``(model, data, metadata)``: the model (trained on ``dataset`` first if it is one the
    farm trains and its weights are not cached), its test data and training metadata.
    ``name`` may be ``NAME[@VERSION]`` of a model in ``repository`` (found there first, as
    the farm resolves models; its metadata says where it came from)."""
    from codedfarm.models.datasets import load_dataset
    from codedfarm.models.registry import load_model
    from codedfarm.models.resolve import load_served_model, resolve_model
    from codedfarm.models.training import TRAINABLE, trained_model, training_metadata

    resolved = resolve_model(name, repository)
    if resolved.source == "repository":
        module = load_served_model(resolved.name, resolved.version, repository=repository,
                                   cache_dir=cache_dir)  # fmt: skip
        meta: dict[str, Any] = {"model": resolved.ref, "repository": str(repository)}
    elif name in TRAINABLE:
        meta = training_metadata(name, cache_dir, dataset)
        module = trained_model(name, cache_dir, dataset)
    else:
        module, meta = load_model(name, cache_dir), {"model": name}
    shape = resolved.input_shape
    if len(shape) != 3:
        raise ConfigError(f"model {name} does not take images")
    data = load_dataset(dataset, shape, cache_dir, data_dir=data_dir)
    return numpy_model(module, output_space), data, meta
