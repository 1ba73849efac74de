"""Baselines: no coding (``uncoded``) and ``r``-fold replication."""

from __future__ import annotations

from typing import Any

import numpy as np

from codedfarm.codecs.arrays import FloatMatrix
from codedfarm.codecs.base import Codec, Workers
from codedfarm.errors import CodecParameterError, NotEnoughResultsError

__all__ = ["ReplicationCodec", "UncodedCodec"]


class ReplicationCodec(Codec):
    """``n = r * k`` workers; worker ``j`` computes input ``j % k``.

    Decoding averages the copies that came back and needs at least one copy of every
    input. Exact for any function.
    """

    name = "replication"
    exact = True

    def __init__(self, k: int, n: int, **kwargs: Any) -> None:
        super().__init__(k, n, **kwargs)
        if self.n % self.k:
            raise CodecParameterError(
                f"{self.name}: n must be a multiple of k (n = r*k copies), "
                f"got k={self.k}, n={self.n}"
            )

    @classmethod
    def default_n(cls, k: int, s: int, params: dict[str, Any]) -> int:
        """``s + 1`` copies of every input: any ``s`` stragglers leave one of each."""
        return k * (s + 1)

    @classmethod
    def default_wait_for(cls, k: int, n: int, s: int) -> int:
        """``k``: the first copy of every input decodes (exactly), whichever copies they are."""
        return k

    @classmethod
    def fit_workers(cls, k: int, n: int, s: int) -> tuple[int, int]:
        """The most whole copies of each input that fit in the budget, ``k * (n // k)``
        tasks (at least one copy each), tolerating at most one fewer than that."""
        fitted = k * max(1, n // k)
        return fitted, min(s, fitted - 1)

    @property
    def replicas(self) -> int:
        """Copies of each input, ``r = n / k``."""
        return self.n // self.k

    @property
    def base_min_results(self) -> int:
        return self.k

    def params(self) -> dict[str, Any]:
        return {"r": self.replicas}

    def input_of(self, worker: int) -> int:
        """Index of the input worker ``worker`` computes."""
        return worker % self.k

    def _build_encoder(self) -> FloatMatrix:
        matrix = np.zeros((self.n, self.k))
        matrix[np.arange(self.n), np.arange(self.n) % self.k] = 1.0
        return matrix

    def _check_decodable(self, workers: Workers) -> None:
        super()._check_decodable(workers)
        missing = sorted(set(range(self.k)) - {self.input_of(w) for w in workers})
        if missing:
            shown = missing[:10]
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise NotEnoughResultsError(
                f"{self.name}: no copy came back for inputs {shown}{more} "
                f"(k={self.k}, n={self.n}, {len(workers)} results)"
            )

    def _build_decoder(self, workers: Workers) -> FloatMatrix:
        matrix = np.zeros((self.k, len(workers)))
        inputs = np.asarray(workers, dtype=np.int64) % self.k
        matrix[inputs, np.arange(len(workers))] = 1.0
        matrix /= matrix.sum(axis=1, keepdims=True)
        return matrix


class UncodedCodec(ReplicationCodec):
    """One worker per input (``n == k``); every result is needed."""

    name = "uncoded"

    def __init__(self, k: int, n: int | None = None, **kwargs: Any) -> None:
        n = k if n is None else n
        if n != k:
            raise CodecParameterError(f"{self.name}: n must equal k, got k={k}, n={n}")
        super().__init__(k, n, **kwargs)

    @classmethod
    def default_n(cls, k: int, s: int, params: dict[str, Any]) -> int:
        """One worker per input."""
        return k

    @classmethod
    def default_wait_for(cls, k: int, n: int, s: int) -> int:
        """Every result (``n - s``: a given ``s`` > 0 is refused, nothing can be missing)."""
        return n - s

    @classmethod
    def fit_workers(cls, k: int, n: int, s: int) -> tuple[int, int]:
        """One task per input, whatever the budget; it tolerates no straggler."""
        return k, 0

    def params(self) -> dict[str, Any]:
        return {}
