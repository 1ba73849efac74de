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

from codedfarm.codecs import Codec, CodecPlan, plan_codec
from codedfarm.errors import CodecError, ConfigError, InputError, InputWarning
from codedfarm.models.resolve import ResolvedModel, resolve_model
from codedfarm.protocol import INFER_TASK, BatchRegistration, Keys, TaskMessage, task_envelope
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate, parse_straggler_spec

__all__ = ["BatchSpec", "Dispatcher", "PreparedBatch"]


@dataclass(frozen=True)
class BatchSpec:
    """How to serve one batch (a frozen value object; every field but ``model`` optional).

    ``model`` is a name (a repository model's highest version, or a zoo model) or
    ``name@version``. ``codec`` is a spec such as ``spline:lam_dec=auto``. Unset fields
    take the model's ``config.json`` serving defaults, then the farm's: codec ``spline``;
    ``s`` 0; ``n`` what the codec class says (``k`` for uncoded, ``k(s+1)`` for replication,
    the fewest that tolerate ``s`` for exact codes, ``3k`` for approximate ones);
    ``wait_for`` ``n - s``; ``deadline`` (seconds after submit) and ``queues`` the
    settings'. ``straggle`` injects stragglers (``fixed:S=4,delay=2``), ``plan`` gives one
    fate per task instead.
    """

    model: str
    codec: str | None = None
    n: int | None = None
    s: int | None = None
    wait_for: int | None = None
    straggle: str | None = None  # None: workers apply their own default
    deadline: float | None = None  # seconds after submit
    queues: tuple[str, ...] | None = None
    seed: int | None = None
    plan: tuple[TaskFate, ...] | None = None  # explicit fate per task (overrides straggle)
    hedge_after: float | None = None  # re-send tasks still missing after this many seconds
    hedge_plan: tuple[TaskFate, ...] | None = None  # fates of the re-sent copies, per index


@dataclass(frozen=True)
class PreparedBatch:
    batch: str
    spec: BatchSpec
    model: ResolvedModel
    plan: CodecPlan
    codec: Codec
    k: int
    n: int
    s: int
    wait_for: int
    deadline_s: float
    coded: npt.NDArray[np.float32]  # (n, *input_shape); a per-thread buffer: valid until the
    # dispatcher prepares the next batch on this thread
    fates: list[TaskFate] | None
    queues: tuple[str, ...]
    encode_s: float
    reference: npt.NDArray[np.float32] | None = None  # raw inputs of a fidelity-sampled batch
    submitted_at: float = field(default_factory=time.time)

    @property
    def slowed(self) -> list[dict[str, Any]]:
        if self.fates is None:
            return []
        return [
            {"index": i, "delay": f.delay, "fail": f.fail}
            for i, f in enumerate(self.fates)
            if f.slowed
        ]


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

    def prepare(self, x: Any, spec: BatchSpec) -> PreparedBatch:
        """Validate everything, then encode. Raises before anything is written to Redis."""
        model = resolve_model(spec.model, self.settings.model_repository)
        inputs = _as_float32_batch(x, model.input_shape, model.ref)
        k = inputs.shape[0]
        serving = model.serving
        plan = plan_codec(spec.codec or serving.codec or "spline")
        s = spec.s if spec.s is not None else (serving.s or 0)
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise ConfigError(f"s (stragglers to tolerate) must be an integer >= 0, got {s!r}")
        n = spec.n if spec.n is not None else (serving.n or plan.default_n(k, s))
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= self.settings.max_workers:
            raise ConfigError(
                f"n must be an integer in [1, {self.settings.max_workers}], got {n!r}"
            )
        if s >= n:
            raise ConfigError(f"s must be < n (some workers must answer), got n={n}, s={s}")
        codec = plan.codec(k, n, s)
        degree = plan.exact_degree
        if degree is not None and (model.polynomial_degree or degree + 1) > degree:
            declared = ("is not declared a polynomial" if model.polynomial_degree is None
                        else f"is declared of degree {model.polynomial_degree}")  # fmt: skip
            warnings.warn(
                InputWarning(
                    f"{plan.name} decodes exactly only models of degree <= {degree} (1: linear "
                    f"or affine); model {model.ref} {declared}, so its decoded answers are not "
                    "its outputs (declare polynomial_degree in its config.json, or use an "
                    "approximate code: berrut, spline)"
                ),
                stacklevel=2,
            )
        wait_for = n - s if spec.wait_for is None else spec.wait_for
        if not codec.min_results <= wait_for <= n:
            if spec.wait_for is None and codec.exact:
                raise CodecError(
                    f"{codec.name}: S={s} is too large for this exact code: it needs "
                    f"{codec.min_results} of n={n} results, but n - S = {n - s}"
                )
            raise ConfigError(
                f"wait_for must be in [{codec.min_results}, {n}] for {codec.spec}, got {wait_for}"
            )
        deadline = next(
            d for d in (spec.deadline, serving.deadline, self.settings.deadline) if d is not None
        )
        if spec.hedge_after is not None and not 0 < spec.hedge_after < deadline:
            raise ConfigError(f"hedge_after must be in (0, deadline), got {spec.hedge_after}")
        if not 0 < deadline < self.settings.key_ttl:
            raise ConfigError(
                f"deadline must be in (0, {self.settings.key_ttl:g}) seconds "
                f"(CODEDFARM_KEY_TTL), got {deadline}"
            )
        coded_bytes = n * inputs[0].nbytes
        if coded_bytes > self.settings.max_batch_bytes:
            raise InputError(
                f"coded batch is {coded_bytes} bytes (n={n} x {inputs[0].nbytes}), over the "
                f"limit of {self.settings.max_batch_bytes} (CODEDFARM_MAX_BATCH_BYTES)"
            )
        queues = tuple(spec.queues or self.settings.queues)
        if not queues or any(not q or ":" in q for q in queues):
            raise ConfigError(f"queue names must be non-empty without ':', got {queues}")
        fates = None
        if spec.plan is not None:
            if len(spec.plan) != n:
                raise ConfigError(f"plan must give one fate per task: {len(spec.plan)} for n={n}")
            fates = list(spec.plan)
        elif spec.straggle is not None:
            stragglers = parse_straggler_spec(spec.straggle)
            fates = stragglers.sample(n, np.random.default_rng(spec.seed))
        start = time.perf_counter()
        coded = codec.encode(inputs, out=self._coded_buffer((n, *inputs.shape[1:])))
        encode_s = time.perf_counter() - start
        sampled = (
            self.settings.fidelity_sample > 0
            and plan.name != "uncoded"
            and self._sampler.random() < self.settings.fidelity_sample
        )
        return PreparedBatch(
            batch=uuid.uuid4().hex,
            spec=spec,
            model=model,
            plan=plan,
            codec=codec,
            k=k,
            n=n,
            s=s,
            wait_for=wait_for,
            deadline_s=deadline,
            coded=coded,
            fates=fates,
            queues=queues,
            encode_s=encode_s,
            reference=inputs if sampled else None,
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
        )

    def _messages(
        self,
        batch: PreparedBatch,
        registration: BatchRegistration,
        inbox: str,
        tasks: Sequence[tuple[int, TaskFate | None]],
    ) -> dict[str, list[bytes]]:
        """Celery messages for (index, fate) pairs, grouped by queue (round-robin by index)."""
        per_input = batch.coded[0].nbytes
        shape = list(batch.coded.shape[1:])
        by_queue: dict[str, list[bytes]] = {q: [] for q in batch.queues}
        for j, fate in tasks:
            queue = batch.queues[j % len(batch.queues)]
            key, offset = registration.input_key, j * per_input
            if j >= batch.n:  # reference task i = j - n reads raw input i
                key, offset = registration.reference_key, (j - batch.n) * per_input
            message = TaskMessage(
                batch=batch.batch,
                index=j,
                model=batch.model.name,
                version=batch.model.version,
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
            )
            by_queue[queue].append(task_envelope(INFER_TASK, message.to_dict(), queue))
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
        by_queue = self._messages(batch, registration, inbox, tasks)
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
        """Hedging: send another copy of tasks ``indices``; returns how many were sent."""
        plan = batch.spec.hedge_plan
        tasks = [(j, plan[j] if plan is not None else TaskFate()) for j in indices]
        by_queue = self._messages(batch, self.registration(batch), inbox, tasks)
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
