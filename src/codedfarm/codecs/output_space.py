"""Where a decoder interpolates: the results as returned, or their logarithms.

``space="log"`` is for models that return class probabilities (NeRCC's setting: the network
with its softmax). Probabilities along the encoder's curve are step-shaped: they jump from
one class to another between data points, and an interpolant overshoots every step (values
below 0 and above 1 made up 35–60% of the spline's squared error on the zoo CNNs). Their
logarithms change smoothly, so the decoder interpolates ``log(max(p, LOG_FLOOR))`` (centred
per row: softmax ignores a constant, and GCV then sees only the shape) and returns
``softmax`` of the result: non-negative rows that sum to one. Measured in docs/results.md.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from codedfarm.codecs.arrays import Array, is_torch
from codedfarm.errors import CodecParameterError

__all__ = [
    "LOG_FLOOR",
    "PROBABILITY_TOLERANCE",
    "SPACES",
    "check_space",
    "from_decode_space",
    "not_probabilities",
    "to_decode_space",
]

SPACES = ("linear", "log")

LOG_FLOOR = 1e-12
"""Smallest probability before the logarithm. Chosen on LeNet5 from {1e-4, ..., 1e-12}
(smaller was better there); RepVGG and the small ViT, held out, do not change below 1e-6."""


PROBABILITY_TOLERANCE = 1e-3
"""How far a returned probability vector may stray from the simplex (an entry below 0, or
a sum away from 1) before it counts as wrong; float32 softmax stays within 1e-6."""


def not_probabilities(y: npt.NDArray[np.float64]) -> tuple[int, ...]:
    """Rows of ``y`` ``(m, d)`` (``d`` classes) that are not probability vectors."""
    off = (y.min(axis=1) < -PROBABILITY_TOLERANCE) | (
        np.abs(y.sum(axis=1) - 1.0) > PROBABILITY_TOLERANCE
    )
    return tuple(int(i) for i in np.flatnonzero(off | ~np.isfinite(y).all(axis=1)))


def check_space(codec: str, value: object) -> str:
    """``value`` if it names a decode space, else :class:`CodecParameterError`."""
    if value not in SPACES:
        raise CodecParameterError(
            f"{codec}: space must be one of {', '.join(SPACES)}, got {value!r} (log: the model "
            "returns probabilities; decode their logarithms and return probabilities)"
        )
    return str(value)


def to_decode_space(y: Array, space: str) -> Array:
    """Results ``(m, *out_shape)`` as the decoder interpolates them (the last axis is the
    class axis under ``log``)."""
    if space == "linear":
        return y
    logs: Any
    if is_torch(y):
        logs = y.clamp_min(LOG_FLOOR).log()
        return logs - logs.mean(-1, keepdim=True)
    logs = np.log(np.maximum(y, LOG_FLOOR))
    return logs - logs.mean(-1, keepdims=True)


def from_decode_space(values: Array, space: str) -> Array:
    """Decoded values ``(k, *out_shape)`` back in the results' space (softmax under ``log``)."""
    if space == "linear":
        return values
    if is_torch(values):
        return values.softmax(-1)
    shifted = np.exp(values - values.max(-1, keepdims=True))
    return shifted / shifted.sum(-1, keepdims=True)
