"""``codedfarm models add`` and ``codedfarm models prepare``: put a model in the repository
after checking that it runs, and make a model ready before any task needs it."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from codedfarm.errors import ModelConfigError, ModelUnavailableError
from codedfarm.models.config import CONFIG_FILE, ModelConfig, ServingDefaults
from codedfarm.models.repository import ModelRepository, RepositoryModel
from codedfarm.models.resolve import parse_model_ref, resolve_model

__all__ = ["add_model", "prepare_model", "probe_output_shape"]


def probe_output_shape(model: RepositoryModel, device: str = "cpu") -> tuple[int, ...]:
    """Load ``model`` and run it on zeros of its input shape (one input, then two: batching
    must not change the shape); returns the output shape without the batch dimension."""
    import torch

    from codedfarm.models.loading import load_repository_model, short_reason

    module = load_repository_model(model, device)
    shape = model.config.input_shape
    try:
        with torch.inference_mode():
            one = module(torch.zeros((1, *shape), device=device))
            two = module(torch.zeros((2, *shape), device=device))
    except Exception as exc:
        raise ModelUnavailableError(
            f"model {model.ref} does not run on a zero input of shape {shape}: {short_reason(exc)}"
        ) from exc
    if not isinstance(one, torch.Tensor) or one.shape[0] != 1 or two.shape[1:] != one.shape[1:]:
        raise ModelUnavailableError(
            f"model {model.ref} must return one tensor with a row per input, got "
            f"{type(one).__name__} {tuple(getattr(one, 'shape', ()))}"
        )
    return tuple(int(d) for d in one.shape[1:])


def add_model(
    repository: Path,
    name: str,
    file: Path,
    *,
    input_shape: tuple[int, ...],
    output_shape: tuple[int, ...] | None = None,
    description: str = "",
    serving: ServingDefaults | None = None,
    polynomial_degree: int | None = None,
) -> RepositoryModel:
    """Check that ``file`` runs on zeros of ``input_shape`` (and gives ``output_shape`` when
    given), then add it as the next version of ``name`` (creating the model with a
    ``config.json`` the first time). A later version must take and give the same shapes."""
    if not file.is_file():
        raise ModelConfigError(f"{file}: no such file")
    if not name or "@" in name or "/" in name or name.startswith("."):
        raise ModelConfigError(f"bad model name {name!r}: use letters, digits, '-' and '_'")
    repo = ModelRepository(repository)
    existing = repo.config(name) if (repo.root / name / CONFIG_FILE).exists() else None
    if existing is not None and existing.input_shape != tuple(input_shape):
        raise ModelConfigError(
            f"model {name} takes inputs of shape {existing.input_shape}; a new version must "
            f"too (got --input-shape {','.join(map(str, input_shape))})"
        )
    with tempfile.TemporaryDirectory(prefix="codedfarm-add-") as tmp:
        trial_dir = Path(tmp) / name / "1"
        trial_dir.mkdir(parents=True)
        kind = {".pt": "model.pt", ".pt2": "model.pt2"}.get(file.suffix)
        if kind is None:
            raise ModelConfigError(
                f"{file}: a model file must be TorchScript (.pt, torch.jit.save) or "
                "torch.export (.pt2, torch.export.save)"
            )
        shutil.copyfile(file, trial_dir / kind)
        trial = RepositoryModel(name, 1, trial_dir, ModelConfig(tuple(input_shape), (1,)))
        produced = probe_output_shape(trial)
    expected = existing.output_shape if existing is not None else output_shape
    if expected is not None and tuple(expected) != produced:
        raise ModelConfigError(
            f"{file}: outputs have shape {produced} for one input of shape {tuple(input_shape)}, "
            f"but {'the model' if existing else '--output-shape'} says {tuple(expected)}"
        )
    config = existing or ModelConfig(
        tuple(input_shape), produced, description=description,
        serving=serving or ServingDefaults(), polynomial_degree=polynomial_degree,
    )  # fmt: skip
    return repo.add_version(name, file, config)


def prepare_model(
    ref: str,
    cache_dir: Path,
    repository: Path | None = None,
    *,
    progress: Callable[[int], None] | None = None,
) -> str:
    """Make model ``ref`` ready to serve: train (and cache) a zoo model that needs it, or
    load and run a repository model's version. Returns a one-line status."""
    resolved = resolve_model(ref, repository)
    if resolved.source == "repository":
        assert repository is not None
        found = ModelRepository(repository).get(*parse_model_ref(ref))
        produced = probe_output_shape(found)
        if produced != found.config.output_shape:
            raise ModelUnavailableError(
                f"model {found.ref} returns outputs of shape {produced}; its config.json "
                f"says {found.config.output_shape}"
            )
        return f"{found.ref}: loads and runs, {found.config.input_shape} -> {produced}"
    from codedfarm.models.registry import load_model
    from codedfarm.models.training import TRAINABLE, is_trained, trained_model, training_metadata

    if resolved.name in TRAINABLE:
        if is_trained(resolved.name, cache_dir):
            return f"{resolved.name}: ready (trained weights cached in {cache_dir})"
        trained_model(resolved.name, cache_dir, progress=progress)
        meta = training_metadata(resolved.name, cache_dir)
        return (f"{resolved.name}: trained on digits, test accuracy {meta['test_accuracy']:.3f} "
                f"({meta['train_seconds']:g} s), cached in {cache_dir}")  # fmt: skip
    load_model(resolved.name, cache_dir)  # vit downloads its weights here
    return f"{resolved.name}: ready"
