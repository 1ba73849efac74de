"""Coded dynamic batching: single requests wait briefly and are coded together.

Per (model, version), a :class:`CodingQueue` holds the rows of waiting requests in arrival
order. A coding group forms as soon as ``group_size`` (K) rows wait, or when the oldest
has waited ``max_queue_delay``; the server codes a partial group for its actual size
(measured against padding it to K in docs/serve.md: closer decodes, the same cost). A
request larger than K is split over groups and answered when its last row comes back.
A request is answered as soon as all its rows are: rows whose own results come in early
(a systematic code, uncoded, replication: ``run_group``'s ``on_rows``) answer their
requests before the rest of the group is decoded. When more than ``max_queue`` rows would
wait, the request is refused at once
(:class:`QueueFullError`, the server's 503): memory stays bounded. At most
``max_groups_in_flight`` groups of a queue are in the farm at once; rows that arrive
meanwhile gather into fuller groups (Triton's dynamic batcher and Ray Serve's
``@serve.batch`` work the same way, without the coding).
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import numpy as np

from codedfarm.errors import ConfigError, QueueFullError
from codedfarm.settings import check_float, check_int

__all__ = ["BatcherConfig", "CodingQueue", "GroupRunner", "RowsReceiver"]

RowsReceiver = Callable[[list[int], np.ndarray], None]
"""Rows of a group answered before the group is done: indexes in ``[0, rows)`` and their
predictions ``(len(rows), *output_shape)``; called on the event loop."""


@dataclass(frozen=True)
class BatcherConfig:
    """How requests wait to be coded together; checked when built (a bad value raises
    :class:`ConfigError` naming the field)."""

    group_size: int = 8  # K: rows per coding group
    max_queue_delay: float = 0.02  # seconds the oldest row may wait for a fuller group
    max_queue: int = 512  # rows that may wait per (model, version)
    max_groups_in_flight: int = 16

    def __post_init__(self) -> None:
        check_int(self.group_size, "group_size", minimum=1)
        check_int(self.max_queue, "max_queue", minimum=1)
        if self.max_queue < self.group_size:
            raise ConfigError(f"max_queue must be >= group_size, got max_queue={self.max_queue}, "
                              f"group_size={self.group_size}")  # fmt: skip
        object.__setattr__(self, "max_queue_delay", check_float(
            self.max_queue_delay, "max_queue_delay", minimum=0, unit="seconds"))  # fmt: skip
        check_int(self.max_groups_in_flight, "max_groups_in_flight", minimum=1)

    def validate(self) -> BatcherConfig:
        """Returns self: a BatcherConfig is checked when it is built (kept for old callers)."""
        return self


@dataclass
class _Request:
    x: np.ndarray  # (B, *input_shape)
    future: asyncio.Future[np.ndarray]
    arrived: float  # monotonic
    out: np.ndarray | None = None  # (B, *output_shape), filled group by group
    remaining: int = 0
    request_id: str = ""


@dataclass
class _Slice:
    request: _Request
    start: int
    stop: int


@dataclass
class _Group:
    slices: list[_Slice] = field(default_factory=list)
    answered: set[int] = field(default_factory=set)  # group rows already placed

    @property
    def rows(self) -> int:
        return sum(s.stop - s.start for s in self.slices)

    @property
    def request_ids(self) -> tuple[str, ...]:
        """The ids of the requests with rows in the group, in order, each once."""
        ids = (piece.request.request_id for piece in self.slices)
        return tuple(dict.fromkeys(i for i in ids if i))

    def place(self, rows: list[int], y: np.ndarray) -> None:
        """Put predictions ``y`` of group rows ``rows`` into their requests; answer each
        request whose last row this was. A row already placed is left as it was."""
        start = 0
        for piece in self.slices:
            size = piece.stop - piece.start
            request = piece.request
            for position, row in enumerate(rows):
                if not start <= row < start + size or row in self.answered:
                    continue
                self.answered.add(row)
                if request.future.done():  # failed in another group, or the client left
                    continue
                if request.out is None:
                    request.out = np.empty((len(request.x), *y.shape[1:]), np.float32)
                request.out[piece.start + row - start] = y[position]
                request.remaining -= 1
                if request.remaining == 0:
                    request.future.set_result(request.out)
            start += size


GroupRunner = Callable[[np.ndarray, RowsReceiver, tuple[str, ...]], Awaitable[np.ndarray]]
"""``run_group(x, on_rows, request_ids)``: serves one coding group (see :class:`CodingQueue`)."""


class CodingQueue:
    """Requests for one (model, version). ``run_group(x, on_rows, request_ids)`` serves one
    coding group: inputs ``(k, *input_shape)`` -> predictions ``(k, *output_shape)``,
    raising a :class:`CodedFarmError` when the farm cannot; it may hand rows answered early
    to ``on_rows`` (on the event loop) before it returns. ``request_ids``: the ids of the
    group's requests (for its log lines)."""

    def __init__(
        self,
        config: BatcherConfig,
        run_group: GroupRunner,
        *,
        on_group: Callable[[int, float], None] = lambda rows, delay: None,
    ) -> None:
        self.config = config
        self.run_group = run_group
        self.on_group = on_group  # (rows, queue delay of its oldest row in seconds)
        self._pending: collections.deque[_Slice] = collections.deque()
        self._rows = 0
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(config.max_groups_in_flight)
        self._flusher: asyncio.Task[None] | None = None
        self._groups: set[asyncio.Task[None]] = set()

    async def infer(self, x: np.ndarray, request_id: str = "") -> np.ndarray:
        """Predictions for ``x`` ``(B, *input_shape)``; raises :class:`QueueFullError` at
        once when the queue is full, or what ``run_group`` raised for its group.
        ``request_id``: the request's id, handed to ``run_group`` with its group's."""
        if self._rows + len(x) > self.config.max_queue:
            raise QueueFullError(
                f"{self._rows} rows are waiting (the limit is {self.config.max_queue}); retry later"
            )
        loop = asyncio.get_running_loop()
        request = _Request(x, loop.create_future(), time.monotonic(), remaining=len(x),
                           request_id=request_id)  # fmt: skip
        self._pending.append(_Slice(request, 0, len(x)))
        self._rows += len(x)
        self._arrived.set()
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_forever())
        return await request.future

    @property
    def idle(self) -> bool:
        """True when no row waits and no group is in the farm."""
        return not self._pending and not self._groups

    async def close(self) -> None:
        """Stop forming groups; groups in flight finish."""
        if self._flusher is not None:
            self._flusher.cancel()
        if self._groups:
            await asyncio.gather(*self._groups, return_exceptions=True)

    async def _flush_forever(self) -> None:
        k = self.config.group_size
        while True:
            while not self._pending:
                self._arrived.clear()
                await self._arrived.wait()
            oldest = self._pending[0].request.arrived
            while self._rows < k:
                left = oldest + self.config.max_queue_delay - time.monotonic()
                if left <= 0:
                    break
                self._arrived.clear()
                try:
                    await asyncio.wait_for(self._arrived.wait(), left)
                except asyncio.TimeoutError:
                    break
            await self._slots.acquire()  # full groups form while every slot is busy
            group = self._take(k)
            self.on_group(group.rows, time.monotonic() - oldest)
            task = asyncio.create_task(self._serve(group))
            self._groups.add(task)
            task.add_done_callback(self._groups.discard)

    def _take(self, k: int) -> _Group:
        group = _Group()
        while self._pending and group.rows < k:
            piece = self._pending[0]
            room = k - group.rows
            if piece.stop - piece.start <= room:
                group.slices.append(self._pending.popleft())
            else:  # a request larger than what is left of the group: split it
                group.slices.append(_Slice(piece.request, piece.start, piece.start + room))
                piece.start += room
        self._rows -= group.rows
        return group

    async def _serve(self, group: _Group) -> None:
        try:
            x = np.concatenate([s.request.x[s.start : s.stop] for s in group.slices])
            try:
                y = await self.run_group(x, group.place, group.request_ids)
            except Exception as exc:  # every request of the group gets the group's error
                for s in group.slices:
                    if not s.request.future.done():
                        s.request.future.set_exception(exc)
                return
            rest = [row for row in range(group.rows) if row not in group.answered]
            group.place(rest, y[rest])
        finally:
            self._slots.release()
