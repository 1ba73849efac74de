"""The inference task: read a coded input, straggle if told to, run the model, report."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from codedfarm.errors import ProtocolError
from codedfarm.monitoring.worker_metrics import worker_metrics
from codedfarm.protocol import Notice, TaskMessage, array_from_bytes
from codedfarm.stragglers import TaskFate
from codedfarm.tasks.worker_state import WorkerState, state

__all__ = ["REPORT_SCRIPT", "InjectedFailure", "predict", "run_inference", "task_fate"]

log = logging.getLogger(__name__)


class InjectedFailure(Exception):  # noqa: N818 - reads as what happened
    """The straggler plan said this task dies without a result."""


NO_FATE = TaskFate()


def task_fate(msg: TaskMessage, worker: WorkerState) -> TaskFate:
    """The batch's plan for this task, else a draw from the worker's default straggler spec."""
    if msg.delay is not None:
        return TaskFate(msg.delay, msg.fail)
    if worker.straggle.trivial:
        return NO_FATE
    return worker.straggle.sample(1)[0]


def run_inference(**kwargs: Any) -> str:
    """Celery task body. Returns a short status string (results are not stored)."""
    worker = state()
    try:
        msg = TaskMessage.from_dict(kwargs)
    except ProtocolError as exc:
        log.error("dropping malformed task message: %s", exc)
        return "malformed"
    start = time.perf_counter()
    fate = task_fate(msg, worker)
    status = "error"
    try:
        status = _run(worker, msg, fate)
    except InjectedFailure:
        status = "failed"
        raise
    finally:
        worker_metrics().observe(
            msg.queue, msg.model, status, time.perf_counter() - start, fate.delay
        )
    return status


def _run(worker: WorkerState, msg: TaskMessage, fate: TaskFate) -> str:
    if fate.delay > 0 and not _straggle(worker, msg, fate.delay):
        return "cancelled"  # the batch finished while this task straggled
    if fate.fail:
        raise InjectedFailure(f"batch {msg.batch} task {msg.index}: injected failure")
    r = worker.redis
    data = r.getrange(msg.input_key, msg.offset, msg.offset + msg.nbytes - 1)
    if not data:  # the batch is finished (inputs deleted) or expired: nothing to do
        return "skipped"
    try:
        x = array_from_bytes(data, msg.dtype, msg.shape)
        outputs, compute = predict(worker, msg.model, x[None])
        output = outputs[0]
        payload = output.astype("<f4", copy=False).tobytes()
        notice = Notice(
            batch=msg.batch,
            index=msg.index,
            ok=True,
            dtype="float32",
            shape=list(output.shape),
            compute_s=compute,
            delay_s=fate.delay,
            worker=worker.name,
        )
    except Exception as exc:  # a model or data error: tell the collector instead of hanging
        log.exception("task %s/%d failed", msg.batch, msg.index)
        payload = b""
        notice = Notice(
            batch=msg.batch, index=msg.index, ok=False, error=" ".join(str(exc).split())[:300]
        )
    _report(worker, msg, payload, notice)
    return "ok" if notice.ok else "error"


CANCEL_POLL_S = 0.05


def _straggle(worker: WorkerState, msg: TaskMessage, delay: float) -> bool:
    """Sleep ``delay`` seconds, waking every 50 ms to see whether the batch is still open.

    Returns False as soon as the batch's inputs are gone (decoded, timed out or expired):
    a straggling task whose result nobody needs gives its slot back, like a revoked task.
    """
    end = time.monotonic() + delay
    while (left := end - time.monotonic()) > 0:
        time.sleep(min(left, CANCEL_POLL_S))
        if left > CANCEL_POLL_S and not worker.redis.exists(msg.input_key):
            return False
    return True


def predict(worker: WorkerState, model_name: str, x: np.ndarray) -> tuple[np.ndarray, float]:
    """Model outputs ``(G, *in_shape) -> (G, *out_shape)`` float32 on the worker's device,
    and the compute time in seconds (times ``--slowdown`` on a persistently slow node).

    The models are in eval mode, so each output row depends only on its own input: G coded
    inputs in one forward pass give the same outputs as G passes of one.
    """
    import torch

    model = worker.model(model_name)
    device = worker.options.device
    start = time.perf_counter()
    with torch.inference_mode():
        tensor = torch.from_numpy(np.array(x, dtype=np.float32)).to(device)
        output = model(tensor).float().cpu().numpy()
    compute = time.perf_counter() - start
    if worker.options.slowdown > 1:
        time.sleep((worker.options.slowdown - 1.0) * compute)
        compute *= worker.options.slowdown
    return output, compute


# One atomic round trip: store the output only while the batch is open (its inputs still
# exist), so results that lose the race to the decode leave nothing behind; the notice is
# always pushed, so the collector can count late results.
REPORT_SCRIPT = """
if ARGV[2] ~= '' and redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[4])
end
redis.call('RPUSH', KEYS[3], ARGV[3])
redis.call('EXPIRE', KEYS[3], ARGV[4])
return 1
"""


def _report(worker: WorkerState, msg: TaskMessage, payload: bytes, notice: Notice) -> None:
    """Output bytes and the completion notice in one atomic call (a Lua script)."""
    ttl = max(1, int(msg.ttl))
    stamped = Notice(**{**notice.__dict__, "written_at": time.time()})
    worker.report_script(
        keys=[msg.input_key, msg.output_key, msg.inbox],
        args=[str(msg.index), payload, stamped.to_json(), ttl],
    )
