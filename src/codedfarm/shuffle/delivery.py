"""An epoch's delivery: which pieces go to whom, unicast or XORed into broadcast messages,
and the encoding (master) and decoding (worker) of those messages.

Coded messages are XORs of piece bytes: a group is a set U of workers and, for each member
k, a list of pieces k needs that every other member of U holds. The message is the
bytewise XOR of the members' lists, the shorter ones padded with zero pieces, so it has
``max_k len(list_k)`` pieces; member k XORs out the others' pieces (which it holds) and is
left with its own. XOR on the bytes is exact for any dtype (docs/shuffle.md).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codedfarm.errors import ProtocolError

__all__ = ["Group", "Plan", "decode_group", "encode_group", "group_pieces"]

IntArray = npt.NDArray[np.int64]
Bytes2D = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class Group:
    """One broadcast message: ``members`` (sorted worker ids) and, per member, the sorted
    piece ids it decodes from it (``lists[i]`` is ``members[i]``'s)."""

    members: tuple[int, ...]
    lists: tuple[IntArray, ...]

    @property
    def pieces(self) -> int:
        """Pieces in the coded message: the longest list."""
        return max((len(x) for x in self.lists), default=0)


@dataclass(frozen=True)
class Plan:
    """An epoch's delivery: ``unicast[k]`` the piece ids sent to k alone (sorted), and the
    broadcast ``groups``."""

    unicast: tuple[IntArray, ...]
    groups: tuple[Group, ...]

    def for_worker(self, k: int) -> tuple[IntArray, list[tuple[int, Group]]]:
        """Worker k's unicast pieces and the (index, group) of the groups it is in."""
        return self.unicast[k], [(i, g) for i, g in enumerate(self.groups) if k in g.members]


def group_pieces(workers: IntArray, pieces: IntArray, sets: IntArray, n: int) -> list[Group]:
    """Groups of needed pieces: ``workers[i]`` needs piece ``pieces[i]``, which exactly the
    workers of bitmask ``sets[i]`` (k's bit included) hold or need. One group per distinct
    set; lists sorted by piece id; groups sorted by set."""
    if len(workers) == 0:
        return []
    order = np.lexsort((pieces, workers, sets))
    workers, pieces, sets = workers[order], pieces[order], sets[order]
    starts = np.flatnonzero(np.r_[True, sets[1:] != sets[:-1]])
    ends = np.r_[starts[1:], len(sets)]
    groups = []
    for a, z in zip(starts.tolist(), ends.tolist(), strict=True):
        mask = int(sets[a])
        members = tuple(i for i in range(n) if mask >> i & 1)
        w, p = workers[a:z], pieces[a:z]
        groups.append(Group(members, tuple(p[w == k] for k in members)))
    return groups


def encode_group(group: Group, pieces: Bytes2D) -> bytes:
    """The XOR of the members' pieces ``pieces[list]`` (``pieces``: ``(P, unit)`` uint8, all
    the data's pieces, as the master has them), zero-padded: ``group.pieces * unit`` bytes."""
    out = np.zeros((group.pieces, pieces.shape[1]), dtype=np.uint8)
    for ids in group.lists:
        out[: len(ids)] ^= pieces[ids]
    return out.tobytes()


def decode_group(group: Group, k: int, payload: bytes, store: Bytes2D, held: npt.NDArray[np.bool_]
                 ) -> IntArray:  # fmt: skip
    """Worker k's pieces from a coded message, written into ``store`` ``(P, unit)`` (its
    buffer: only the ``held`` pieces are valid) and marked held; returns their ids. Raises
    :class:`ProtocolError` if the payload has the wrong size or k lacks a piece to XOR out."""
    unit = store.shape[1]
    if len(payload) != group.pieces * unit:
        raise ProtocolError(
            f"coded message of {len(payload)} bytes, expected {group.pieces} x {unit}"
        )
    acc = np.frombuffer(payload, dtype=np.uint8).reshape(group.pieces, unit).copy()
    mine = np.zeros(0, dtype=np.int64)
    for member, ids in zip(group.members, group.lists, strict=True):
        if member == k:
            mine = ids
            continue
        if not held[ids].all():
            raise ProtocolError(f"worker {k} lacks a piece of worker {member} to decode")
        acc[: len(ids)] ^= store[ids]
    store[mine] = acc[: len(mine)]
    held[mine] = True
    return mine
