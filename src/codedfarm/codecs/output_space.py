"""Where a decoder interpolates: the results as returned, or their logarithms.

``space="log"`` is for models that return class probabilities (NeRCC's setting: the network
with its softmax). Probabilities along the encoder's curve are step-shaped: they jump from
one class to another between data points, and an interpolant overshoots every step (values
below 0 and above 1 made up 35–60% of the spline's squared error on the zoo CNNs). Their
logarithms change smoothly, so the decoder interpolates ``log(max(p, LOG_FLOOR))`` (centred
per row: softmax ignores a constant, and GCV then sees only the shape) and returns
``softmax`` of the result: non-negative rows that sum to one. Measured in docs/results.md.

``space="auto"`` (the default of berrut, spline and letcc) decides per decode: log space
when every returned result is a probability vector along its last axis
(:func:`not_probabilities` finds none), linear space otherwise; :func:`resolve_space` makes
that choice, and ``Decoded.space_used`` records it. Under ``byzantine=A`` it allows up to
``A`` results that are not probabilities among ones that are: those are wrong (the model
evidently returns probabilities) and are rejected, as under ``space=log``
(docs/systematic.md).
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
    "resolve_space",
    "to_decode_space",
]

SPACES = ("linear", "log", "auto")

LOG_FLOOR = 1e-12
"""Smallest probability before the logarithm. Chosen on LeNet5 from {1e-4, ..., 1e-12}
(smaller was better there); RepVGG and the small ViT, held out, do not change below 1e-6."""


PROBABILITY_TOLERANCE = 1e-3
"""How far a returned probability vector may stray from the simplex (an entry below 0, or
a sum away from 1) before it counts as wrong; float32 softmax stays within 1e-6."""


def not_probabilities(y: Array) -> tuple[int, ...]:
    """Results of ``y`` ``(m, ..., d)`` that are not probability vectors along the last
    axis (``d`` classes): an entry below 0, a sum away from 1 (both beyond
    :data:`PROBABILITY_TOLERANCE`), or a value that is not finite. ``(m, d)``: one vector
    per result; ``(m, t, d)``: ``t`` vectors per result, each checked; ``(m,)``: one
    number per result, a probability vector only if it is 1. A torch tensor is checked
    on its device; only the verdicts travel."""
    shape = tuple(y.shape)
    if not shape:
        return ()
    m, d = shape[0], (shape[-1] if len(shape) > 1 else 1)
    if m == 0:
        return ()
    if d == 0:
        return tuple(range(m))
    if is_torch(y):
        vectors = y.reshape(m, -1, d)
        if not vectors.is_floating_point() or vectors.element_size() < 4:
            vectors = vectors.float()
        off = (vectors.amin(dim=2) < -PROBABILITY_TOLERANCE) | (
            (vectors.sum(dim=2) - 1.0).abs() > PROBABILITY_TOLERANCE
        )
        bad_t = off.any(dim=1) | ~vectors.isfinite().reshape(m, -1).all(dim=1)
        bad: npt.NDArray[np.bool_] = bad_t.cpu().numpy()
    else:
        flat = np.asarray(y, dtype=np.float64).reshape(m, -1, d)
        with np.errstate(invalid="ignore"):
            off_np = (flat.min(axis=2) < -PROBABILITY_TOLERANCE) | (
                np.abs(flat.sum(axis=2) - 1.0) > PROBABILITY_TOLERANCE
            )
        bad = off_np.any(axis=1) | ~np.isfinite(flat).reshape(m, -1).all(axis=1)
    return tuple(int(i) for i in np.flatnonzero(bad))


def resolve_space(space: str, y: Array, allowed: int = 0) -> tuple[str, tuple[int, ...]]:
    """The space a decode uses for results ``y`` ``(m, *out_shape)``, and the results
    that are not probability vectors when that space is ``log`` (wrong under
    ``byzantine``; the decode leaves them out).

    ``linear``: nothing checked. ``log``: as given. ``auto``: ``log`` when at most
    ``allowed`` results (the ``byzantine`` budget; 0 without it) are not probability
    vectors, and fewer than half of them; else ``linear``, with nothing flagged.
    """
    if space == "linear":
        return "linear", ()
    bad = not_probabilities(y)
    if space == "log" or (len(bad) <= allowed and 2 * len(bad) < len(y)):
        return "log", bad
    return "linear", ()


def check_space(codec: str, value: object) -> str:
    """``value`` if it names a decode space, else :class:`CodecParameterError`."""
    if value not in SPACES:
        raise CodecParameterError(
            f"{codec}: space must be one of {', '.join(SPACES)}, got {value!r} (log: the model "
            "returns probabilities; decode their logarithms and return probabilities; auto: "
            "log when every result is a probability vector, else linear)"
        )
    return str(value)


def to_decode_space(y: Array, space: str) -> Array:
    """Results ``(m, *out_shape)`` as the decoder interpolates them (the last axis is the
    class axis under ``log``). ``space`` is ``linear`` or ``log`` (``auto`` resolved)."""
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
