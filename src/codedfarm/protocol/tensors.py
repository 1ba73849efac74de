"""Tensors as a wire carries them, read into float32: a (nested or flat) list of numbers,
or raw little-endian bytes (the Open Inference Protocol's two encodings, ``data`` and the
binary tensor data extension). Bad data is an :class:`~codedfarm.errors.InputError` that
names the tensor (``where``); the conversions' own errors stay inside this module.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from codedfarm.errors import InputError

__all__ = ["tensor_from_bytes", "tensor_from_data"]


def tensor_from_bytes(
    binary: bytes, size: object, shape: list[int], dtype: Any, where: str
) -> np.ndarray:
    """A tensor sent with the binary tensor data extension: raw little-endian values."""
    itemsize = np.dtype(dtype).itemsize
    if type(size) is not int or size != math.prod(shape) * itemsize or size > len(binary):
        raise InputError(f"{where}: binary_data_size {size!r} does not match shape {shape} of "
                         f"{np.dtype(dtype).name} with {len(binary)} bytes sent")  # fmt: skip
    if size != len(binary):
        raise InputError(f"{where}: {len(binary) - size} bytes of binary data left over")
    array = np.frombuffer(binary, np.dtype(dtype).newbyteorder("<"), count=math.prod(shape))
    with np.errstate(over="ignore", invalid="ignore"):
        x = array.reshape(shape).astype(np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{where}: data has NaN or infinite values (after conversion to FP32)")
    return x


def tensor_from_data(data: list[Any], shape: list[int], dtype: Any, where: str) -> np.ndarray:
    """A tensor sent as JSON numbers, flat (row-major) or nested as ``shape``."""
    count = math.prod(shape)
    try:  # nested or flat; bad values raise; out of float32's range: inf, refused below
        with np.errstate(over="ignore", invalid="ignore"):
            array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InputError(
            f"{where}: data is not a tensor of {np.dtype(dtype).name} ({exc})"
        ) from exc
    if array.size != count:
        raise InputError(f"{where}: {array.size} values for shape {shape} ({count} expected)")
    if array.ndim not in (1, len(shape)) or (array.ndim > 1 and list(array.shape) != shape):
        raise InputError(f"{where}: data nested as {list(array.shape)}, not as shape {shape}")
    with np.errstate(over="ignore", invalid="ignore"):
        x = array.reshape(shape).astype(np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{where}: data has NaN or infinite values (after conversion to FP32)")
    return x
