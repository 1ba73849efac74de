"""A shuffle worker: holds its cache, decodes every epoch's delivery, reports checksums.

Run as ``python -m codedfarm.shuffle`` with its :class:`WorkerConfig` as JSON on
stdin (a process of its own, as in a cluster; no pickle), or in a thread (the tests).
Every epoch it reads the broadcast and its unicast stream, XORs out of each coded message
what it caches, checks it now holds every row of its new batch, reports a blake2b
checksum of each (the master compares them with the true rows'), then drops what the
placement no longer gives it. A heartbeat key is refreshed every 0.5 s.
"""

from __future__ import annotations

import json
import sys
import threading
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from codedfarm.errors import ProtocolError
from codedfarm.shuffle.channel import Channel, Entry, open_redis
from codedfarm.shuffle.config import ShuffleConfig
from codedfarm.shuffle.delivery import decode_group
from codedfarm.shuffle.schemes import Scheme, checksums
from codedfarm.shuffle.training import TrainSpec, local_sgd

__all__ = ["WorkerConfig", "main", "run_worker"]

BEAT_EVERY = 0.5


@dataclass(frozen=True)
class WorkerConfig:
    """Worker ``index`` of a run: where its streams are (``url``, ``prefix``), the run's
    :class:`ShuffleConfig` fields, the data's q rows of ``row_bytes`` bytes, and the
    training spec of the training use (None: shuffle only)."""

    url: str
    prefix: str
    index: int
    shuffle: ShuffleConfig
    q: int
    row_bytes: int
    train: TrainSpec | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerConfig:
        raw: dict[str, Any] = json.loads(text)
        train = raw.pop("train")
        shuffle = ShuffleConfig(**raw.pop("shuffle"))
        return cls(shuffle=shuffle, train=TrainSpec(**train) if train else None, **raw)


class _Worker:
    def __init__(self, config: WorkerConfig, channel: Channel) -> None:
        self.config, self.channel, self.k = config, channel, config.index
        self.scheme = Scheme(config.shuffle, config.q, config.row_bytes)
        layout = self.scheme.layout
        pieces = config.q * layout.pieces_per_row
        self.store = np.zeros((pieces, layout.unit), dtype=np.uint8)
        self.held = np.zeros(pieces, dtype=bool)
        self.epoch: dict[str, Any] | None = None
        self.waiting: list[Entry] = []

    def handle(self, entry: Entry) -> bool:
        """Act on one message; False when told to stop."""
        kind = entry.header.get("kind")
        if kind == "stop":
            return False
        if kind == "place":
            ids = np.flatnonzero(self.scheme.held_pieces(self.k))
            self._put(ids, entry.payload)
            self.channel.write(self.channel.acks, {"kind": "ready", "worker": self.k})
        elif kind == "epoch":
            self._start(entry)
        elif self.epoch is None or entry.header.get("epoch") != self.epoch["epoch"]:
            self.waiting.append(entry)  # read before its epoch's header
        else:
            self._data(entry)
        return True

    def _put(self, ids: npt.NDArray[np.int64], payload: bytes) -> None:
        unit = self.store.shape[1]
        if len(payload) != len(ids) * unit:
            raise ProtocolError(f"{len(payload)} bytes for {len(ids)} pieces of {unit}")
        self.store[ids] = np.frombuffer(payload, dtype=np.uint8).reshape(len(ids), unit)
        self.held[ids] = True

    def _start(self, entry: Entry) -> None:
        header = entry.header
        owner = np.frombuffer(entry.payload, dtype="<i8").astype(np.int64)
        plan = self.scheme.plan(owner)
        unicast, groups = plan.for_worker(self.k)
        if header["groups"] != len(plan.groups) or header["unicast"][self.k] != len(unicast):
            raise ProtocolError(f"worker {self.k}: the epoch's plan differs from the master's")
        self.epoch = {"epoch": header["epoch"], "owner": owner, "unicast": unicast,
                      "groups": dict(groups), "left": len(plan.groups) + (len(unicast) > 0),
                      "train": header.get("train", False), "weights": None}  # fmt: skip
        if self.epoch["train"]:
            self.epoch["left"] += 1
        waiting, self.waiting = self.waiting, []
        for early in waiting:
            self.handle(early)
        self._maybe_finish()

    def _data(self, entry: Entry) -> None:
        assert self.epoch is not None
        kind, epoch = entry.header.get("kind"), self.epoch
        if kind == "coded":
            group = epoch["groups"].get(entry.header["group"])
            if group is not None:
                decode_group(group, self.k, entry.payload, self.store, self.held)
        elif kind == "rows":
            self._put(epoch["unicast"], entry.payload)
        elif kind == "model":
            epoch["weights"] = np.frombuffer(entry.payload, dtype="<f8")
        else:
            raise ProtocolError(f"unknown shuffle message kind {kind!r}")
        epoch["left"] -= 1
        self._maybe_finish()

    def _maybe_finish(self) -> None:
        epoch = self.epoch
        if epoch is None or epoch["left"] > 0:
            return
        layout, owner = self.scheme.layout, epoch["owner"]
        mine = np.flatnonzero(owner == self.k)
        per_row = self.held.reshape(-1, layout.pieces_per_row)
        complete = bool(per_row[mine].all())
        rows = layout.rows(self.store, mine)
        report: dict[str, Any] = {"kind": "done", "worker": self.k, "epoch": epoch["epoch"],
                                  "rows": mine.tolist(), "checksums": checksums(rows),
                                  "complete": complete}  # fmt: skip
        payload = b""
        spec = self.config.train
        if epoch["train"] and spec is not None:
            data = np.frombuffer(rows.tobytes(), dtype="<f8").reshape(len(mine), -1)
            w0 = epoch["weights"].reshape(spec.shape)
            seed = (self.config.shuffle.seed, epoch["epoch"], self.k)
            payload = local_sgd(w0, data, spec, seed).astype("<f8").tobytes()
        self.scheme.update(owner, epoch["epoch"])
        keep = self.scheme.held_pieces(self.k)
        report["missing_for_cache"] = int((keep & ~self.held).sum())
        self.store[~keep] = 0
        self.held = keep & self.held
        report["held_bytes"] = int(self.held.sum()) * layout.unit
        self.channel.write(self.channel.acks, report, payload, kind="model")
        self.epoch = None


def run_worker(config: WorkerConfig, stop: threading.Event | None = None) -> None:
    """Serve epochs until a stop message (or ``stop`` is set). An error is reported on
    the acknowledgement stream, then raised."""
    channel = Channel(open_redis(config.url), config.prefix, config.shuffle.key_ttl)
    done = stop or threading.Event()

    def beat() -> None:
        beats = Channel(open_redis(config.url), config.prefix, config.shuffle.key_ttl)
        while not done.is_set():
            beats.beat(config.index)
            done.wait(BEAT_EVERY)

    channel.beat(config.index)  # alive before its first acknowledgement
    threading.Thread(target=beat, daemon=True, name=f"shuffle-beat-{config.index}").start()
    worker = _Worker(config, channel)
    cursors = {channel.bcast: b"0-0", channel.uni(config.index): b"0-0"}
    try:
        while not done.is_set():
            entries = channel.read(cursors)
            if not all(worker.handle(entry) for entry in entries):
                break
    except Exception as exc:
        header = {"kind": "error", "worker": config.index, "error": f"{type(exc).__name__}: {exc}"}
        channel.write(channel.acks, header)
        raise
    finally:
        done.set()


def main() -> None:
    """``python -m codedfarm.shuffle`` < config.json."""
    run_worker(WorkerConfig.from_json(sys.stdin.read()))
