"""Keep a worker running: restart it whenever it stops without being asked to.

Celery stops a worker on any "Unrecoverable error" inside its consumer (a kombu failure, a
lost connection it could not handle), and either engine can be killed (SIGKILL, the OOM
killer). The ``codedfarm worker`` process therefore runs the engine in a child process and
starts a fresh one after every stop that was not requested: a non-zero exit status or a
signal. It waits 1 s before the first restart, doubling to at most 30 s while the child
keeps dying young, and starts over at 1 s once a child has run for 10 s. Signals sent to
the supervisor (SIGTERM, SIGINT, SIGQUIT) go to the child, and then the supervisor exits
with it; a child that exits with status 0 (Celery's remote ``shutdown``) ends it too.

It also restarts an engine that is alive but hung: the engine stamps its loop's progress in
memory shared with the supervisor (:mod:`codedfarm.worker.liveness`, which states the rule),
and the supervisor, checking every ``POLL_S``, kills one whose loop stopped turning (found
hung for ``CONFIRM_S``; SIGKILL, with its pool processes) and starts a new one on the same
backoff. Every restart is
counted by reason (``exited``, ``hung``) in the :class:`~codedfarm.worker.liveness.EngineWatch`
it is given, which ``/livez``, ``/readyz`` and ``/metrics`` read too.

This is a fork loop written by hand (not supervisord or systemd) because it must share the
preloaded models and the parsed options with the child, and run the same under compose,
Kubernetes and a shell.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from codedfarm.logs import LIFECYCLE

if TYPE_CHECKING:
    from codedfarm.worker.liveness import EngineWatch

__all__ = ["supervise"]

log = logging.getLogger(__name__)
lifecycle = logging.getLogger(LIFECYCLE)  # restarts are shown at every log level

RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
HEALTHY_RUN_S = 10.0  # a child that ran this long was not crash-looping: the backoff resets
POLL_S = 0.2  # how often the supervisor looks at its child (exited? hung?)
CONFIRM_S = 1.0  # a hung verdict must hold this long before the kill (a hiccup is no hang)


def _run_child(target: Callable[[], None]) -> None:
    code = 0
    try:
        target()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        log.exception("worker crashed")
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def describe_status(code: int) -> str:
    """``3`` -> ``"status 3"``, ``-9`` -> ``"signal 9 (SIGKILL)"``."""
    if code >= 0:
        return f"status {code}"
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = "?"
    return f"signal {-code} ({name})"


def _kill_tree(pid: int) -> None:
    """SIGKILL ``pid`` and every process under it (a Celery engine's pool processes)."""
    import psutil

    try:
        family = psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        family = []
    for victim in (pid, *(p.pid for p in family)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)


def _wait(child: int, watch: EngineWatch | None, stopping: Callable[[], bool]) -> tuple[int, bool]:
    """Wait for ``child`` to end, killing it if ``watch`` finds it hung; returns its exit
    code (``-signal`` for a signal) and whether it was killed as hung."""
    hung = False
    hung_since: float | None = None
    while True:
        try:
            pid, status = os.waitpid(child, os.WNOHANG)
        except InterruptedError:
            continue
        if pid:
            return os.waitstatus_to_exitcode(status), hung
        if watch is not None and not hung and not stopping():
            why = watch.hung()
            now = time.monotonic()
            if why is None:
                hung_since = None
            elif hung_since is None:
                hung_since = now
            elif now - hung_since >= CONFIRM_S:
                hung = True
                lifecycle.error("codedfarm worker: %s: killing the worker process (pid %d) and "
                                "its children", why["reason"], child)  # fmt: skip
                _kill_tree(child)
        time.sleep(POLL_S)


def supervise(
    target: Callable[[], None],
    *,
    max_restarts: int = 1000,
    delay: float = RESTART_DELAY_S,
    max_delay: float = MAX_RESTART_DELAY_S,
    watch: EngineWatch | None = None,
) -> int:
    """Run ``target`` in a child process, restarting it after every stop that was not
    requested (with backoff), and, with a ``watch``, after its loop stopped turning (see
    :mod:`codedfarm.worker.liveness`). Returns the exit status of the last child: 0 after a
    requested shutdown, else the status (128 + the signal for a child killed by one)."""
    stopping = False
    child = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if watch is not None:
            watch.judging = False
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, forward)
    restarts = 0
    wait = delay
    while True:
        started = time.monotonic()
        if watch is not None:
            watch.starting()
        child = os.fork()
        if child == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            _run_child(target)
        if watch is not None:
            watch.progress.set_pid(child)
        code, hung = _wait(child, watch, lambda: stopping)
        if watch is not None:
            watch.starting()  # nothing to judge until the next engine turns
        if stopping or (code == 0 and not hung):
            return 0
        if restarts >= max_restarts:
            return code if code > 0 else 128 - code
        if time.monotonic() - started >= HEALTHY_RUN_S:
            wait = delay
        restarts += 1
        what = "hung" if hung else f"stopped unasked ({describe_status(code)})"
        if watch is not None:
            watch.restarted("hung" if hung else "exited")
        lifecycle.warning("codedfarm worker: the worker process %s; restarting in %g s "
                          "(restart %d)", what, wait, restarts)  # fmt: skip
        time.sleep(wait)
        wait = min(wait * 2, max_delay)
