"""A shuffle run: the master in this process, the n workers as OS processes (or threads),
all over one Redis. Whatever happens (an error, a dead worker, Ctrl-C) the workers are
stopped and the run's keys deleted.

Workers are ``python -m codedfarm.shuffle`` subprocesses, their config as JSON on
stdin: real processes as in a cluster (each its own interpreter, memory and Redis
connections), nothing pickled, and a pid the master polls (and a test can kill).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from codedfarm.errors import ConfigError
from codedfarm.shuffle.channel import Channel, open_redis
from codedfarm.shuffle.config import ShuffleConfig, as_rows
from codedfarm.shuffle.master import EpochReport, Master
from codedfarm.shuffle.schemes import Scheme
from codedfarm.shuffle.training import TrainSpec
from codedfarm.shuffle.worker import WorkerConfig, run_worker

__all__ = ["ShuffleReport", "check_shuffle", "run_shuffle"]


@dataclass(frozen=True)
class ShuffleReport:
    """A run: its config, q rows of ``row_bytes`` bytes used (``dropped_rows`` = the last
    len(data) mod n), pieces per row and their bytes, the initial placement's bytes and
    one :class:`EpochReport` per epoch."""

    config: ShuffleConfig
    q: int
    row_bytes: int
    dropped_rows: int
    pieces_per_row: int
    piece_bytes: int
    storage_budget_bytes: int
    placement_bytes: int
    epochs: tuple[EpochReport, ...]

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.epochs)

    def to_dict(self) -> dict[str, object]:
        out = {k: v for k, v in asdict(self).items() if k not in ("config", "epochs")}
        out.update(asdict(self.config), t=self.config.t, ok=self.ok,
                   epochs=[e.to_dict() for e in self.epochs])  # fmt: skip
        return out


class _Workers:
    """The n workers: processes (with their stderr in a temporary file) or threads."""

    def __init__(self, configs: list[WorkerConfig], channel: Channel, processes: bool) -> None:
        self.channel, self.beating = channel, False
        self.stop_event = threading.Event()
        self.procs: list[subprocess.Popen[bytes]] = []
        self.threads: list[threading.Thread] = []
        self.logs: list[IO[bytes]] = []
        self._dir = tempfile.TemporaryDirectory(prefix="codedfarm-shuffle-")
        for config in configs:
            if processes:
                log = (Path(self._dir.name) / f"worker{config.index}.log").open("w+b")
                proc = subprocess.Popen(
                    [sys.executable, "-m", "codedfarm.shuffle"], stdin=subprocess.PIPE,
                    stdout=subprocess.DEVNULL, stderr=log,
                )  # fmt: skip
                assert proc.stdin is not None
                proc.stdin.write(config.to_json().encode())
                proc.stdin.close()
                self.procs.append(proc)
                self.logs.append(log)
            else:
                name = f"shuffle-worker-{config.index}"
                thread = threading.Thread(
                    target=run_worker, args=(config, self.stop_event), daemon=True, name=name
                )
                thread.start()
                self.threads.append(thread)

    def alive(self, k: int) -> str | None:
        if self.procs:
            code = self.procs[k].poll()
            if code is not None:
                return f"died (exit code {code}){self._last_line(k)}"
        elif not self.threads[k].is_alive():
            return "stopped (its thread ended)"
        if self.beating and not self.channel.alive(k):
            return "stopped beating (no heartbeat for 3 s)"
        return None

    def _last_line(self, k: int) -> str:
        log = self.logs[k]
        log.flush()
        log.seek(0)
        lines = [x for x in log.read().decode(errors="replace").splitlines() if x.strip()]
        return f": {lines[-1].strip()}" if lines else ""

    def kill(self, k: int) -> None:
        if not self.procs:
            raise ConfigError("a worker can be killed only when workers are processes")
        os.kill(self.procs[k].pid, signal.SIGKILL)
        self.procs[k].wait(timeout=10)

    def stop(self) -> None:
        """Tell the workers to stop, then terminate (and kill) those still running."""
        self.stop_event.set()
        with contextlib.suppress(Exception):  # Redis may be gone: the processes stop below
            self.channel.write(self.channel.bcast, {"kind": "stop"})
        deadline = time.monotonic() + 3.0
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for thread in self.threads:
            thread.join(timeout=5)
        for log in self.logs:
            log.close()
        self._dir.cleanup()


def check_shuffle(data: npt.NDArray[np.generic], config: ShuffleConfig) -> tuple[int, int]:
    """(q, R) of the rows ``data`` gives the run, or the :class:`InputError` or
    :class:`ConfigError` it would fail with (rows that cannot be split, a row too short
    for the structured scheme's chunks), without touching Redis."""
    rows = as_rows(data, config.workers)
    Scheme(config, *rows.shape)
    return rows.shape[0], rows.shape[1]


def run_shuffle(
    data: npt.NDArray[np.generic],
    config: ShuffleConfig,
    redis_url: str,
    *,
    key_prefix: str = "cf",
    processes: bool = True,
    train: TrainSpec | None = None,
    test_rows: npt.NDArray[np.float64] | None = None,
    progress: Callable[[EpochReport], None] | None = None,
    kill_at: tuple[int, int] | None = None,
) -> ShuffleReport:
    """Shuffle the rows of ``data`` (first axis) for ``config.epochs`` epochs among
    ``config.workers`` workers over the Redis at ``redis_url``; ``progress`` gets each
    epoch's report. ``train``: the training use (``data`` the float64 rows of
    :func:`.training.training_rows`, ``test_rows`` scored after every epoch).
    ``kill_at=(k, e)``: fault injection, SIGKILL worker k once epoch e's header is out.

    Raises :class:`InputError` for data that cannot be split, :class:`ConfigError` for a
    scheme that cannot run it, :class:`FarmUnavailableError` when Redis is unreachable or
    an epoch fails (a worker died, reported an error or did not answer in time)."""
    rows = as_rows(data, config.workers)
    q, row_bytes = rows.shape
    client = open_redis(redis_url)
    prefix = f"{key_prefix}:shuffle:{uuid.uuid4().hex[:12]}"
    channel = Channel(client, prefix, config.key_ttl)
    master = Master(channel, config, rows, lambda k: workers.alive(k), train, test_rows)
    configs = [WorkerConfig(redis_url, prefix, k, config, q, row_bytes, train)
               for k in range(config.workers)]  # fmt: skip
    workers = _Workers(configs, channel, processes)

    def before_send(epoch: int) -> None:
        if kill_at is not None and kill_at[1] == epoch:
            workers.kill(kill_at[0])

    try:
        placement = master.place()
        workers.beating = True
        reports = []
        for epoch in range(1, config.epochs + 1):
            reports.append(master.epoch(epoch, before_send))
            if progress is not None:
                progress(reports[-1])
    finally:
        workers.stop()
        channel.cleanup()
    layout = master.scheme.layout
    return ShuffleReport(
        config=config, q=q, row_bytes=row_bytes, dropped_rows=len(data) - q,
        pieces_per_row=layout.pieces_per_row, piece_bytes=layout.unit,
        storage_budget_bytes=master.budget, placement_bytes=placement, epochs=tuple(reports),
    )  # fmt: skip
