"""numpy / torch glue for the codecs: one matrix product over flattened trailing dims.

torch is imported lazily and only when a torch tensor is passed in, so the codecs work
(and import fast) without it.
"""

from __future__ import annotations

import sys
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

from codedfarm.errors import NonFiniteError, ShapeError

__all__ = ["Array", "FloatMatrix", "apply_matrix", "check_finite", "is_torch", "leading_dim"]

Array: TypeAlias = Any
"""A numpy array or a torch tensor (torch is optional, so the alias stays loose)."""

FloatMatrix: TypeAlias = npt.NDArray[np.float64]


def is_torch(x: object) -> bool:
    """True if ``x`` is a torch tensor (without importing torch when it is not loaded)."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def leading_dim(x: Array) -> int:
    """Length of the first axis of ``x``; 0-d input has none."""
    shape = tuple(x.shape)
    return int(shape[0]) if shape else -1


def check_finite(x: Array, codec: str, what: str) -> None:
    """Raise :class:`NonFiniteError` naming ``codec`` and ``what`` if ``x`` holds a NaN or
    an Inf."""
    if is_torch(x):
        import torch

        finite = bool(torch.isfinite(x).all().item())
    else:
        # one matrix-vector product of row sums flags any NaN or Inf (they propagate) at a
        # third of the cost of np.isfinite's full boolean array; a row whose finite values
        # overflow the sum is rare, and then the exact check decides (so the overflow is
        # expected here, not worth numpy's RuntimeWarning)
        xa = np.asarray(x)
        finite = False
        if np.issubdtype(xa.dtype, np.floating) and xa.size:
            rows = xa.reshape(len(xa), -1)
            with np.errstate(over="ignore", invalid="ignore"):
                sums = rows @ np.ones(rows.shape[1], rows.dtype)
            finite = bool(np.isfinite(sums).all())
        if not finite:
            finite = bool(np.isfinite(xa).all())
    if not finite:
        raise NonFiniteError(
            f"{codec}: {what} of shape {tuple(x.shape)} contains NaN or Inf; "
            "coded computing needs finite values"
        )


def apply_matrix(
    matrix: FloatMatrix,
    x: Array,
    *,
    codec: str,
    what: str,
    torch_matrix: Any = None,
    out: Array | None = None,
) -> Array:
    """Return ``matrix @ x`` over the flattened trailing dims of ``x``.

    ``matrix`` is ``(r, c)`` float64; ``x`` is ``(c, *shape)``; the result is
    ``(r, *shape)`` of the same array type, device and dtype as ``x`` (integer and bool
    inputs are promoted to float64, since coded values are not integers).
    ``torch_matrix`` may pass ``matrix`` already converted for ``x``'s device and dtype.
    ``out``, if given, is a contiguous ``(r, *shape)`` array of the result's type and dtype
    to write into (reusing a buffer avoids page-faulting a fresh one for large batches).
    """
    if not hasattr(x, "shape") or not hasattr(x, "reshape"):
        x = np.asarray(x)
    rows, cols = matrix.shape
    if leading_dim(x) != cols:
        raise ShapeError(
            f"{codec}: {what} must have leading dimension {cols}, got shape {tuple(x.shape)}"
        )
    check_finite(x, codec, what)
    trailing = tuple(x.shape[1:])
    if is_torch(x):
        import torch

        if not (x.is_floating_point() or x.is_complex()):
            x = x.to(torch.float64)
        m = (
            torch_matrix
            if torch_matrix is not None
            else torch.from_numpy(np.array(matrix)).to(dtype=x.dtype, device=x.device)
        )
        if out is None:
            return (m @ x.reshape(cols, -1)).reshape((rows, *trailing))
        _check_out(out, (rows, *trailing), x.dtype, codec)
        torch.mm(m, x.reshape(cols, -1), out=out.view(rows, -1))
        return out
    xa = np.asarray(x)
    if not np.issubdtype(xa.dtype, np.inexact):
        xa = xa.astype(np.float64)
    m_np = matrix if xa.dtype == np.float64 else matrix.astype(xa.dtype)
    if out is None:
        return (m_np @ xa.reshape(cols, -1)).reshape((rows, *trailing))
    _check_out(out, (rows, *trailing), xa.dtype, codec)
    np.matmul(m_np, xa.reshape(cols, -1), out=out.reshape(rows, -1))
    return out


def _check_out(out: Array, shape: tuple[int, ...], dtype: Any, codec: str) -> None:
    contiguous = out.is_contiguous() if is_torch(out) else bool(out.flags.c_contiguous)
    if tuple(out.shape) != shape or out.dtype != dtype or not contiguous:
        raise ShapeError(
            f"{codec}: out must be a contiguous array of shape {shape} and dtype {dtype}, "
            f"got shape {tuple(out.shape)} and dtype {out.dtype}"
        )
