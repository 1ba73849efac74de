"""Batches in files: ``.npy`` arrays read without ever unpickling."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codedfarm.errors import InputError

__all__ = ["load_batch_file"]


def load_batch_file(path: Path) -> np.ndarray:
    """A ``.npy`` file as an array ``(K, *input_shape)``; raises :class:`InputError`."""
    if path.suffix != ".npy":
        raise InputError(f"{path}: expected a .npy file")
    try:
        array = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(array, np.ndarray):
        raise InputError(f"{path}: expected one .npy array, got an .npz archive")
    return array
