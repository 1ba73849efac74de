"""Batches in files: ``.npy`` arrays read without ever unpickling."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from codedfarm.errors import InputError

__all__ = ["check_output_path", "load_batch_file", "save_predictions"]

NPY_MAGIC = b"\x93NUMPY"


def load_batch_file(path: Path) -> np.ndarray:
    """A ``.npy`` file as an array ``(K, *input_shape)``; raises :class:`InputError`."""
    if path.suffix != ".npy":
        raise InputError(f"{path}: expected a .npy file")
    try:
        with open(path, "rb") as file:
            head = file.read(len(NPY_MAGIC))
    except FileNotFoundError as exc:
        raise InputError(f"{path}: no such file") from exc
    except IsADirectoryError as exc:
        raise InputError(f"{path}: is a directory, not a .npy file") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read it ({exc.strerror})") from exc
    if head.startswith(b"PK"):
        raise InputError(f"{path}: expected one .npy array, got an .npz archive (numpy.savez)")
    if head != NPY_MAGIC:
        raise InputError(
            f"{path}: not a .npy array file (no .npy header); save the batch with numpy.save"
        )
    try:
        array = np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "allow_pickle" in str(exc):
            raise InputError(
                f"{path}: holds Python objects (a pickled object array), which the farm never "
                "loads; save a numeric array"
            ) from exc
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    except (OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from exc
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path}: expected one .npy array, got an .npz archive")
    return array


def check_output_path(path: Path) -> None:
    """Raise :class:`InputError` now, before a batch runs, if predictions cannot be saved to
    ``path`` (written exactly there: no suffix is added)."""
    if path.is_dir():
        raise InputError(f"--out {path}: is a directory; give a file name such as {path}/pred.npy")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"--out {path}: the folder {parent} does not exist")
    if not os.access(parent, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise InputError(f"--out {path}: not writable")


def save_predictions(path: Path, predictions: np.ndarray) -> None:
    """Save ``predictions`` as a .npy array at exactly ``path``."""
    with open(path, "wb") as file:
        np.save(file, predictions)
