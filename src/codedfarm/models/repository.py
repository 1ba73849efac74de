"""A model repository: the user's models in a folder laid out as Triton users know it.

::

    <repository>/<name>/config.json          what the farm needs (see models/config.py)
    <repository>/<name>/<version>/model.pt   TorchScript (torch.jit.save), or
    <repository>/<name>/<version>/model.pt2  torch.export (torch.export.save), or, for a
                                             "factory" model, nothing or weights.pt

Versions are positive integers; a bare name means the highest version present. The folder
is read on every lookup (a listing and a small JSON file), so a version added while the
farm runs is used by the next batch. A version folder without its model file is not a
version yet (``codedfarm models add`` writes the file first and renames the folder into
place, so a version appears whole).
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from codedfarm.errors import ModelConfigError, UnknownModelError
from codedfarm.models.config import CONFIG_FILE, ModelConfig, read_model_config

__all__ = ["MODEL_FILES", "ModelRepository", "RepositoryModel"]

MODEL_FILES = {"model.pt": "torchscript", "model.pt2": "export"}
WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class RepositoryModel:
    """One version of a repository model."""

    name: str
    version: int
    directory: Path  # <repository>/<name>/<version>
    config: ModelConfig

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def format(self) -> str:
        """``torchscript``, ``export`` or ``factory``."""
        if self.config.factory:
            return "factory"
        for file, kind in MODEL_FILES.items():
            if (self.directory / file).exists():
                return kind
        return "missing"

    @property
    def file(self) -> Path | None:
        """The archive (or a factory model's weights), if there is one."""
        if self.config.factory:
            weights = self.directory / WEIGHTS_FILE
            return weights if weights.exists() else None
        for file in MODEL_FILES:
            if (self.directory / file).exists():
                return self.directory / file
        return None


def _version(entry: os.DirEntry[str]) -> int | None:
    name = entry.name
    if not entry.is_dir() or not name.isdigit() or name != str(int(name)) or int(name) < 1:
        return None
    return int(name)


class ModelRepository:
    """The models under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ModelRepository({str(self.root)!r})"

    def names(self) -> list[str]:
        """Model folders (those with a ``config.json``), sorted."""
        if not self.root.is_dir():
            return []
        return sorted(p.parent.name for p in self.root.glob(f"*/{CONFIG_FILE}"))

    def has(self, name: str) -> bool:
        return "/" not in name and name not in ("", ".", "..") and (self.root / name).is_dir()

    def config(self, name: str) -> ModelConfig:
        return read_model_config(self.root / name / CONFIG_FILE)

    def write_config(self, name: str, config: ModelConfig) -> None:
        """Write ``name``'s ``config.json`` whole: aside, then renamed into place (a reader
        sees the old file or the new one)."""
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f".{CONFIG_FILE}.{uuid.uuid4().hex}"
        tmp.write_text(config.to_json())
        os.replace(tmp, folder / CONFIG_FILE)

    def versions(self, name: str) -> list[int]:
        """The complete versions of ``name``, ascending."""
        folder = self.root / name
        factory = self.config(name).factory is not None
        found = []
        with os.scandir(folder) as entries:
            for entry in entries:
                version = _version(entry)
                if version is None:
                    continue
                if factory or any((Path(entry.path) / f).exists() for f in MODEL_FILES):
                    found.append(version)
        return sorted(found)

    def get(self, name: str, version: int | None = None) -> RepositoryModel:
        """Version ``version`` of ``name`` (None: the highest). Raises
        :class:`UnknownModelError` or :class:`ModelConfigError`."""
        if not self.has(name):
            raise UnknownModelError(f"no model {name!r} in the repository {self.root}")
        config = self.config(name)
        versions = self.versions(name)
        if not versions:
            raise UnknownModelError(
                f"model {name} in {self.root} has no version yet: add one with "
                f"`codedfarm models add {name} FILE ...` (a folder {name}/1/ with model.pt or "
                "model.pt2)"
            )
        if version is None:
            version = versions[-1]
        elif version not in versions:
            raise UnknownModelError(
                f"model {name} has no version {version} in {self.root}; versions: "
                f"{', '.join(map(str, versions))}"
            )
        return RepositoryModel(name, version, self.root / name / str(version), config)

    def add_version(self, name: str, file: Path, config: ModelConfig) -> RepositoryModel:
        """Copy ``file`` in as the next version of ``name`` (writing ``config.json`` for a new
        model). The version folder is filled first and then renamed into place."""
        kind = {".pt": "model.pt", ".pt2": "model.pt2"}.get(file.suffix)
        if kind is None:
            raise ModelConfigError(
                f"{file}: a model file must be TorchScript (.pt, torch.jit.save) or "
                "torch.export (.pt2, torch.export.save)"
            )
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / CONFIG_FILE).exists():
            self.write_config(name, config)
        staging = folder / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
        try:
            shutil.copyfile(file, staging / kind)
            while True:
                existing = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
                version = max(existing, default=0) + 1
                try:
                    os.rename(staging, folder / str(version))  # fails if another add won
                    break
                except OSError:
                    if not (folder / str(version)).exists():
                        raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return RepositoryModel(name, version, folder / str(version), self.config(name))
