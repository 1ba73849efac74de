"""From a model name to a servable model: the repository first, then the built-in zoo.

``name@3`` pins version 3 of a repository model; a bare name means the highest version
present (read at every lookup, so new versions are picked up at once). Zoo models have no
versions.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codedfarm.errors import UnknownModelError
from codedfarm.models.config import ParityInfo, ServingDefaults
from codedfarm.models.registry import MODELS, get_model_spec
from codedfarm.models.repository import ModelRepository

if TYPE_CHECKING:
    from torch import nn

__all__ = ["ResolvedModel", "load_served_model", "parse_model_ref", "resolve_model"]


@dataclass(frozen=True)
class ResolvedModel:
    """A model as the farm serves it: ``(B, *input_shape) -> (B, *output_shape)``."""

    name: str
    version: int | None  # None: a zoo model
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]
    source: str  # "repository" or "zoo"
    description: str = ""
    input_dtype: str = "float32"
    serving: ServingDefaults = field(default_factory=ServingDefaults)
    polynomial_degree: int | None = None  # declared; None: a general function
    parity: ParityInfo | None = None  # a parity model's base, k and target (models/parity.py)

    @property
    def ref(self) -> str:
        """``name@version`` for repository models, ``name`` for zoo models."""
        return self.name if self.version is None else f"{self.name}@{self.version}"


def parse_model_ref(ref: str) -> tuple[str, int | None]:
    """``"affine@2"`` -> ``("affine", 2)``; ``"affine"`` -> ``("affine", None)``."""
    name, sep, version = ref.strip().partition("@")
    if not name or (sep and not (version.isdigit() and int(version) >= 1)):
        raise UnknownModelError(
            f"bad model reference {ref!r}: use NAME or NAME@VERSION (VERSION a positive integer)"
        )
    return name, int(version) if sep else None


def resolve_model(ref: str, repository: Path | None = None) -> ResolvedModel:
    """The model ``ref`` names: in ``repository`` first (if given), else in the zoo.
    Raises :class:`UnknownModelError` or :class:`~codedfarm.errors.ModelConfigError`."""
    name, version = parse_model_ref(ref)
    repo = ModelRepository(repository) if repository is not None else None
    if repo is not None and repo.has(name):
        found = repo.get(name, version)
        config = found.config
        return ResolvedModel(
            name, found.version, config.input_shape, config.output_shape, "repository",
            config.description, config.input_dtype, config.serving, config.polynomial_degree,
            config.parity,
        )  # fmt: skip
    if name not in MODELS:
        where = f" (model repository: {repository})" if repository is not None else (
            " (no model repository: set CODEDFARM_MODEL_REPOSITORY)")  # fmt: skip
        raise UnknownModelError(
            f"unknown model {name!r}; available: {', '.join(_available(repo))}{where}"
        )
    if version is not None:
        raise UnknownModelError(f"{name} is a built-in model and has no versions; use {name!r}")
    spec = get_model_spec(name)
    return ResolvedModel(
        name, None, spec.input_shape, (spec.num_outputs,), "zoo", spec.description,
        polynomial_degree=spec.polynomial_degree,
    )  # fmt: skip


def _available(repo: ModelRepository | None) -> list[str]:
    names = repo.names() if repo is not None else []
    return [*names, *(n for n in MODELS if n not in names)]


def load_served_model(
    name: str,
    version: int | None,
    *,
    repository: Path | None,
    cache_dir: Path,
    device: str = "cpu",
    train: bool = False,
) -> nn.Module | Any:
    """The module for ``name`` (version ``version``) on ``device``. Zoo models that need
    training train only with ``train``; otherwise an unprepared one raises
    :class:`~codedfarm.errors.ModelUnavailableError` with the fix."""
    repo = ModelRepository(repository) if repository is not None else None
    if version is not None or (repo is not None and repo.has(name)):
        if repo is None:
            raise UnknownModelError(
                f"model {name}@{version} is a repository model, but no model repository is set "
                "(CODEDFARM_MODEL_REPOSITORY or --model-repository)"
            )
        from codedfarm.models.loading import load_repository_model

        return load_repository_model(repo.get(name, version), device)
    from codedfarm.models.registry import load_model

    return load_model(name, cache_dir, device, train=train)
