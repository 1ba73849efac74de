"""The three schemes: their placement (a ledger of :mod:`.placement`), their pieces, and
their delivery plan for an epoch.

- ``uncoded``: row caches of Lee et al. (own batch + random rows, s*q rows in all); each
  worker is unicast the rows of its new batch it does not hold.
- ``lee``: the same caches; Lee et al.'s coded shuffling: a row k needs is XORed with rows
  the other members of its holder set need, one broadcast per set (decentralized coded
  caching delivery, Maddah-Ali & Niesen).
- ``structured``: the subset placement of chunks (:class:`.placement.ChunkLedger`) with
  coded multicast to every (t+2)-set of workers: each chunk k needs is held by exactly t+1
  others, so one coded chunk serves t+2 workers.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codedfarm.errors import ConfigError
from codedfarm.shuffle.config import STRUCTURED, UNCODED, ShuffleConfig
from codedfarm.shuffle.delivery import Group, Plan, group_pieces
from codedfarm.shuffle.placement import ChunkLedger, RowLedger

__all__ = ["Layout", "Scheme", "checksums"]

IntArray = npt.NDArray[np.int64]
Bytes2D = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Layout:
    """How rows of ``row_bytes`` bytes are cut into ``pieces_per_row`` pieces of ``unit``
    bytes (the last zero-padded: a padded row has ``pieces_per_row * unit`` bytes)."""

    row_bytes: int
    pieces_per_row: int

    @property
    def unit(self) -> int:
        return -(-self.row_bytes // self.pieces_per_row)

    @property
    def padded_row(self) -> int:
        return self.pieces_per_row * self.unit

    def pieces(self, rows: Bytes2D) -> Bytes2D:
        """``(q, row_bytes)`` -> ``(q * pieces_per_row, unit)``, zero-padded."""
        q = rows.shape[0]
        padded = np.zeros((q, self.padded_row), dtype=np.uint8)
        padded[:, : self.row_bytes] = rows
        return padded.reshape(q * self.pieces_per_row, self.unit)

    def rows(self, pieces: Bytes2D, ids: IntArray) -> Bytes2D:
        """The rows ``ids`` ``(len(ids), row_bytes)`` out of a pieces buffer."""
        per_row = pieces.reshape(-1, self.padded_row)
        return per_row[ids, : self.row_bytes]


class Scheme:
    """A scheme's placement and delivery for q rows of ``row_bytes`` bytes. The master and
    every worker build one from the same arguments and call :meth:`plan` then
    :meth:`update` every epoch: their ledgers stay identical."""

    def __init__(self, config: ShuffleConfig, q: int, row_bytes: int) -> None:
        self.name, self.n, self.q = config.scheme, config.workers, q
        self.ledger: RowLedger | ChunkLedger
        if config.scheme == STRUCTURED:
            chunks = math.comb(config.workers - 1, config.t)
            if chunks > row_bytes:
                raise ConfigError(
                    f"structured: n = {config.workers}, s = {config.storage:g} cuts each row "
                    f"into C({config.workers - 1},{config.t}) = {chunks} chunks, more than its "
                    f"{row_bytes} bytes; use fewer workers, another storage or longer rows"
                )
            self.ledger = ChunkLedger(q, config.workers, config.t, config.seed)
        else:
            self.ledger = RowLedger(q, config.workers, config.cache_rows(q), config.seed)
        self.layout = Layout(row_bytes, self.ledger.pieces_per_row)

    @property
    def owner(self) -> IntArray:
        return self.ledger.owner

    def held_pieces(self, k: int) -> npt.NDArray[np.bool_]:
        return self.ledger.held_pieces(k)

    def budget_bytes(self) -> int:
        """The most bytes a worker may cache between epochs: s*q rows for the row-level
        schemes; q/n rows and t/(n-1) of every other row for the structured one (padded)."""
        q, n = self.q, self.n
        if isinstance(self.ledger, ChunkLedger):
            t, chunks = self.ledger.t, self.ledger.pieces_per_row
            count = (
                q // n * chunks + (q - q // n) * math.comb(n - 2, t - 1) if t else q // n * chunks
            )
            return count * self.layout.unit
        return self.ledger.cache_rows * self.layout.padded_row

    def plan(self, new_owner: IntArray) -> Plan:
        """The delivery that gives every worker its batch of ``new_owner``."""
        n = self.n
        empty = tuple(np.zeros(0, dtype=np.int64) for _ in range(n))
        if isinstance(self.ledger, ChunkLedger):
            return Plan(empty, tuple(self._structured(new_owner)))
        needed = (new_owner[None, :] == np.arange(n)[:, None]) & ~self.ledger.held
        workers, rows = np.nonzero(needed)
        if self.name == UNCODED:
            return Plan(tuple(rows[workers == k] for k in range(n)), ())
        sets = self.ledger.holders()[rows] | (np.int64(1) << workers)
        return Plan(empty, tuple(group_pieces(workers, rows, sets, n)))

    def _structured(self, new_owner: IntArray) -> list[Group]:
        ledger = self.ledger
        assert isinstance(ledger, ChunkLedger)
        chunks = ledger.pieces_per_row
        moved = np.flatnonzero(new_owner != ledger.owner)
        old, new = ledger.owner[moved][:, None], new_owner[moved][:, None]
        masks = ledger.masks[moved]
        lacks = ((masks >> new) & 1) == 0
        row_index, chunk = np.nonzero(lacks)
        workers = new[row_index, 0]
        pieces = moved[row_index] * chunks + chunk
        sets = (
            masks[row_index, chunk] | (np.int64(1) << old[row_index, 0]) | (np.int64(1) << workers)
        )
        return group_pieces(workers, pieces, sets, self.n)

    def update(self, new_owner: IntArray, epoch: int) -> None:
        self.ledger.update(new_owner, epoch)


def checksums(rows: Bytes2D) -> list[str]:
    """blake2b (16 bytes, hex) of each row ``(m, R)``: what a worker reports it holds."""
    return [hashlib.blake2b(row.tobytes(), digest_size=16).hexdigest() for row in rows]
