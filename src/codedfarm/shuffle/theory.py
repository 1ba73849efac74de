"""The load each scheme should send, computed from counts alone (never from the messages).

Two kinds, both in payload bytes:

- :func:`shuffle_load`: the exact load of one epoch, given who holds which row before it
  and the epoch's assignment. It counts needs by set and worker and takes the maxima, as
  the schemes' definitions say (docs/shuffle.md); the structured scheme's load depends on
  the permutation only through the n x n matrix of rows moving from worker j to worker k.
- :func:`mean_load`: the average of :func:`shuffle_load` over independent random
  placements and permutations (counting only): the expected load at this finite q, where
  the closed forms below are limits (the maxima over a set's members exceed the means).
- :func:`expected_load`: the closed forms in (q, n, s, R), for a uniformly random
  permutation: uncoded q(1-s)R; lee the decentralized coded-caching sum (q -> infinity);
  structured q(n-1-t)/(n(t+2)) R (a balanced shuffle).
- :func:`worst_case_optimum`: the least load any scheme with uncoded caches can promise
  for every shuffle, (q/n)(n-1-t)/(t+1) R at storage (t+1)/n, linear in between
  (docs/shuffle.md, "The optimum").

The measured bytes (counted at the Redis writes, :mod:`.channel`) are compared with
:func:`shuffle_load`; :func:`expected_load` gives the curves of the benchmark.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

from codedfarm.shuffle.config import LEE, STRUCTURED, UNCODED, ShuffleConfig
from codedfarm.shuffle.placement import ChunkLedger, RowLedger, assignment
from codedfarm.shuffle.schemes import Scheme

__all__ = [
    "expected_load",
    "lee_load",
    "mean_load",
    "shuffle_load",
    "structured_load",
    "transitions",
    "uncoded_load",
    "worst_case_optimum",
]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def transitions(old_owner: IntArray, new_owner: IntArray, n: int) -> IntArray:
    """``m[j, k]``: rows of worker j's old batch in worker k's new batch ``(n, n)``."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (old_owner, new_owner), 1)
    return m


def _needs(held: BoolArray, new_owner: IntArray) -> tuple[IntArray, IntArray]:
    n = held.shape[0]
    mine = new_owner[None, :] == np.arange(n)[:, None]
    workers, rows = np.nonzero(mine & ~held)
    return workers.astype(np.int64), rows.astype(np.int64)


def uncoded_load(held: BoolArray, new_owner: IntArray, row_bytes: int) -> int:
    """Rows of each new batch its worker does not hold ``held`` ``(n, q)``, times R."""
    workers, _ = _needs(held, new_owner)
    return len(workers) * row_bytes


def lee_load(held: BoolArray, new_owner: IntArray, row_bytes: int) -> int:
    """Lee et al.'s coded load: for every set U (a needed row's holders plus the worker
    needing it), the most rows any one member of U needs from the others; summed, times R."""
    n = held.shape[0]
    workers, rows = _needs(held, new_owner)
    if len(workers) == 0:
        return 0
    holder_sets = (held[:, rows].astype(np.int64) << np.arange(n)[:, None]).sum(axis=0)
    sets = holder_sets | (np.int64(1) << workers)
    keys, counts = np.unique(sets * n + workers, return_counts=True)
    per_set = np.zeros(int(keys.max() // n) + 1, dtype=np.int64)
    np.maximum.at(per_set, keys // n, counts)
    return int(per_set.sum()) * row_bytes


def structured_load(old_owner: IntArray, new_owner: IntArray, n: int, t: int, row_bytes: int
                    ) -> int:  # fmt: skip
    """The structured scheme's load: for every set U of t+2 workers, max over k in U of
    sum_{j in U - k} m[j, k] chunks (a row moving j -> k has one chunk held by exactly
    U - k for each U containing j and k), times the chunk size ceil(R / C(n-1, t))."""
    if t >= n - 1:
        return 0
    m = transitions(old_owner, new_owner, n)
    np.fill_diagonal(m, 0)
    total = 0
    for subset in itertools.combinations(range(n), t + 2):
        sub = m[np.ix_(subset, subset)]
        total += int(sub.sum(axis=0).max())
    return total * -(-row_bytes // math.comb(n - 1, t))


def shuffle_load(scheme: Scheme, new_owner: IntArray) -> int:
    """The exact payload bytes of ``scheme``'s delivery of ``new_owner`` (before its update):
    the load of its kind above, from its ledger's holdings and the assignment."""
    ledger, row_bytes = scheme.ledger, scheme.layout.row_bytes
    if isinstance(ledger, ChunkLedger):
        return structured_load(ledger.owner, new_owner, scheme.n, ledger.t, row_bytes)
    if scheme.name == LEE:
        return lee_load(ledger.held, new_owner, row_bytes)
    return uncoded_load(ledger.held, new_owner, row_bytes)


def expected_load(scheme: str, q: int, n: int, s: float, row_bytes: int) -> float:
    """Expected payload bytes of an epoch for a uniformly random permutation, from
    (q, n, s, R) alone (docs/shuffle.md derives each):

    - uncoded: ``(q - C) R`` with ``C = floor(s q)`` rows cached, i.e. q(1-s)R;
    - lee: ``sum_{v=1}^{n-1} C(n, v+1) v (b/n) p^(v-1) (1-p)^(n-v) R``, with b = q/n and
      p = (C-b)/(q-b) the chance another worker caches a row besides its owner (each set
      of v holders plus the needing worker sends its average group; q -> infinity);
    - structured: ``q (n-1-t) / (n (t+2)) R``, t = floor(s n) - 1 (balanced shuffle, the
      ideal chunk size R / C(n-1, t)).
    """
    config = ShuffleConfig(workers=n, storage=s, scheme=scheme)
    b = q // n
    cached = config.cache_rows(q)
    if scheme == UNCODED:
        return float(q - cached) * row_bytes
    if scheme == STRUCTURED:
        t = config.t
        return q * (n - 1 - t) / (n * (t + 2)) * row_bytes
    p = (cached - b) / (q - b) if q > b else 0.0
    rows = sum(
        math.comb(n, v + 1) * v * (b / n) * p ** (v - 1) * (1 - p) ** (n - v) for v in range(1, n)
    )
    return rows * row_bytes


def mean_load(scheme: str, q: int, n: int, s: float, row_bytes: int, draws: int = 64,
              seed: int = 2**31 - 1) -> float:  # fmt: skip
    """The mean of :func:`shuffle_load` over ``draws`` independent random placements and
    first shuffles (seeds ``seed``, ``seed + 1``, ..., not the run's): the expected
    payload bytes of an epoch at this q, by counting alone (no rows, no messages)."""
    config = ShuffleConfig(workers=n, storage=s, scheme=scheme)
    total = 0
    for draw in range(seed, seed + draws):
        new = assignment(q, n, draw, 1)
        if scheme == STRUCTURED:
            total += structured_load(assignment(q, n, draw, 0), new, n, config.t, row_bytes)
            continue
        ledger = RowLedger(q, n, config.cache_rows(q), draw)
        load = lee_load if scheme == LEE else uncoded_load
        total += load(ledger.held, new, row_bytes)
    return total / draws


def worst_case_optimum(q: int, n: int, s: float, row_bytes: int) -> float:
    """The worst-case optimal payload bytes of an epoch with uncoded caches of a fraction
    ``s`` of the data: ``(q/n) (n-1-t) / (t+1) R`` at the corner points ``s = (t+1)/n``
    (t = 0..n-1), and between two corner points the line joining them (memory sharing:
    split every row in the proportions that make the storage add up). At t = 0 it is the
    chain of n-1 XORs of whole batches (a cyclic shift needs no fewer), at t = n-2 one
    worker's missing chunks, at t = n-1 nothing; Elmahdy and Mohajer (arXiv 1807.04255)
    characterize the worst-case optimum at every storage (docs/shuffle.md)."""
    if not 1 / n - 1e-12 <= s <= 1 + 1e-12:
        raise ValueError(f"s must be in [1/n, 1], got {s}")
    position = min(max(s * n - 1, 0.0), n - 1.0)  # t as a real number
    low = math.floor(position + 1e-12)
    high = min(low + 1, n - 1)

    def corner(t: int) -> float:
        return q / n * (n - 1 - t) / (t + 1) * row_bytes

    weight = position - low
    return (1 - weight) * corner(low) + weight * corner(high)
