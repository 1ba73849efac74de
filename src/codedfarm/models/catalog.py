"""What ``codedfarm models`` shows: every model the farm can serve, where it comes from,
its versions and shapes, and whether it is ready."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codedfarm.errors import CodedFarmError
from codedfarm.models.registry import MODELS
from codedfarm.models.repository import ModelRepository

__all__ = ["ModelInfo", "describe_models"]


@dataclass(frozen=True)
class ModelInfo:
    """One model. ``source``: ``repository`` (its folder in ``location``) or ``zoo``.
    ``ready``: a task for it can run now; ``status`` says why not, or how it was made."""

    name: str
    source: str
    location: str
    versions: tuple[int, ...]
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    description: str
    ready: bool
    status: str

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        for key in ("versions", "input_shape", "output_shape"):
            data[key] = list(data[key])
        return data


def _repository_models(repo: ModelRepository) -> list[ModelInfo]:
    rows = []
    folders = sorted(p for p in repo.root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        name = folder.name
        try:
            config = repo.config(name)
            versions = tuple(repo.versions(name))
        except CodedFarmError as exc:
            rows.append(ModelInfo(name, "repository", str(folder), (), (), (), "", False,
                                  f"invalid: {exc}"))  # fmt: skip
            continue
        status = (f"ready (highest version {versions[-1]})" if versions
                  else f"no version yet: codedfarm models add {name} FILE ...")  # fmt: skip
        rows.append(ModelInfo(
            name, "repository", str(folder), versions, config.input_shape, config.output_shape,
            config.description, bool(versions), status,
        ))  # fmt: skip
    return rows


def _zoo_status(name: str, cache_dir: Path) -> tuple[bool, str]:
    from codedfarm.models.training import TRAINABLE

    if name == "vit":
        return True, "ImageNet weights are downloaded on first use (needs internet)"
    if name not in TRAINABLE:
        return True, "ready (built in)"
    meta_file = cache_dir / f"{name}-digits.json"
    if not meta_file.exists():
        return False, f"not prepared: run `codedfarm models prepare {name}` or --preload {name}"
    meta = json.loads(meta_file.read_text())
    return True, (f"ready: digits test accuracy {meta['test_accuracy']:.3f} "
                  f"({meta['train_seconds']:g} s to train)")  # fmt: skip


def describe_models(cache_dir: Path, repository: Path | None = None) -> list[ModelInfo]:
    """The repository's models (if any), then the zoo's that no repository model shadows."""
    rows = []
    if repository is not None and Path(repository).is_dir():
        rows = _repository_models(ModelRepository(repository))
    names = {row.name for row in rows}
    for name, spec in MODELS.items():
        if name in names:
            continue
        ready, status = _zoo_status(name, cache_dir)
        rows.append(ModelInfo(name, "zoo", "built-in", (), spec.input_shape,
                              (spec.num_outputs,), spec.description, ready, status))  # fmt: skip
    return rows
