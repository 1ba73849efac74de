"""Validate and encode a batch, then write inputs, registration and N tasks in one round trip."""

from __future__ import annotations

import threading
import time
import uuid
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import redis

from codedfarm.codecs import Codec, CodecPlan
from codedfarm.coordinator.resolution import BatchSettings, BatchSpec, resolve_batch
from codedfarm.errors import InputError, InputWarning
from codedfarm.models.resolve import ResolvedModel, resolve_model
from codedfarm.protocol import (
    INFER_TASK,
    BatchRegistration,
    Keys,
    TaskMessage,
    priority_list,
    task_envelope,
)
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate

__all__ = ["REDUNDANT_PRIORITY", "BatchSpec", "Dispatcher", "PreparedBatch", "redundant_tasks"]

REDUNDANT_PRIORITY = 3
"""kombu priority of a batch's redundant tasks (parity, extra copies) under ``wait="own"``:
a worker takes every waiting first-copy task before them, so under load they run in spare
time, and those whose batch is answered by then are skipped (docs/serve.md)."""


def redundant_tasks(codec: Codec) -> frozenset[int]:
    """Tasks of ``codec`` that only stand in for others: every task but the first to carry
    each row unchanged, when some do (systematic codes, replication); none otherwise (every
    result of a code that is not systematic is needed alike)."""
    seen: set[int] = set()
    redundant: set[int] = set()
    if all(row is None for row in codec.own_tasks):
        return frozenset()
    for task, row in enumerate(codec.own_tasks):
        if row is None or row in seen:
            redundant.add(task)
        else:
            seen.add(row)
    return frozenset(redundant)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch ready to dispatch: its resolved ``settings`` and its coded inputs."""

    batch: str
    settings: BatchSettings
    coded: npt.NDArray[np.float32]  # (n, *input_shape); a per-thread buffer: valid until the
    # dispatcher prepares the next batch on this thread
    encode_s: float
    reference: npt.NDArray[np.float32] | None = None  # raw inputs of a fidelity-sampled batch
    submitted_at: float = field(default_factory=time.time)
    deadline_s: float = -1.0  # seconds after submit; -1: the settings' (a retry has less)
    request_ids: tuple[str, ...] = ()  # the requests it serves: in its log lines everywhere

    def __post_init__(self) -> None:
        if self.deadline_s < 0:
            object.__setattr__(self, "deadline_s", self.settings.deadline)

    # the settings' values, read often enough to be named here
    @property
    def model(self) -> ResolvedModel:
        return self.settings.model

    @property
    def plan(self) -> CodecPlan:
        return self.settings.plan

    @property
    def codec(self) -> Codec:
        return self.settings.codec

    @property
    def k(self) -> int:
        return self.settings.k

    @property
    def n(self) -> int:
        return self.settings.n

    @property
    def s(self) -> int:
        return self.settings.s

    @property
    def wait_for(self) -> int:
        return self.settings.wait_for

    @property
    def queues(self) -> tuple[str, ...]:
        return self.settings.queues

    @property
    def fates(self) -> tuple[TaskFate, ...] | None:
        return self.settings.fates

    @property
    def slowed(self) -> list[dict[str, Any]]:
        return self.settings.slowed


def _as_float32_batch(x: Any, input_shape: tuple[int, ...], model: str) -> npt.NDArray[np.float32]:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().cpu().numpy()
    try:
        array = np.asarray(x)
    except Exception as exc:
        raise InputError(f"batch is not an array: {exc}") from exc
    if array.dtype == object or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_
    ):
        raise InputError(f"batch must be numeric, got dtype {array.dtype}")
    if array.dtype == np.uint8:  # images in 0..255: the rule the CLI help states
        warnings.warn(
            InputWarning("uint8 batch converted to float32 in [0, 1] (divided by 255)"),
            stacklevel=3,
        )
        array = array.astype(np.float32) / np.float32(255)
    elif not np.issubdtype(array.dtype, np.floating):
        raise InputError(
            f"batch of dtype {array.dtype}: the farm serves float32 inputs; convert it as your "
            "model expects (only uint8 images are converted, to [0, 1])"
        )
    if array.ndim != len(input_shape) + 1 or tuple(array.shape[1:]) != input_shape:
        raise InputError(
            f"model {model} takes a batch of shape (K, {', '.join(map(str, input_shape))}), "
            f"got {tuple(array.shape)}"
        )
    if array.shape[0] < 1:
        raise InputError("batch is empty (K = 0)")
    if not np.isfinite(array).all():
        bad = int(np.count_nonzero(~np.isfinite(array)))
        raise InputError(f"batch contains {bad} NaN/Inf values")
    return np.ascontiguousarray(array, dtype=np.float32)


class Dispatcher:
    """Turns (inputs, spec) into coded inputs and tasks on the worker queues."""

    def __init__(self, settings: Settings, client: redis.Redis) -> None:
        self.settings = settings
        self.redis = client
        self.keys = Keys(settings.key_prefix)
        self._sampler = np.random.default_rng()
        self._buffers = threading.local()

    def _coded_buffer(self, shape: tuple[int, ...]) -> npt.NDArray[np.float32]:
        """This thread's buffer for coded inputs, reused while the shape stays: a fresh
        array costs its page faults again on every batch (half again the encode's GEMM at
        K=20, N=100, 3x224x224; docs/benchmarks.md)."""
        buffer: npt.NDArray[np.float32] | None = getattr(self._buffers, "coded", None)
        if buffer is None or buffer.shape != shape:
            buffer = np.empty(shape, np.float32)
            self._buffers.coded = buffer
        return buffer

    def prepare(
        self, x: Any, batch: BatchSpec | BatchSettings, request_ids: Sequence[str] = ()
    ) -> PreparedBatch:
        """Validate everything, then encode ``x`` ``(k, *input_shape)``. ``batch``: settings
        resolved already (``resolve_batch``), or a spec resolved here for ``x``'s rows.
        ``request_ids``: the requests the batch serves (its registration and tasks carry
        them into the collector's and workers' log lines). Raises before anything is
        written to Redis."""
        if isinstance(batch, BatchSpec):
            model = resolve_model(batch.model, self.settings.model_repository)
            inputs = _as_float32_batch(x, model.input_shape, model.ref)
            settings = resolve_batch(batch, inputs.shape[0], self.settings, model=model)
        else:
            settings = batch
            inputs = _as_float32_batch(x, settings.model.input_shape, settings.model.ref)
            if inputs.shape[0] != settings.k:
                raise InputError(
                    f"the batch has {inputs.shape[0]} inputs, its settings k={settings.k}"
                )
        start = time.perf_counter()
        coded = settings.codec.encode(
            inputs, out=self._coded_buffer((settings.n, *inputs.shape[1:]))
        )
        encode_s = time.perf_counter() - start
        sampled = (
            self.settings.fidelity_sample > 0
            and not settings.plan.exact_for_any_model
            and self._sampler.random() < self.settings.fidelity_sample
        )
        return PreparedBatch(
            batch=uuid.uuid4().hex,
            settings=settings,
            coded=coded,
            encode_s=encode_s,
            reference=inputs if sampled else None,
            request_ids=tuple(request_ids),
        )

    def registration(self, batch: PreparedBatch) -> BatchRegistration:
        return BatchRegistration(
            batch=batch.batch,
            codec=batch.plan.name,
            codec_params=batch.plan.parameters(batch.s),
            k=batch.k,
            n=batch.n,
            s=batch.s,
            wait_for=batch.wait_for,
            wait=batch.settings.wait,
            late_after=self.settings.late_after,
            deadline=batch.submitted_at + batch.deadline_s,
            model=batch.model.name,
            model_version=batch.model.version,
            output_shape=list(batch.model.output_shape),
            submitted_at=batch.submitted_at,
            reply_key=self.keys.reply(batch.batch),
            input_key=self.keys.inputs(batch.batch),
            output_key=self.keys.outputs(batch.batch),
            ttl=self.settings.key_ttl,
            slowed=batch.slowed,
            queues=list(batch.queues),
            encode_s=batch.encode_s,
            reference=batch.reference is not None,
            reference_key=self.keys.reference(batch.batch) if batch.reference is not None else "",
            requests=list(batch.request_ids),
        )

    def _messages(
        self,
        batch: PreparedBatch,
        registration: BatchRegistration,
        inbox: str,
        tasks: Sequence[tuple[int, TaskFate | None]],
        shift: int = 0,
        redundant: frozenset[int] = frozenset(),
    ) -> dict[str, list[bytes]]:
        """Celery messages for (index, fate) pairs, grouped by the Redis list they go to:
        their queue (round-robin by index: task j on ``queues[(j + shift) % len]``, so a
        list of queues places tasks), at priority :data:`REDUNDANT_PRIORITY` for the tasks
        in ``redundant``."""
        per_input = batch.coded[0].nbytes
        shape = list(batch.coded.shape[1:])
        requests = list(batch.request_ids)
        by_queue: dict[str, list[bytes]] = {}
        for j, fate in tasks:
            queue = batch.queues[(j + shift) % len(batch.queues)]
            priority = REDUNDANT_PRIORITY if j in redundant else 0
            key, offset = registration.input_key, j * per_input
            if j >= batch.n:  # reference task i = j - n reads raw input i
                key, offset = registration.reference_key, (j - batch.n) * per_input
            model = batch.settings.task_model(j) if j < batch.n else batch.model
            message = TaskMessage(
                batch=batch.batch,
                index=j,
                model=model.name,
                version=model.version,
                input_key=key,
                offset=offset,
                nbytes=per_input,
                dtype="float32",
                shape=shape,
                output_key=registration.output_key,
                inbox=inbox,
                ttl=self.settings.key_ttl,
                delay=None if fate is None else fate.delay,
                fail=False if fate is None else fate.fail,
                queue=queue,
                requests=requests,
            )
            envelope = task_envelope(INFER_TASK, message.to_dict(), queue, priority)
            by_queue.setdefault(priority_list(queue, priority), []).append(envelope)
        return by_queue

    def dispatch(
        self,
        batch: PreparedBatch,
        inbox: str,
        durable: str | None = None,
        *,
        announce: bool = True,
        registration: BatchRegistration | None = None,
    ) -> float:
        """Inputs + registration + every task in one pipeline; returns seconds spent.
        ``durable``: a collector service's hash of open batches, which keeps the
        registration until the batch ends (so a restarted collector finishes it).
        ``announce=False``: no registration in ``inbox`` (the caller's own in-process
        collector has it already; pass its ``registration`` to build it once)."""
        start = time.perf_counter()
        ttl = int(self.settings.key_ttl)
        registration = registration or self.registration(batch)
        extra = 0 if batch.reference is None else batch.k  # uncoded reference tasks
        tasks = [
            (j, None if batch.fates is None else (batch.fates[j] if j < batch.n else TaskFate()))
            for j in range(batch.n + extra)
        ]
        redundant = redundant_tasks(batch.codec) if batch.settings.wait == "own" else frozenset()
        by_queue = self._messages(batch, registration, inbox, tasks, redundant=redundant)
        pipe = self.redis.pipeline(transaction=False)
        pipe.set(registration.input_key, batch.coded.data.cast("B"), ex=ttl)  # no copy
        if batch.reference is not None:
            pipe.set(registration.reference_key, batch.reference.tobytes(), ex=ttl)
        if announce:
            pipe.rpush(inbox, registration.to_json())
            pipe.expire(inbox, ttl)
        if durable is not None:
            pipe.hset(durable, batch.batch, registration.to_json())
            pipe.expire(durable, ttl)
        self._push(pipe, by_queue, ttl)
        pipe.execute()
        return time.perf_counter() - start

    def redispatch(self, batch: PreparedBatch, inbox: str, indices: list[int]) -> int:
        """Hedging: send another copy of tasks ``indices``; returns how many were sent. Each
        copy goes to the queue after its first copy's (with several queues, another worker:
        a copy sent where the first one waits behind a slow worker would wait there too)."""
        plan = batch.settings.hedge_plan
        tasks = [(j, plan[j] if plan is not None else TaskFate()) for j in indices]
        by_queue = self._messages(batch, self.registration(batch), inbox, tasks, shift=1)
        pipe = self.redis.pipeline(transaction=False)
        self._push(pipe, by_queue, int(self.settings.key_ttl))
        pipe.execute()
        return len(tasks)

    @staticmethod
    def _push(pipe: Any, by_queue: dict[str, list[bytes]], ttl: int) -> None:
        for queue, messages in by_queue.items():
            if messages:
                pipe.lpush(queue, *messages)
                pipe.expire(queue, ttl)
