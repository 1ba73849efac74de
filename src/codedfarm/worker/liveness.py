"""Liveness from the engine itself: is the engine's loop still turning?

The supervisor (:mod:`codedfarm.worker.supervisor`) answers a worker's ``/livez``, but it is
not the process that does the work. So the engine stamps its progress in memory it shares
with the supervisor, an :class:`EngineProgress`: a few doubles (monotonic seconds, one clock
for every process of the machine) in an anonymous shared mapping that the supervisor makes
before it forks. The engine, and Celery's pool processes, inherit it; there is no file (a
read-only root filesystem is fine) and no lock (a stopped engine cannot hold one).

- ``turn``: the engine's loop turned. The batch engine stamps every pass of its loop (at
  least once a second while idle: its blocking pop waits at most 1 s); the Celery engine
  stamps from its event loop's timer, every second, while its consumer runs.
  (A Celery pool process stuck in a task is not seen here: its event loop still turns.)
- ``busy``: a task legitimately runs longer than one turn (the batch engine's forward passes,
  a Celery task that runs inside the event loop with ``--pool solo`` and sleeps its injected
  straggler delay): the loop may stay silent until the task's bound has passed.

**The rule.** Once the engine has turned for the first time, it is *hung* when it has not
turned for ``T`` seconds and no task it is running is within its bound::

    hung  <=>  now > max(last turn + T, busy until)

``T`` is ``CODEDFARM_WORKER_LIVENESS_TIMEOUT`` (seconds, default 15, at least 2). A task's
bound is what is left of its batch's life (the task message's TTL, from the moment the
worker received it; for a Celery task, its injected delay plus that TTL): past it nobody
wants the result. A start is not judged (loading or training models takes what it takes:
readiness and Kubernetes' startup probe cover it), nor a Celery consumer reconnecting to
its broker, nor a supervisor that was asked to stop. Time the supervisor itself was stopped
(a frozen node, SIGSTOP of the whole process group) does not count against the engine:
after a gap of more than ``PAUSE_S`` between its own checks, the engine gets ``T`` again.

A hung engine fails ``/livez`` (503 with a JSON reason) and ``/readyz`` at once, stops its
heartbeat (clients stop sending it work), and, once it has stayed hung for another second
(``supervisor.CONFIRM_S``: an engine that is continued in time recovers untouched), is
killed (SIGKILL, with its pool processes) and restarted by the supervisor, which counts its
restarts (``exited`` or ``hung``) in ``codedfarm_worker_engine_restarts_total``. While a new
engine starts, ``/livez`` answers 200 again: Kubernetes' liveness probe restarts the
container only when the supervisor itself stops answering.
"""

from __future__ import annotations

import ctypes
import mmap
import threading
import time

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "PAUSE_S",
    "TIMEOUT_VARIABLE",
    "EngineProgress",
    "EngineWatch",
    "engine_progress",
    "install_progress",
]

DEFAULT_TIMEOUT_S = 15.0
"""``T``: seconds an engine's loop may go without turning while no task holds it."""
MIN_TIMEOUT_S = 2.0
"""The Celery engine stamps once a second, the batch engine at least once a second."""
TIMEOUT_VARIABLE = "CODEDFARM_WORKER_LIVENESS_TIMEOUT"
"""The variable of ``T``: ``codedfarm worker --liveness-timeout``'s (and
:meth:`~codedfarm.worker.options.WorkerOptions.from_env`'s)."""
PAUSE_S = 2.0
"""A gap this long between the supervisor's own checks means it was stopped itself."""
REASONS = ("exited", "hung")
"""Why the supervisor restarted an engine: it stopped unasked, or its loop stopped turning."""

_TURN, _BUSY, _PID = 0, 1, 2


class EngineProgress:
    """The engine's stamps, in memory shared with the processes forked after it is made.

    Each field is one aligned 8-byte double, written and read whole (no lock). A last turn
    of 0 means "not started" (a start is not judged)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = timeout  # ``T`` (the processes forked later inherit it too)
        self._map = mmap.mmap(-1, mmap.PAGESIZE)  # anonymous and shared: inherited by fork
        self._cells = (ctypes.c_double * 3).from_buffer(self._map)

    def turn(self) -> None:
        """The loop turned (now)."""
        self._cells[_TURN] = time.monotonic()

    def busy(self, seconds: float) -> None:
        """A task runs for up to ``seconds`` from now: the loop may stay silent that long."""
        self._cells[_BUSY] = time.monotonic() + max(0.0, seconds)

    def idle(self) -> None:
        """No task holds the loop any more."""
        self._cells[_BUSY] = 0.0

    def reset(self) -> None:
        """A new engine is starting, or the loop stopped on purpose: not judged until its
        next turn."""
        self._cells[_TURN] = 0.0
        self._cells[_BUSY] = 0.0

    def set_pid(self, pid: int) -> None:
        """The engine's process id (for the reason ``/livez`` gives)."""
        self._cells[_PID] = float(pid)

    @property
    def last_turn(self) -> float:
        """Monotonic time of the last turn (0.0: not started)."""
        return float(self._cells[_TURN])

    @property
    def busy_until(self) -> float:
        return float(self._cells[_BUSY])

    @property
    def pid(self) -> int:
        return int(self._cells[_PID])

    def deadline(self, timeout: float, since: float = 0.0) -> tuple[float, float] | None:
        """The last turn and the monotonic time past which the engine is hung (None: not
        judged now). ``since``: the engine got ``timeout`` again from then (the supervisor
        was stopped itself)."""
        last, busy = self.last_turn, self.busy_until
        if last <= 0.0:
            return None
        return last, max(max(last, since) + timeout, busy)

    def fresh(self) -> bool:
        """Not hung (the engine's own view, for its heartbeat)."""
        judged = self.deadline(self.timeout)
        return judged is None or time.monotonic() <= judged[1]


_progress = EngineProgress()


def install_progress(progress: EngineProgress) -> None:
    """Stamp into ``progress`` in this process and in the children it forks from now on."""
    global _progress
    _progress = progress


def engine_progress() -> EngineProgress:
    """Where the engine stamps (a private one, which nobody judges, unless installed)."""
    return _progress


class EngineWatch:
    """The supervisor's side: judges the engine's progress with ``timeout`` (``T``), and
    counts the engine's restarts by reason. Read by the supervisor's loop and by its
    ``/livez``, ``/readyz`` and ``/metrics`` (threads of one process)."""

    def __init__(self, timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self.timeout = timeout
        self.progress = EngineProgress(timeout)
        self.restarts = dict.fromkeys(REASONS, 0)
        self._lock = threading.Lock()
        self._last_check = 0.0
        self._grace_from = 0.0
        self.judging = True  # False once the supervisor was asked to stop

    def starting(self) -> None:
        """A new engine starts (or none runs): nothing to judge until it turns."""
        self.progress.reset()

    def restarted(self, reason: str) -> None:
        with self._lock:
            self.restarts[reason] = self.restarts.get(reason, 0) + 1

    def restart_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.restarts)

    def _since(self, now: float) -> float:
        """The time from which the engine gets ``T`` again after the supervisor was stopped."""
        with self._lock:
            if self._last_check and now - self._last_check > PAUSE_S:
                self._grace_from = now
            self._last_check = now
            return self._grace_from

    def loop_age(self) -> float | None:
        """Seconds since the engine's loop last turned (None: not started)."""
        last = self.progress.last_turn
        return None if last <= 0.0 else max(0.0, time.monotonic() - last)

    def hung(self) -> dict[str, object] | None:
        """None while the engine is live (or not judged); else why not, as JSON fields."""
        now = time.monotonic()
        since = self._since(now)
        judged = self.progress.deadline(self.timeout, since)
        if not self.judging or judged is None or now <= judged[1]:
            return None
        last, deadline = judged
        age, bound = now - last, deadline - last
        return {
            "status": "hung",
            "reason": f"the worker's engine loop has not turned for {age:.1f} s "
            f"(allowed: {bound:.1f} s; {TIMEOUT_VARIABLE}={self.timeout:g})",
            "engine_pid": self.progress.pid,
            "seconds_since_turn": round(age, 3),
            "allowed_seconds": round(bound, 3),
        }

    def not_ready(self) -> str | None:
        """``/readyz``'s reason when the engine is hung."""
        hung = self.hung()
        return None if hung is None else str(hung["reason"])
