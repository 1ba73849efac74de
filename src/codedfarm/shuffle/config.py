"""What a shuffle run is: the data set's rows, n workers, the storage fraction s, a scheme.

Model (docs/shuffle.md): q rows of R bytes each are split into n batches of b = q/n rows;
worker k processes its batch and may store s*q rows' worth of bytes (1/n <= s <= 1), its
own batch included. Every epoch a seeded random permutation of the rows gives every worker
a new batch; the master delivers what each lacks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codedfarm.errors import ConfigError, InputError

__all__ = ["LEE", "SCHEMES", "STRUCTURED", "UNCODED", "ShuffleConfig", "as_rows", "corner_point"]

UNCODED, LEE, STRUCTURED = "uncoded", "lee", "structured"
SCHEMES = (UNCODED, LEE, STRUCTURED)
"""uncoded: unicast; lee: Lee et al.'s coded shuffling (random row caches, XOR of rows per
holder set); structured: subset placement of chunks with coded multicast per (t+2)-set."""

_EPS = 1e-9


def corner_point(n: int, s: float) -> int:
    """The structured scheme's t: each chunk of a row is cached by t workers besides its
    owner, storage (t+1)/n; the largest corner point at or below ``s`` (0 <= t <= n-1)."""
    return min(n - 1, max(0, math.floor(s * n + _EPS) - 1))


@dataclass(frozen=True)
class ShuffleConfig:
    """A run: ``workers`` n >= 2, ``storage`` s in [1/n, 1], ``epochs`` >= 1, a scheme of
    :data:`SCHEMES`, the ``seed`` of placement and permutations, ``epoch_timeout`` seconds
    the master waits for every worker's acknowledgement of an epoch, ``key_ttl`` seconds
    of every Redis key the run writes."""

    workers: int
    storage: float
    epochs: int = 1
    scheme: str = STRUCTURED
    seed: int = 0
    epoch_timeout: float = 60.0
    key_ttl: float = 600.0

    def __post_init__(self) -> None:
        n, s = self.workers, self.storage
        if isinstance(n, bool) or not isinstance(n, int) or n < 2:
            raise ConfigError(f"--workers must be an integer >= 2, got {n!r}")
        if not isinstance(s, (int, float)) or not math.isfinite(s):
            raise ConfigError(f"--storage must be a number, got {s!r}")
        if s < 1.0 / n - _EPS or s > 1.0 + _EPS:
            raise ConfigError(
                f"--storage must be between 1/n = {1.0 / n:.4g} and 1 for n = {n} workers "
                f"(a worker stores at least its own batch), got {s:g}"
            )
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ConfigError(f"--epochs must be an integer >= 1, got {self.epochs!r}")
        if self.scheme not in SCHEMES:
            raise ConfigError(f"unknown scheme {self.scheme!r}; choose from {', '.join(SCHEMES)}")
        if not self.epoch_timeout > 0 or not self.key_ttl > 0:
            raise ConfigError("epoch_timeout and key_ttl must be positive seconds")

    @property
    def t(self) -> int:
        """The structured scheme's corner point (see :func:`corner_point`)."""
        return corner_point(self.workers, self.storage)

    def cache_rows(self, q: int) -> int:
        """Rows a worker of a row-level scheme (uncoded, lee) stores: floor(s*q) >= q/n."""
        return max(q // self.workers, min(q, math.floor(self.storage * q + _EPS)))


def as_rows(data: object, workers: int) -> npt.NDArray[np.uint8]:
    """The rows of ``data`` (first axis) as raw bytes, ``(q, R)`` uint8, with q a multiple
    of ``workers``: the last ``len(data) % workers`` rows (fewer than n) are dropped so the
    batches are equal. Refuses (:class:`InputError`) what cannot be split: not an array, 0-d,
    object/string/void dtypes, no bytes per row, fewer rows than workers."""
    if not isinstance(data, np.ndarray):
        raise InputError(f"the data must be a numpy array, got {type(data).__name__}")
    if data.ndim == 0:
        raise InputError("the data is a 0-d array: it has no rows to split")
    if data.dtype.kind not in "biufc":
        raise InputError(
            f"the data must be numeric (bool, int, float, complex), got dtype {data.dtype}"
        )
    if data.shape[0] < workers:
        raise InputError(
            f"the data has {data.shape[0]} rows, fewer than the {workers} workers: "
            "its rows cannot be split into batches"
        )
    q = data.shape[0] - data.shape[0] % workers
    rows = np.ascontiguousarray(data[:q]).reshape(q, -1)
    raw = rows.view(np.uint8).reshape(q, -1)
    if raw.shape[1] == 0:
        raise InputError("the data's rows are empty (0 bytes per row)")
    return raw
