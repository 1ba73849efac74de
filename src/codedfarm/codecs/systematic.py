"""The rows of a systematic code's decode: which come from their own worker's result
(unchanged) and which the decoder reconstructs, and how the two are put together.

A systematic code's workers ``0..k-1`` compute the inputs themselves (the encoder's first
``k`` rows are the identity), so row ``i`` of a decode is worker ``i``'s result whenever
it is in (and not rejected), bit for bit, whatever space the decoder works in and however
it smooths; only the other rows are decoded, from every result kept. Where the parity
workers sit is :func:`codedfarm.codecs.points.systematic_points` (docs/systematic.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from codedfarm.codecs.arrays import Array, FloatMatrix, is_torch

__all__ = [
    "as_decoded_dtype",
    "assemble_rows",
    "split_rows",
    "systematic_unsupported",
    "unit_rows",
    "with_own_rows",
]

Rows = tuple[int, ...]


def systematic_unsupported(codec: str) -> str:
    """The error for ``systematic=true`` on a code without that parameter."""
    already = " (its first k workers compute the inputs already)" if codec == "mds" else ""
    return (
        f"{codec}: systematic=true is not available{already}; it is a parameter of the "
        "approximate codes berrut, spline and letcc"
    )


def split_rows(k: int, workers: Sequence[int], systematic: bool) -> tuple[Rows, Rows]:
    """``(own, missing)``: the rows answered by their own worker's result among
    ``workers`` (none unless ``systematic``) and the rows left to decode."""
    present = set(workers)
    if not systematic:
        return (), tuple(range(k))
    own = tuple(i for i in range(k) if i in present)
    return own, tuple(i for i in range(k) if i not in present)


def as_decoded_dtype(values: Array) -> Array:
    """Own results as a decode returns them: integer and bool results as float64 (as the
    decoder's matrix product would give), floating results untouched."""
    if is_torch(values):
        import torch

        floating = values.is_floating_point() or values.is_complex()
        return values if floating else values.to(torch.float64)
    array = np.asarray(values)
    return array if np.issubdtype(array.dtype, np.inexact) else array.astype(np.float64)


def assemble_rows(k: int, decoded: Array, missing: Rows, own_values: Array, own: Rows) -> Array:
    """``(k, *out_shape)``: ``decoded`` at rows ``missing`` and ``own_values`` (the own
    results, copied unchanged) at rows ``own``, of ``decoded``'s type, device and dtype."""
    trailing = tuple(decoded.shape[1:])
    if is_torch(decoded):
        import torch

        out = torch.empty((k, *trailing), dtype=decoded.dtype, device=decoded.device)
        out[list(missing)] = decoded
        out[list(own)] = own_values.to(decoded.dtype)
        return out
    out_np = np.empty((k, *trailing), dtype=decoded.dtype)
    out_np[list(missing)] = decoded
    out_np[list(own)] = own_values
    return out_np


def with_own_rows(matrix: FloatMatrix, workers: Sequence[int], k: int) -> FloatMatrix:
    """``matrix`` ``(k, m)`` with row ``i`` taking worker ``i``'s result alone wherever
    ``i < k`` is among ``workers``: the decoder matrix of a systematic code (``decode``
    copies those rows; this keeps ``decoder_matrix`` the same map in linear space)."""
    out = np.array(matrix, dtype=np.float64)
    for position, worker in enumerate(workers):
        if worker < k:
            out[worker] = 0.0
            out[worker, position] = 1.0
    return out


def unit_rows(encoder: FloatMatrix) -> tuple[int | None, ...]:
    """For each row of an ``(n, k)`` encoder, the input it copies unchanged (the row is that
    input's unit vector), else None: the tasks whose results are a row's own prediction."""
    rows: list[int | None] = []
    for weights in encoder:
        nonzero = np.flatnonzero(weights)
        single = len(nonzero) == 1 and weights[nonzero[0]] == 1.0
        rows.append(int(nonzero[0]) if single else None)
    return tuple(rows)
