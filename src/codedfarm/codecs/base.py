"""The codec contract shared by every code: a linear encoder and per-set linear decoders."""

from __future__ import annotations

import abc
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from codedfarm.codecs.arrays import Array, FloatMatrix, apply_matrix, check_finite, is_torch
from codedfarm.codecs.byzantine import locate_wrong_results, loo_from_predictor
from codedfarm.codecs.byzantine_systematic import locate_wrong_systematic
from codedfarm.codecs.cache import DEFAULT_CACHE_SIZE, LRUCache
from codedfarm.codecs.output_space import (
    check_space,
    from_decode_space,
    resolve_space,
    to_decode_space,
)
from codedfarm.codecs.params import check_bool, check_workers, format_param
from codedfarm.codecs.systematic import (
    as_decoded_dtype,
    assemble_rows,
    split_rows,
    systematic_unsupported,
    unit_rows,
    with_own_rows,
)
from codedfarm.codecs.threads import single_threaded_blas
from codedfarm.errors import (
    CodecParameterError,
    NotEnoughResultsError,
    ShapeError,
)

__all__ = [
    "Codec",
    "Decoded",
    "Rows",
    "Workers",
    "byzantine_unsupported",
    "check_int",
]

Workers = tuple[int, ...]
Rows = tuple[int, ...]
"""Indexes of decoded rows (inputs), in ``[0, k)``."""


@dataclass(frozen=True)
class Decoded:
    """What one decode produced: the values and what the decode chose on the way.

    ``values``: ``(k, *out_shape)``, the type, device and dtype of the results.
    ``workers``: the results used, in order. ``lam_dec``: the smoothing the decoder used
    (spline codes; the GCV choice under ``lam_dec="auto"``), else None (also when no row
    needed decoding). ``rejected``: the workers whose results a ``byzantine`` decode
    judged wrong and left out. ``own``: the rows answered with their own worker's result,
    unchanged (systematic codes: row ``i`` when worker ``i``'s result was returned and not
    rejected). ``decoded``: the rows the decoder reconstructed from the results (every row
    of a code that is not systematic). ``space_used``: where the decoder interpolated,
    ``linear`` or ``log`` (what ``space=auto`` chose).
    """

    values: Array
    workers: Workers
    lam_dec: float | None = None
    rejected: Workers = ()
    own: Rows = ()
    decoded: Rows = ()
    space_used: str = "linear"


def check_int(codec: str, name: str, value: object, minimum: int) -> int:
    """Return ``value`` as an int >= ``minimum`` or raise :class:`CodecParameterError`."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise CodecParameterError(
            f"{codec}: {name} must be an integer, got {value!r} ({type(value).__name__})"
        )
    if value < minimum:
        raise CodecParameterError(f"{codec}: {name} must be >= {minimum}, got {value}")
    return int(value)


def byzantine_unsupported(codec: str) -> str:
    """The error for ``byzantine`` on a code whose results cannot check each other."""
    return (
        f"{codec}: byzantine decoding is not available: its results do not predict each "
        "other (use berrut, spline, letcc, lagrange or mds)"
    )


def _read_only(matrix: FloatMatrix) -> FloatMatrix:
    out = np.ascontiguousarray(matrix, dtype=np.float64)
    out.setflags(write=False)
    return out


class Codec(abc.ABC):
    """A linear code over ``k`` inputs and ``n`` workers.

    ``encode``: ``(k, *in_shape) -> (n, *in_shape)`` as ``encoder_matrix @ x``.
    ``decode``: ``(m, *out_shape)`` results of workers ``workers`` ``-> (k, *out_shape)``
    as ``decoder_matrix(workers) @ y``. Both accept numpy arrays or torch tensors and
    return the same type, device and dtype.
    """

    name: ClassVar[str]
    exact: ClassVar[bool] = False
    """True if decode is exact for the functions the code is made for."""
    PARAMS: ClassVar[dict[str, type]] = {}
    """Spec parameters beyond k and n, with their types (``spline:lam_enc=0`` -> float)."""
    takes_s: ClassVar[bool] = False
    """True if the code's parameters depend on S, the stragglers tolerated (given as ``s``)."""
    DEFAULT_SPACE: ClassVar[str] = "linear"
    """The ``space`` a codec decodes in when its spec names none (``auto`` for the
    approximate codes; an explicit value different from it shows in ``spec``)."""
    space: str = "linear"
    """``log``: the results are probabilities; decode their logarithms, return probabilities;
    ``auto``: ``log`` when every result is a probability vector, else ``linear`` (codes
    with a ``space`` entry in ``PARAMS``; see output_space.py)."""
    systematic: bool = False
    """True if workers ``0..k-1`` compute the inputs themselves (the encoder's first ``k``
    rows are the identity) and their results are returned unchanged: ``systematic=true``
    on the codes with that entry in ``PARAMS`` (docs/systematic.md)."""
    byzantine: int = 0
    """Wrong results the decoder locates and leaves out (``byzantine=A``; codes whose
    results predict each other: those with a ``byzantine`` entry in ``PARAMS``)."""

    @classmethod
    def exact_degree(cls, params: dict[str, Any]) -> int | None:
        """For a code exact only on polynomials, the highest degree of f it is exact for
        (MDS 1: linear and affine f); None for codes exact on any f (replication) and for
        approximate codes."""
        return None

    @classmethod
    def default_n(cls, k: int, s: int, params: dict[str, Any]) -> int:
        """Workers used when a batch names none: ``k + s`` for exact codes (the fewest that
        tolerate ``s`` stragglers), ``3k`` for approximate ones (NeRCC's ratio), and
        ``k + max(k, s)`` for systematic ones (a parity worker beside every input, and at
        least ``s``; docs/systematic.md), plus ``2A`` for a decoder that locates ``A``
        wrong results (``byzantine=A``)."""
        extra = 2 * int(params.get("byzantine", 0))
        if cls.exact:
            return k + s + extra
        if check_bool(cls.name, "systematic", params.get("systematic", False)):
            return k + max(k, s) + extra
        return 3 * k + extra

    @classmethod
    def default_wait_for(cls, k: int, n: int, s: int) -> int:
        """Results a batch decodes at when it names none: ``n - s`` (any ``s`` may be late)."""
        return n - s

    @classmethod
    def fit_workers(cls, k: int, n: int, s: int) -> tuple[int, int]:
        """``(n, s)`` this code uses for ``k`` inputs within a budget of ``n`` workers
        tolerating ``s``, when the budget was set for any code or for a larger group (the
        server's flags; a partial coding group). Most codes take it as it is: a code for
        fewer inputs on the same workers decodes them more closely (docs/serve.md)."""
        return n, s

    def __init__(
        self,
        k: int,
        n: int,
        *,
        byzantine: int = 0,
        space: str | None = None,
        systematic: bool = False,
        cache_size: int = DEFAULT_CACHE_SIZE,
    ) -> None:
        self.k = check_int(self.name, "k", k, 1)
        self.n = check_int(self.name, "n", n, 1)
        if self.n < self.k:
            raise CodecParameterError(
                f"{self.name}: n must be >= k (one coded input per worker), "
                f"got k={self.k}, n={self.n}"
            )
        self.byzantine = check_int(self.name, "byzantine", byzantine, 0)
        if self.byzantine and "byzantine" not in self.PARAMS:
            raise CodecParameterError(byzantine_unsupported(self.name))
        self.space = check_space(self.name, self.DEFAULT_SPACE if space is None else space)
        if self.space != "linear" and "space" not in self.PARAMS:
            raise CodecParameterError(f"{self.name}: decodes in linear space only")
        self.systematic = check_bool(self.name, "systematic", systematic)
        if self.systematic and "systematic" not in self.PARAMS:
            raise CodecParameterError(systematic_unsupported(self.name))
        self._encoder: FloatMatrix | None = None
        self._own_tasks: tuple[int | None, ...] | None = None
        self._decoders: LRUCache[Hashable, FloatMatrix] = LRUCache(cache_size)
        self._device_matrices: LRUCache[Hashable, Any] = LRUCache(cache_size)

    # ----- what subclasses provide -------------------------------------------------------
    @property
    @abc.abstractmethod
    def base_min_results(self) -> int:
        """Fewest results the code decodes from when every result is right."""

    def _result_predictor(self, known: Workers, targets: Workers) -> FloatMatrix:
        """``(len(targets), len(known))``: the results the code expects at workers
        ``targets`` from the results of workers ``known`` (codes that take ``byzantine``)."""
        raise NotImplementedError(byzantine_unsupported(self.name))

    def _loo_matrix(self, workers: Workers) -> FloatMatrix | None:
        """``(m, m)`` leave-one-out residual matrix over ``workers`` in closed form, or None
        (then it is built from :meth:`_result_predictor`, one result at a time)."""
        return None

    @abc.abstractmethod
    def _build_encoder(self) -> FloatMatrix:
        """The ``(n, k)`` encoder matrix."""

    @abc.abstractmethod
    def _build_decoder(self, workers: Workers) -> FloatMatrix:
        """The ``(k, len(workers))`` decoder for results ordered as ``workers``."""

    @property
    def min_results(self) -> int:
        """Fewest results ``decode`` accepts: the code's own minimum plus ``2A`` under
        ``byzantine=A`` (each wrong result must be outvoted, as in Reed-Solomon decoding)."""
        return self.base_min_results + 2 * self.byzantine

    def params(self) -> dict[str, Any]:
        """Codec parameters beyond k and n (used in records and ``spec``)."""
        return self._decode_params()

    def _decode_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {}
        if self.space != self.DEFAULT_SPACE:
            params["space"] = self.space
        if self.byzantine:
            params["byzantine"] = self.byzantine
        if self.systematic:
            params["systematic"] = True
        return params

    def _check_decodable(self, workers: Workers) -> None:
        if len(workers) < self.min_results:
            raise NotEnoughResultsError(
                f"{self.name}: needs at least {self.min_results} results "
                f"(k={self.k}, n={self.n}), got {len(workers)}"
            )

    # ----- the contract ------------------------------------------------------------------
    @property
    def spec(self) -> str:
        """A one-line description, e.g. ``spline:k=8,n=24,lam_enc=1e-06,lam_dec=0.0001``."""
        items = {"k": self.k, "n": self.n, **self.params()}
        return f"{self.name}:" + ",".join(
            f"{key}={format_param(value)}" for key, value in items.items()
        )

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.spec}>"

    @property
    def encoder_matrix(self) -> FloatMatrix:
        """``(n, k)`` float64, read-only."""
        if self._encoder is None:
            with single_threaded_blas():
                matrix = np.array(self._build_encoder(), dtype=np.float64)
            assert matrix.shape == (self.n, self.k), matrix.shape
            if self.systematic:  # worker i < k computes input i itself, exactly
                matrix[: self.k] = np.eye(self.k)
            self._encoder = _read_only(matrix)
        return self._encoder

    @property
    def own_tasks(self) -> tuple[int | None, ...]:
        """For each of the ``n`` tasks, the row whose prediction its result *is* (its
        encoder row is that row's unit vector: a systematic code's first ``k`` tasks,
        uncoded, every copy of replication), or None for a parity task. Only codes whose
        decode returns such a result unchanged name rows here (exact codes and systematic
        ones); a ``byzantine`` decode must check every result first, so it names none.
        Early answers (the collector's ``wait="own"``) rest on this."""
        if self._own_tasks is None:
            named = (self.exact or self.systematic) and not self.byzantine
            self._own_tasks = unit_rows(self.encoder_matrix) if named else (None,) * self.n
        return self._own_tasks

    def validate_workers(self, workers: Iterable[int]) -> Workers:
        """Return ``workers`` as a tuple of distinct ints in ``[0, n)`` or raise."""
        return check_workers(self.name, self.n, workers)

    def decoder_matrix(self, workers: Iterable[int]) -> FloatMatrix:
        """``(k, m)`` float64 decoder for the results of ``workers`` (in that order), cached."""
        ids = self.validate_workers(workers)
        self._check_decodable(ids)
        return self._cached_decoder(ids)

    def _cached_decoder(self, key: Hashable) -> FloatMatrix:
        matrix = self._decoders.get(key)
        if matrix is None:
            with single_threaded_blas():
                matrix = _read_only(self._make_decoder(key))
            self._decoders.put(key, matrix)
        return matrix

    def _make_decoder(self, key: Hashable) -> FloatMatrix:
        assert isinstance(key, tuple)
        matrix = self._build_decoder(key)
        assert matrix.shape == (self.k, len(key)), matrix.shape
        return self._with_own_rows(matrix, key)

    def _with_own_rows(self, matrix: FloatMatrix, workers: Workers) -> FloatMatrix:
        """A systematic code's decoder matrix takes row ``i`` from worker ``i``'s result."""
        return with_own_rows(matrix, workers, self.k) if self.systematic else matrix

    def _device_matrix(self, key: Hashable, matrix: FloatMatrix, like: Array) -> Any:
        """``matrix`` as a torch tensor on ``like``'s device and dtype (cached), else None."""
        if not is_torch(like) or not like.is_floating_point():
            return None
        if key is None:
            import torch

            return torch.from_numpy(np.array(matrix)).to(dtype=like.dtype, device=like.device)
        full_key = (key, str(like.device), str(like.dtype))
        tensor = self._device_matrices.get(full_key)
        if tensor is None:
            import torch

            tensor = torch.from_numpy(np.array(matrix)).to(dtype=like.dtype, device=like.device)
            self._device_matrices.put(full_key, tensor)
        return tensor

    def encode(self, x: Array, *, out: Array | None = None) -> Array:
        """Encode a batch: ``(k, *in_shape) -> (n, *in_shape)``, optionally into ``out``."""
        matrix = self.encoder_matrix
        return apply_matrix(
            matrix,
            x,
            codec=self.name,
            what="input batch x",
            torch_matrix=self._device_matrix("encoder", matrix, x),
            out=out,
        )

    def decode(self, y: Array, workers: Iterable[int]) -> Array:
        """Decode: results ``(m, *out_shape)`` of ``workers`` -> ``(k, *out_shape)``."""
        return self.decode_report(y, workers).values

    def decode_report(self, y: Array, workers: Iterable[int]) -> Decoded:
        """As :meth:`decode`, returning the values with what the decode chose (its lambda,
        the results it rejected, the rows it reconstructed, the space it decoded in).

        A systematic code returns row ``i`` as worker ``i``'s result, unchanged, whenever
        that result is among ``y`` (and not rejected), and reconstructs only the other rows
        from all the results kept. The codec keeps no per-decode state, so one codec can
        serve many batches at once.
        """
        ids = self.validate_workers(workers)
        shape = tuple(getattr(y, "shape", np.shape(y)))
        if not shape or shape[0] != len(ids):
            raise ShapeError(
                f"{self.name}: results y have shape {shape} but {len(ids)} worker ids were "
                "given; y's leading dimension must equal len(workers)"
            )
        self._check_decodable(ids)
        if not hasattr(y, "reshape"):
            y = np.asarray(y)
        not_probs: tuple[int, ...] = ()
        if self.space == "log" and not self.byzantine:
            space = "log"  # decoded as they are: no check needed
        else:
            space, not_probs = resolve_space(self.space, y, self.byzantine)
        rejected: Workers = ()
        if self.byzantine:
            ids, y, rejected = self._leave_out_wrong(y, ids, not_probs)
        own, missing = split_rows(self.k, ids, self.systematic)
        own_values = y[[ids.index(i) for i in own]] if own else None
        if not missing:  # every row is its own result: nothing to decode
            check_finite(y, self.name, "worker results y")
            return Decoded(as_decoded_dtype(own_values), ids, None, rejected, own, (), space)
        decoded, lam = self._decode_rows(to_decode_space(y, space), ids, missing)
        values = from_decode_space(decoded, space)
        if own:
            values = assemble_rows(self.k, values, missing, own_values, own)
        return Decoded(values, ids, lam, rejected, own, missing, space)

    def _decode_rows(self, y: Array, ids: Workers, rows: Rows) -> tuple[Array, float | None]:
        """Rows ``rows`` (all ``k``, or the missing ones of a systematic code) decoded from
        results ``y`` (in the decode space) of workers ``ids``, and the decoder lambda."""
        key, matrix, lam = self._decoder_for(y, ids)
        if len(rows) < self.k:
            matrix = matrix[list(rows)]
            key = None if key is None else ("rows", key, rows)
        values = apply_matrix(
            matrix,
            y,
            codec=self.name,
            what="worker results y",
            torch_matrix=self._device_matrix(key, matrix, y),
        )
        return values, lam

    def _leave_out_wrong(
        self, y: Array, ids: Workers, not_probs: Sequence[int] = ()
    ) -> tuple[Workers, Array, Workers]:
        """The workers kept, their results, and the workers rejected. ``not_probs``: results
        that are not probability vectors when the decode is in log space (``space=log``, or
        ``auto`` where it chose log): wrong whatever the others say; the locator compares the
        rest as returned (in log space, honest tiny probabilities wander, look wrong)."""
        if is_torch(y):
            flat = y.detach().reshape(len(ids), -1).double().cpu().numpy()
        else:
            flat = np.asarray(y, dtype=np.float64).reshape(len(ids), -1)
        bad = list(not_probs)
        valid = [i for i in range(len(ids)) if i not in bad]

        def predict(known: Sequence[int], targets: Sequence[int]) -> FloatMatrix:
            return self._result_predictor(
                tuple(ids[valid[i]] for i in known), tuple(ids[valid[i]] for i in targets)
            )

        def loo(positions: Sequence[int]) -> FloatMatrix:
            matrix = self._loo_matrix(tuple(ids[valid[i]] for i in positions))
            return loo_from_predictor(predict, positions) if matrix is None else matrix

        budget = self.byzantine - len(bad)
        if budget > 0 and len(valid) >= self.base_min_results:
            with single_threaded_blas():
                if self.systematic:  # own results beside their parity partners: see there
                    workers, beta = [ids[i] for i in valid], getattr(self, "_beta")  # noqa: B009
                    found = locate_wrong_systematic(
                        flat[valid], predict, budget, points=beta[workers], anchors=beta[:self.k],
                        own=[w < self.k for w in workers], min_kept=self.base_min_results,
                        loo=loo)  # fmt: skip
                else:
                    found = locate_wrong_results(
                        flat[valid], predict, budget, min_kept=self.base_min_results, loo=loo
                    )
            bad += [valid[i] for i in found]
        if not bad:
            return ids, y, ()
        keep = [i for i in range(len(ids)) if i not in bad]
        if len(keep) < self.base_min_results:
            raise NotEnoughResultsError(
                f"{self.name}: {len(bad)} of {len(ids)} results are not probabilities; "
                f"{len(keep)} left, fewer than the {self.base_min_results} it needs"
            )
        return tuple(ids[i] for i in keep), y[keep], tuple(sorted(ids[i] for i in bad))

    def _decoder_for(self, y: Array, ids: Workers) -> tuple[Hashable, FloatMatrix, float | None]:
        """The cache key (None: not cacheable), decoder matrix and decoder lambda (None for
        codes without one) for results ``y``. Data-adaptive codes override this."""
        return ids, self._cached_decoder(ids), None
