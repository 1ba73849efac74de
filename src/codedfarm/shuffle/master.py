"""The master: places the data, then every epoch draws the permutation, encodes and sends
the delivery, waits for every worker's checksums and checks them against the true rows.

An epoch fails (:class:`FarmUnavailableError`) when a worker dies, stops beating or
reports an error, or when the acknowledgements do not all arrive within the epoch timeout:
the master never waits for a dead worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt

from codedfarm.errors import FarmUnavailableError
from codedfarm.shuffle.channel import Channel, Entry
from codedfarm.shuffle.config import ShuffleConfig
from codedfarm.shuffle.delivery import encode_group
from codedfarm.shuffle.placement import assignment
from codedfarm.shuffle.schemes import Scheme, checksums
from codedfarm.shuffle.theory import expected_load, shuffle_load
from codedfarm.shuffle.training import TrainSpec, accuracy, average

__all__ = ["EpochReport", "Liveness", "Master"]

Liveness = Callable[[int], "str | None"]
"""Worker k -> None while it lives, else why it is gone ("exited with code -9")."""


@dataclass(frozen=True)
class EpochReport:
    """One epoch, bytes written by the master: coded or plain rows on the broadcast and
    unicast streams (payload), the scheme's exact load for this shuffle (``theory_bytes``,
    :func:`.theory.shuffle_load`) and its closed form for a random one (``expected_bytes``),
    the protocol's headers and assignment (``overhead_bytes``), the training use's weights
    (``model_bytes``); wall-clock ``seconds``; per worker whether it verifiably holds its
    new batch (row checksums equal, cache within the storage budget) and its cache bytes;
    the training use's held-out accuracy and a blake2b checksum of its averaged weights."""

    epoch: int
    broadcast_bytes: int
    unicast_bytes: int
    theory_bytes: int
    expected_bytes: float
    overhead_bytes: int
    model_bytes: int
    messages: int
    seconds: float
    verified: tuple[bool, ...]
    held_bytes: tuple[int, ...]
    accuracy: float | None = None
    model_checksum: str | None = None

    @property
    def payload_bytes(self) -> int:
        return self.broadcast_bytes + self.unicast_bytes

    @property
    def ratio(self) -> float:
        """Measured payload / theory (1.0 when both are 0)."""
        if self.theory_bytes == 0:
            return 1.0 if self.payload_bytes == 0 else float("inf")
        return self.payload_bytes / self.theory_bytes

    @property
    def ok(self) -> bool:
        return all(self.verified)

    def to_dict(self) -> dict[str, object]:
        out = asdict(self)
        out.update(payload_bytes=self.payload_bytes, ratio=self.ratio, ok=self.ok)
        return out


class Master:
    """The master of one run over ``channel``: ``rows`` ``(q, R)`` uint8 the data,
    ``alive`` the liveness check of each worker."""

    def __init__(self, channel: Channel, config: ShuffleConfig, rows: npt.NDArray[np.uint8],
                 alive: Liveness, train: TrainSpec | None = None,
                 test_rows: npt.NDArray[np.float64] | None = None) -> None:  # fmt: skip
        self.channel, self.config, self.rows, self.alive = channel, config, rows, alive
        self.q, self.row_bytes = rows.shape
        self.scheme = Scheme(config, self.q, self.row_bytes)
        self.pieces = self.scheme.layout.pieces(rows)
        self.train, self.test_rows = train, test_rows
        self.weights = train.zeros() if train else None
        self._acks = b"0-0"
        self.budget = self.scheme.budget_bytes()

    def place(self) -> int:
        """Send every worker its initial cache; returns the bytes sent (not a shuffle's)."""
        before = self.channel.counts["placement"]
        for k in range(self.config.workers):
            ids = np.flatnonzero(self.scheme.held_pieces(k))
            header = {"kind": "place", "worker": k}
            self.channel.write(self.channel.uni(k), header, self.pieces[ids].tobytes(), "placement")
        self._collect("ready", None)
        return self.channel.counts["placement"] - before

    def epoch(self, e: int, before_send: Callable[[int], None] | None = None) -> EpochReport:
        """Shuffle epoch ``e`` (1, 2, ...); ``before_send(e)`` runs after the epoch's header
        is out (a test kills a worker there)."""
        n, started = self.config.workers, time.perf_counter()
        new = assignment(self.q, n, self.config.seed, e)
        plan = self.scheme.plan(new)
        theory = shuffle_load(self.scheme, new)
        counts = dict(self.channel.counts)
        ch = self.channel
        header = {
            "kind": "epoch",
            "epoch": e,
            "groups": len(plan.groups),
            "unicast": [len(u) for u in plan.unicast],
            "train": self.train is not None,
        }
        ch.write(ch.bcast, header, new.astype("<i8").tobytes())
        if before_send is not None:
            before_send(e)
        ch.batch()
        if self.weights is not None:
            ch.write(ch.bcast, {"kind": "model", "epoch": e}, self.weights.astype("<f8").tobytes(),
                     "model")  # fmt: skip
        for index, group in enumerate(plan.groups):
            ch.write(ch.bcast, {"kind": "coded", "epoch": e, "group": index},
                     encode_group(group, self.pieces), "broadcast")  # fmt: skip
        for k, ids in enumerate(plan.unicast):
            if len(ids):
                ch.write(ch.uni(k), {"kind": "rows", "epoch": e}, self.pieces[ids].tobytes(),
                         "unicast")  # fmt: skip
        ch.flush()
        acks = self._collect("done", e)
        seconds = time.perf_counter() - started
        verified, held = self._verify(new, acks)
        self.scheme.update(new, e)
        ch.trim()
        sent = {key: ch.counts[key] - counts.get(key, 0) for key in ch.counts}
        score = digest = None
        if self.train is not None and self.weights is not None:
            self.weights = average([np.frombuffer(acks[k].payload, dtype="<f8")
                                    .reshape(self.train.shape) for k in range(n)])  # fmt: skip
            digest = checksums(self.weights.reshape(1, -1).view(np.uint8))[0]
            if self.test_rows is not None:
                score = accuracy(self.weights, self.test_rows)
        return EpochReport(
            epoch=e, broadcast_bytes=sent.get("broadcast", 0),
            unicast_bytes=sent.get("unicast", 0), theory_bytes=theory,
            expected_bytes=expected_load(self.scheme.name, self.q, n, self.config.storage,
                                         self.row_bytes),
            overhead_bytes=sent.get("overhead", 0) + sent.get("control", 0),
            model_bytes=sent.get("model", 0), messages=sent.get("messages", 0),
            seconds=seconds, verified=verified, held_bytes=held, accuracy=score,
            model_checksum=digest,
        )  # fmt: skip

    def _verify(self, new: npt.NDArray[np.int64], acks: dict[int, Entry]
                ) -> tuple[tuple[bool, ...], tuple[int, ...]]:  # fmt: skip
        verified, held = [], []
        for k in range(self.config.workers):
            report = acks[k].header
            mine = np.flatnonzero(new == k)
            good = (report["rows"] == mine.tolist() and report["complete"]
                    and report["checksums"] == checksums(self.rows[mine])
                    and report["missing_for_cache"] == 0
                    and report["held_bytes"] <= self.budget)  # fmt: skip
            verified.append(bool(good))
            held.append(int(report["held_bytes"]))
        return tuple(verified), tuple(held)

    def _collect(self, kind: str, epoch: int | None) -> dict[int, Entry]:
        """Every worker's acknowledgement ``kind`` of ``epoch``, or an error naming the
        worker that died, failed or is late."""
        n, timeout = self.config.workers, self.config.epoch_timeout
        deadline = time.monotonic() + timeout
        got: dict[int, Entry] = {}
        what = "placement" if epoch is None else f"epoch {epoch}"
        while len(got) < n:
            cursors = {self.channel.acks: self._acks}
            for entry in self.channel.read(cursors, block_ms=100):
                header = entry.header
                if header.get("kind") == "error":
                    raise FarmUnavailableError(
                        f"shuffle {what} failed: worker {header.get('worker')} reported "
                        f"{header.get('error')}"
                    )
                if header.get("kind") == kind and header.get("epoch") == epoch:
                    got[int(header["worker"])] = entry
            self._acks = cursors[self.channel.acks]
            missing = [k for k in range(n) if k not in got]
            for k in missing:
                reason = self.alive(k)
                if reason is not None:
                    raise FarmUnavailableError(f"shuffle {what} failed: worker {k} {reason}")
            if missing and time.monotonic() > deadline:
                raise FarmUnavailableError(
                    f"shuffle {what} failed: no acknowledgement from worker(s) {missing} "
                    f"within {timeout:g} s"
                )
        return got
