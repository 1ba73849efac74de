"""What every worker engine does with a coded task, written once.

- :func:`task_fate`: the batch's straggler plan for the task, else the worker's default;
- :func:`batch_open`: whether the task's batch still wants results (its inputs exist);
- :func:`predict`: the model on a stack of coded inputs, one forward pass;
- :class:`Report`: output bytes and completion notices (and, for the batch engine, the
  acknowledgements) written in one atomic round trip by :data:`REPORT_SCRIPT`;
- :func:`preload_models`, :func:`start_heartbeat` and :func:`announce_ready`: the start-up
  both engines share (a worker is live on its queues only once its models are loaded);
- :func:`log_task`: the debug line of a finished task (its batch and request ids).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from codedfarm.errors import InjectedFailure, ModelUnavailableError
from codedfarm.heartbeat import Heartbeat
from codedfarm.logs import LIFECYCLE, trace
from codedfarm.protocol import Keys, Notice, TaskMessage
from codedfarm.stragglers import TaskFate
from codedfarm.worker.state import WorkerState

log = logging.getLogger(__name__)

__all__ = [
    "CANCEL_POLL_S",
    "REPORT_SCRIPT",
    "InjectedFailure",
    "Report",
    "announce_ready",
    "batch_open",
    "log_task",
    "predict",
    "preload_models",
    "start_heartbeat",
    "stop_heartbeat",
    "task_fate",
]

CANCEL_POLL_S = 0.05
"""How often a straggling task checks whether its batch is finished, seconds."""

NO_FATE = TaskFate()


def task_fate(msg: TaskMessage, worker: WorkerState) -> TaskFate:
    """The batch's plan for this task, else a draw from the worker's default straggler spec."""
    if msg.delay is not None:
        return TaskFate(msg.delay, msg.fail)
    if worker.straggle.trivial:
        return NO_FATE
    return worker.straggle.sample(1)[0]


def batch_open(worker: WorkerState, msg: TaskMessage) -> bool:
    """True while the task's batch is open: the collector deletes a finished batch's inputs
    (and they expire), so a straggling task whose result nobody needs can give its slot back."""
    return bool(worker.redis.exists(msg.input_key))


def predict(
    worker: WorkerState, model_name: str, x: np.ndarray, version: int | None = None
) -> tuple[np.ndarray, float]:
    """Model outputs ``(G, *in_shape) -> (G, *out_shape)`` float32 on the worker's device,
    and the compute time in seconds (times ``--slowdown`` on a persistently slow node).

    The models are in eval mode, so each output row depends only on its own input: G coded
    inputs in one forward pass give the same outputs as G passes of one. Raises
    :class:`ModelUnavailableError` when the model cannot be served or its outputs do not
    have the shape its config declares.
    """
    import torch

    model = worker.model(model_name, version)
    device = worker.options.device
    start = time.perf_counter()
    with torch.inference_mode():
        tensor = torch.from_numpy(np.array(x, dtype=np.float32)).to(device)
        output = model.module(tensor).float().cpu().numpy()
    compute = time.perf_counter() - start
    if tuple(output.shape) != (len(x), *model.output_shape):
        raise ModelUnavailableError(
            f"model {model.ref} on worker {worker.name} returned outputs of shape "
            f"{tuple(output.shape[1:])} for inputs of shape {tuple(x.shape[1:])}; its config "
            f"says {model.output_shape}: fix the model or its output_shape"
        )
    if worker.options.slowdown > 1:
        time.sleep((worker.options.slowdown - 1.0) * compute)
        compute *= worker.options.slowdown
    if worker.options.corruption.active:
        # fresh entropy per call: forked pool children must not repeat each other's faults
        output, count = worker.options.corruption.apply(output, np.random.default_rng())
        if count:
            log.warning("worker %s corrupted %d output(s) (--corrupt %s)", worker.name, count,
                        worker.options.corrupt)  # fmt: skip
    return output, compute


# KEYS: (inputs, outputs, inbox) per reported task, then (batch engine) kombu's unacked
# index and hash. ARGV: the number of reported tasks, then (index, output bytes, notice, ttl)
# per task, then the delivery tags to acknowledge. Outputs are stored only while the batch
# is open (its inputs exist), so results that lose the race to the decode leave nothing
# behind; notices are always pushed, so the collector can count late results.
REPORT_SCRIPT = """
local n = tonumber(ARGV[1])
for i = 0, n - 1 do
  local a = 2 + 4 * i
  local ttl = ARGV[a + 3]
  if ARGV[a + 1] ~= '' and redis.call('EXISTS', KEYS[3 * i + 1]) == 1 then
    redis.call('HSET', KEYS[3 * i + 2], ARGV[a], ARGV[a + 1])
    redis.call('EXPIRE', KEYS[3 * i + 2], ttl)
  end
  redis.call('RPUSH', KEYS[3 * i + 3], ARGV[a + 2])
  redis.call('EXPIRE', KEYS[3 * i + 3], ttl)
end
local tags = {}
for j = 2 + 4 * n, #ARGV do tags[#tags + 1] = ARGV[j] end
if #tags > 0 then
  redis.call('ZREM', KEYS[3 * n + 1], unpack(tags))
  redis.call('HDEL', KEYS[3 * n + 2], unpack(tags))
end
return #tags
"""


@dataclass
class Report:
    """What one round trip writes back: notices with outputs, and the tags to acknowledge."""

    keys: list[str] = field(default_factory=list)
    args: list[Any] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    reported: int = 0
    notices: list[Notice] = field(default_factory=list)  # serialized, stamped, at send

    def add(self, msg: TaskMessage, payload: bytes, notice: Notice) -> None:
        """A notice with its raw output bytes (``ok`` and ``error`` build both)."""
        self.keys += [msg.input_key, msg.output_key, msg.inbox]
        self.args += [str(msg.index), payload, b"", max(1, int(msg.ttl))]
        self.notices.append(notice)
        self.reported += 1

    def ok(
        self,
        msg: TaskMessage,
        output: np.ndarray,
        compute: float,
        delay: float,
        worker: str,
        *,
        received_at: float = 0.0,
        started_at: float = 0.0,
        forward_s: float | None = None,
    ) -> str:
        """A result: ``output`` ``(*out_shape)`` as float32 bytes, with its notice (wall-clock
        stamps of the task's receipt and compute start, and the seconds of the forward pass
        that computed it, ``compute`` unless it was one of a group, for the timeline)."""
        notice = Notice(batch=msg.batch, index=msg.index, ok=True, dtype="float32",
                        shape=list(output.shape), compute_s=compute, delay_s=delay,
                        worker=worker, received_at=received_at, started_at=started_at,
                        forward_s=compute if forward_s is None else forward_s)  # fmt: skip
        self.add(msg, output.astype("<f4", copy=False).tobytes(), notice)
        return "ok"

    def error(self, msg: TaskMessage, exc: BaseException, worker: str) -> str:
        """A failed task: the collector learns at once instead of waiting for a deadline."""
        error = " ".join(str(exc).split())[:300]
        self.add(msg, b"", Notice(batch=msg.batch, index=msg.index, ok=False, error=error,
                                  worker=worker))  # fmt: skip
        return "error"

    def send(self, worker: WorkerState, unacked: tuple[str, ...] | list[str] = ()) -> None:
        """Everything in one atomic call; ``unacked`` names kombu's unacked index and hash
        when there are tags to acknowledge. Notices are stamped with the time of this call."""
        if not self.reported and not self.tags:
            return
        now = time.time()
        for i, notice in enumerate(self.notices):
            self.args[4 * i + 2] = notice.to_json(now)
        keys = [*self.keys, *unacked] if self.tags else self.keys
        worker.script(REPORT_SCRIPT)(keys=keys, args=[self.reported, *self.args, *self.tags])


def preload_models(worker: WorkerState) -> None:
    """Load the worker's ``preload`` models (in this process, on its device), training zoo
    models that need it; a bare repository name loads its highest version."""
    from codedfarm.models.resolve import parse_model_ref

    for ref in worker.options.preload:
        name, version = parse_model_ref(ref)
        worker.model(name, version, train=True)
    # torch, the models and the libraries are loaded for good: move them out of the cyclic
    # collector's reach, so its full collections stop scanning them (pauses of several ms
    # in the middle of a batch, a tail-latency cost)
    gc.collect()
    gc.freeze()


_heartbeat: Heartbeat | None = None


def start_heartbeat(worker: WorkerState, queues: Sequence[str], name: str) -> None:
    """Announce this worker as live on ``queues`` (clients refuse queues nobody serves)."""
    from codedfarm.worker.kombu_guards import kombu_keys
    from codedfarm.worker.liveness import engine_progress

    global _heartbeat
    keys = Keys(worker.settings.key_prefix)
    settings = worker.settings
    _heartbeat = Heartbeat(
        lambda: worker.redis, [keys.live_workers(q) for q in queues], name,
        expire=kombu_keys(tuple(queues)),
        expire_s=int(2 * max(settings.key_ttl, settings.visibility_timeout)),
        healthy=engine_progress().fresh,  # a hung engine loop stops the beats
    )  # fmt: skip
    _heartbeat.start()


def stop_heartbeat() -> None:
    """Leave the live sets (a clean shutdown)."""
    if _heartbeat is not None:
        _heartbeat.stop()


def announce_ready(name: str) -> None:
    """The ready line, logged whatever the log level: supervisors and tests wait for it."""
    logging.getLogger(LIFECYCLE).info("codedfarm worker %s ready.", name)


def log_task(msg: TaskMessage, status: str, seconds: float) -> None:
    """A finished task's debug line: its batch, index, status and time since it was taken
    off the queue, with the batch's request ids (nothing is formatted above debug)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug("task %s/%d %s in %.1f ms", msg.batch, msg.index, status, seconds * 1e3,
                  extra=trace(msg.batch, msg.requests))  # fmt: skip
