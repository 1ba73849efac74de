"""``parm``: learned parity models (ParM; Kosaian, Rashmi, Venkataraman, SOSP'19).

The ``k`` rows of a batch are split into ``p = n - k`` parity groups of consecutive rows,
as evenly as possible. Tasks ``0..k-1`` run the model on the rows themselves (systematic:
a row's own result is its answer, unchanged); task ``k + g`` runs a *parity model* on the
sum of group ``g``'s rows. A parity model of arity ``a`` (``group=a``) is a network trained
so that ``F_P(x_1 + ... + x_a) ≈ F(x_1) + ... + F(x_a)`` (``codedfarm parity train``); a
group of ``m < a`` rows fills the ``a`` slots cyclically (row ``r_(j mod m)`` in slot
``j``), so its parity input is ``Σ c_i x_i`` with whole multiplicities ``c_i`` summing to
``a`` and ``F_P ≈ Σ c_i F(x_i)``. One missing row ``i`` of a group is then reconstructed
as ``(y_parity − Σ_(l≠i) c_l y_l) / c_i``: linear in the results, so the decoder is a
matrix like every other code's. A group of one row has a copy of it instead (the model
itself on the same input: replication), which needs no parity model.

Each group tolerates one missing result (its row's or its parity's). With two missing in
one group the decode waits: :class:`~codedfarm.errors.NotEnoughResultsError` until the
row's own result or the deadline comes (then the batch times out, like a code with fewer
than its minimum of results). ``byzantine`` is not available: one parity per group can
at best tell that a group is inconsistent, never which result is wrong.

The default arity is ``ceil(k / p)``, the largest group; with ``group`` given, the default
``n`` is ``k + ceil(k / group)``. The parity model itself is found by the batch's
resolution (``codedfarm.models.parity``), not here: codecs are pure numerics.

``combine``: ``sum`` (the default) as above, or ``mean``: the parity model was trained to
output the *mean* ``Σ c_i F(x_i) / a`` (a model that ends in a softmax: its parity model,
the same architecture, can only output probability vectors), so the parity result counts
``a`` times: ``(a·y_parity − Σ_(l≠i) c_l y_l) / c_i``.

``target``: what the parity model's outputs sum. ``logits`` (the default): the model's
outputs as returned, so the decode above is all. ``probs``: their softmax over the last
axis; the rows' results are softmaxed before they are subtracted, and a rebuilt row is
returned as log-probabilities (``log`` of the rebuilt vector, clipped to
``[PROB_FLOOR, 1]`` and renormalized): logits whose softmax is the rebuilt vector, so a
batch's rows stay in one space.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np

from codedfarm.codecs.arrays import Array, FloatMatrix, is_torch
from codedfarm.codecs.base import Codec, Decoded, Workers, check_int
from codedfarm.errors import CodecParameterError, NotEnoughResultsError

__all__ = ["PARITY_COMBINES", "PARITY_TARGETS", "PROB_FLOOR", "ParmCodec", "parity_groups"]

PARITY_TARGETS = ("logits", "probs")
PARITY_COMBINES = ("sum", "mean")
PROB_FLOOR = 1e-12


def parity_groups(k: int, parities: int) -> tuple[tuple[int, ...], ...]:
    """``k`` rows split into ``parities`` groups of consecutive rows whose sizes differ by
    at most one (the larger first)."""
    base, extra = divmod(k, parities)
    groups: list[tuple[int, ...]] = []
    start = 0
    for g in range(parities):
        size = base + (1 if g < extra else 0)
        groups.append(tuple(range(start, start + size)))
        start += size
    return tuple(groups)


class ParmCodec(Codec):
    """Rows answered by their own tasks; one learned parity (or a copy) per group of rows.

    ``group``: the parity model's arity ``a`` (rows it was trained to sum), default
    ``ceil(k / (n - k))``. ``n`` must be in ``[k + 1, 2k]`` (k = 1: a row and its copy).
    """

    name = "parm"
    PARAMS: ClassVar[dict[str, type]] = {"group": int, "target": str, "combine": str}

    @classmethod
    def default_n(cls, k: int, s: int, params: dict[str, Any]) -> int:
        """``k + ceil(k / group)`` (one parity per ``group`` rows), ``k + ceil(k / 2)``
        without ``group``; at least one extra task."""
        group = params.get("group") or 2
        return k + max(1, math.ceil(k / max(1, int(group))))

    @classmethod
    def default_wait_for(cls, k: int, n: int, s: int) -> int:
        """``k``: the fewest results that can decode (each group's rows, or all but one
        and its parity); the decode waits longer while a group lacks two."""
        return k

    @classmethod
    def fit_workers(cls, k: int, n: int, s: int) -> tuple[int, int]:
        """A budget of ``n`` tasks for ``k`` rows: at most one parity per row (``2k``), at
        least one; tolerating one late result per group at most."""
        fitted = k + max(1, min(n - k, k))
        return fitted, min(s, fitted - k)

    def __init__(
        self,
        k: int,
        n: int,
        *,
        group: int | None = None,
        target: str = "logits",
        combine: str = "sum",
        **kwargs: Any,
    ) -> None:
        super().__init__(k, n, **kwargs)
        if combine not in PARITY_COMBINES:
            raise CodecParameterError(f"{self.name}: combine must be one of "
                                      f"{', '.join(PARITY_COMBINES)}, got {combine!r}")  # fmt: skip
        self.combine = combine
        if target not in PARITY_TARGETS:
            raise CodecParameterError(
                f"{self.name}: target must be one of {', '.join(PARITY_TARGETS)}, got {target!r}"
            )
        self.target = target
        parities = self.n - self.k
        if not 1 <= parities <= self.k:
            raise CodecParameterError(
                f"{self.name}: n must be between k + 1 and 2k (one parity per group of rows, "
                f"at most one per row), got k={self.k}, n={self.n}"
            )
        self.groups = parity_groups(self.k, parities)
        largest = max(len(g) for g in self.groups)
        self.arity = largest if group is None else check_int(self.name, "group", group, 1)
        self._explicit_group = group is not None
        if self.arity < largest:
            raise CodecParameterError(
                f"{self.name}: group={self.arity} rows per parity, but k={self.k} rows on "
                f"{parities} parities puts {largest} in a group: raise n to "
                f"{self.k + math.ceil(self.k / self.arity)}"
            )
        self.systematic = True  # by construction (no parameter to set)
        self.multiplicities = tuple(self._multiplicities(g) for g in self.groups)

    def _multiplicities(self, rows: tuple[int, ...]) -> tuple[int, ...]:
        """Whole multiplicities of ``rows`` in the parity input: the ``arity`` slots filled
        cyclically (a group of one row is a plain copy: multiplicity 1)."""
        if len(rows) == 1:
            return (1,)
        counts = [0] * len(rows)
        for slot in range(self.arity):
            counts[slot % len(rows)] += 1
        return tuple(counts)

    @property
    def parity_tasks(self) -> tuple[int, ...]:
        """Tasks that run the parity model (groups of two rows or more); a one-row group's
        extra task is a copy, run by the model itself."""
        return tuple(self.k + g for g, rows in enumerate(self.groups) if len(rows) > 1)

    @property
    def base_min_results(self) -> int:
        return self.k

    def params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"group": self.arity}
        if self.target != "logits":
            params["target"] = self.target
        if self.combine != "sum":
            params["combine"] = self.combine
        return params

    def decode_report(self, y: Array, workers: Iterable[int]) -> Decoded:
        """As every code's (one missing row per group rebuilt); under ``target=probs`` the
        rows' results are softmaxed before the subtraction and rebuilt rows come back as
        log-probabilities (the module's docstring)."""
        if self.target == "logits":
            return super().decode_report(y, workers)
        ids = self.validate_workers(workers)
        torch_like = y if is_torch(y) else None
        raw = (y.detach().cpu().double().numpy() if torch_like is not None
               else np.asarray(y, dtype=np.float64))  # fmt: skip
        parity = set(self.parity_tasks)
        summed = np.array(raw, copy=True)
        for position, worker in enumerate(ids):
            if worker not in parity and summed.ndim > 1:
                shifted = summed[position] - summed[position].max(axis=-1, keepdims=True)
                weights = np.exp(shifted)
                summed[position] = weights / weights.sum(axis=-1, keepdims=True)
        report = super().decode_report(summed, ids)
        values = np.array(report.values, dtype=np.float64)
        for row in report.decoded:
            probs = np.clip(values[row], PROB_FLOOR, 1.0)
            values[row] = np.log(probs / probs.sum(axis=-1, keepdims=True))
        for row in report.own:
            values[row] = raw[ids.index(row)]
        out: Array
        if torch_like is not None:
            import torch

            out = torch.from_numpy(values).to(dtype=torch_like.dtype, device=torch_like.device)
        else:
            dtype = np.asarray(y).dtype
            out = values.astype(dtype if np.issubdtype(dtype, np.floating) else np.float64)
        return replace(report, values=out)

    def _build_encoder(self) -> FloatMatrix:
        matrix = np.zeros((self.n, self.k))
        matrix[np.arange(self.k), np.arange(self.k)] = 1.0
        for g, (rows, counts) in enumerate(zip(self.groups, self.multiplicities, strict=True)):
            matrix[self.k + g, list(rows)] = counts
        return matrix

    def _missing(self, workers: Workers) -> list[tuple[int, int]]:
        """``(group, row)`` of each row whose own result is not among ``workers``."""
        present = set(workers)
        return [(g, row) for g, rows in enumerate(self.groups) for row in rows
                if row not in present]  # fmt: skip

    def _check_decodable(self, workers: Workers) -> None:
        super()._check_decodable(workers)
        present = set(workers)
        short: list[int] = []
        for g, rows in enumerate(self.groups):
            absent = [r for r in rows if r not in present]
            if len(absent) > 1 or (absent and self.k + g not in present):
                short.append(g)
        if short:
            shown = [list(self.groups[g]) for g in short[:5]]
            raise NotEnoughResultsError(
                f"{self.name}: groups {shown} lack two results (one missing row per group "
                f"is rebuilt from its parity), k={self.k}, n={self.n}, {len(workers)} results"
            )

    def _build_decoder(self, workers: Workers) -> FloatMatrix:
        """Row ``i`` of group ``g`` (missing): ``(y_parity − Σ_(l≠i) c_l y_l) / c_i`` (the
        parity counted ``a`` times under ``combine=mean``); rows whose own results are in
        are taken from them (the systematic rows)."""
        position = {w: p for p, w in enumerate(workers)}
        matrix = np.zeros((self.k, len(workers)))
        for g, row in self._missing(workers):
            rows, counts = self.groups[g], self.multiplicities[g]
            c = dict(zip(rows, counts, strict=True))
            weight = sum(counts) if self.combine == "mean" and len(rows) > 1 else 1
            matrix[row, position[self.k + g]] = weight / c[row]
            for other in rows:
                if other != row:
                    matrix[row, position[other]] = -c[other] / c[row]
        return matrix
