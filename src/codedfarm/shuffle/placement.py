"""Who holds what: the epoch's assignment, each worker's cache, and the cache update.

The master and every worker keep the same :class:`RowLedger` or :class:`ChunkLedger` (the
metadata only: which row or chunk each worker holds, never the bytes): both are updated by
the same deterministic rule from the epoch's assignment and the run's seed, so a worker
knows, without being told, what every other worker holds and therefore which pieces a
coded message combines.

Pieces: a row-level scheme moves whole rows (piece id = row id); the structured scheme
cuts every row into ``L = C(n-1, t)`` chunks (piece id = row * L + chunk).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import numpy.typing as npt

__all__ = ["ChunkLedger", "RowLedger", "assignment", "subset_masks"]

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


def assignment(q: int, n: int, seed: int, epoch: int) -> IntArray:
    """The batch of every row in ``epoch`` ``(q,)`` in [0, n): a uniformly random
    permutation of the rows (seeded by ``seed`` and ``epoch`` only, so every scheme sees
    the same shuffles), cut into n batches of q/n rows."""
    order = np.random.default_rng([seed, epoch, 7]).permutation(q)
    owner = np.empty(q, dtype=np.int64)
    owner[order] = np.arange(q) // (q // n)
    return owner


def subset_masks(n: int, t: int, exclude: int) -> IntArray:
    """The t-subsets of ``range(n)`` without ``exclude`` as bitmasks ``(C(n-1, t),)``, in
    lexicographic order."""
    others = [i for i in range(n) if i != exclude]
    return np.array([sum(1 << i for i in c) for c in itertools.combinations(others, t)],
                    dtype=np.int64)  # fmt: skip


class RowLedger:
    """Row-level caches (uncoded, lee): worker k holds its batch and ``cache_rows - q/n``
    other rows, uniformly at random. After an epoch it keeps its new batch and a uniformly
    random subset of the other rows it held (seeded by run seed, epoch and worker)."""

    pieces_per_row = 1

    def __init__(self, q: int, n: int, cache_rows: int, seed: int) -> None:
        self.q, self.n, self.cache_rows, self.seed = q, n, cache_rows, seed
        self.owner = assignment(q, n, seed, 0)
        self.held = np.zeros((n, q), dtype=bool)
        for k in range(n):
            self.held[k] = self._keep(k, self.owner == k, self.owner != k, epoch=0)

    def _keep(self, k: int, batch: BoolArray, candidates: BoolArray, epoch: int) -> BoolArray:
        extra = self.cache_rows - int(batch.sum())
        pool = np.flatnonzero(candidates)
        chosen = np.random.default_rng([self.seed, epoch, k, 11]).permutation(pool)[:extra]
        held: BoolArray = batch.copy()
        held[chosen] = True
        return held

    def holders(self) -> IntArray:
        """Bitmask of the workers holding each row ``(q,)``."""
        weights = (np.int64(1) << np.arange(self.n, dtype=np.int64))[:, None]
        masks: IntArray = (self.held.astype(np.int64) * weights).sum(axis=0)
        return masks

    def held_pieces(self, k: int) -> BoolArray:
        """The pieces worker k holds ``(q,)``."""
        held: BoolArray = self.held[k].copy()
        return held

    def update(self, new_owner: IntArray, epoch: int) -> None:
        """After ``epoch``'s delivery: every worker holds its new batch (delivered) and keeps a
        random part of the rest of its cache, within ``cache_rows``."""
        for k in range(self.n):
            batch = new_owner == k
            self.held[k] = self._keep(k, batch, self.held[k] & ~batch, epoch)
        self.owner = new_owner.copy()


class ChunkLedger:
    """The structured placement (Attia & Tandon; Elmahdy & Mohajer): every row is cut into
    ``L = C(n-1, t)`` chunks, one per t-subset T of the workers other than its owner; the
    owner holds the whole row, the workers of T hold the chunk. Storage: q/n rows plus
    t/(n-1) of each other row, i.e. (t+1)/n of the data.

    ``masks`` ``(q, L)``: the bitmask T of each chunk's non-owner holders. When a row moves
    from j to k, k gets the whole row and j keeps exactly the chunks k held before, which
    are relabelled T -> T - {k} + {j}: the placement is restored with no extra traffic."""

    def __init__(self, q: int, n: int, t: int, seed: int) -> None:
        self.q, self.n, self.t = q, n, t
        self.pieces_per_row = math.comb(n - 1, t)
        self.owner = assignment(q, n, seed, 0)
        table = np.stack([subset_masks(n, t, j) for j in range(n)])
        self.masks: IntArray = table[self.owner]

    def held_pieces(self, k: int) -> BoolArray:
        """The chunks worker k holds, ``(q * L,)`` (row-major: row, then chunk)."""
        held: BoolArray = ((self.masks >> k) & 1).astype(bool) | (self.owner == k)[:, None]
        return held.reshape(-1)

    def update(self, new_owner: IntArray, epoch: int) -> None:
        del epoch  # deterministic: no randomness in the structured cache update
        moved = new_owner != self.owner
        old = self.owner[moved][:, None]
        new = new_owner[moved][:, None]
        masks = self.masks[moved]
        had = ((masks >> new) & 1).astype(bool)
        swap = (np.int64(1) << new) | (np.int64(1) << old)
        self.masks[moved] = np.where(had, masks ^ swap, masks)
        self.owner = new_owner.copy()
