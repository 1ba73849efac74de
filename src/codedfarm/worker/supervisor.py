"""Keep a worker running: restart it whenever it stops without being asked to.

Celery stops a worker on any "Unrecoverable error" inside its consumer (a kombu failure, a
lost connection it could not handle), and either engine can be killed (SIGKILL, the OOM
killer). The ``codedfarm worker`` process therefore runs the engine in a child process and
starts a fresh one after every stop that was not requested: a non-zero exit status or a
signal. It waits 1 s before the first restart, doubling to at most 30 s while the child
keeps dying young, and starts over at 1 s once a child has run for 10 s. Signals sent to
the supervisor (SIGTERM, SIGINT, SIGQUIT) go to the child, and then the supervisor exits
with it; a child that exits with status 0 (Celery's remote ``shutdown``) ends it too.

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

__all__ = ["supervise"]

log = logging.getLogger(__name__)

RESTART_DELAY_S = 1.0
MAX_RESTART_DELAY_S = 30.0
HEALTHY_RUN_S = 10.0  # a child that ran this long was not crash-looping: the backoff resets


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


def supervise(
    target: Callable[[], None],
    *,
    max_restarts: int = 1000,
    delay: float = RESTART_DELAY_S,
    max_delay: float = MAX_RESTART_DELAY_S,
) -> int:
    """Run ``target`` in a child process, restarting it after every stop that was not
    requested (with backoff). Returns the exit status of the last child: 0 after a requested
    shutdown, else the status (128 + the signal for a child killed by one)."""
    stopping = False
    child = 0

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signum)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, forward)
    restarts = 0
    wait = delay
    while True:
        started = time.monotonic()
        child = os.fork()
        if child == 0:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT):
                signal.signal(sig, signal.SIG_DFL)
            _run_child(target)
        while True:
            try:
                _, status = os.waitpid(child, 0)
                break
            except InterruptedError:
                continue
        code = os.waitstatus_to_exitcode(status)
        if stopping or code == 0:
            return 0
        if restarts >= max_restarts:
            return code if code > 0 else 128 - code
        if time.monotonic() - started >= HEALTHY_RUN_S:
            wait = delay
        restarts += 1
        print(
            f"codedfarm worker: the worker process stopped unasked ({describe_status(code)}); "
            f"restarting in {wait:g} s (restart {restarts})",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(wait)
        wait = min(wait * 2, max_delay)
