"""Keep a Celery worker running: restart it when it dies of an error.

A worker whose broker connection drops while late-ack tasks are in flight can stop with
"Unrecoverable error" inside kombu (seen with kombu 5.7 when Redis restarts: restoring the
unacked messages on a closed connection fails). The ``codedfarm worker`` process therefore
runs Celery in a child process and starts a fresh one after such an exit, so the node is
consuming again within seconds. Signals sent to the supervisor (SIGTERM, SIGINT, SIGQUIT)
go to the child, and then the supervisor exits with it.
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


def supervise(target: Callable[[], None], *, max_restarts: int = 1000) -> int:
    """Run ``target`` in a child process, restarting it after an abnormal exit.

    Returns the exit code of the last child (0 after a requested shutdown).
    """
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
    while True:
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
        if stopping or code == 0 or restarts >= max_restarts:
            return 0 if stopping else code
        restarts += 1
        print(
            f"codedfarm worker: Celery exited with {code}; restarting in {RESTART_DELAY_S:g} s "
            f"(restart {restarts})",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(RESTART_DELAY_S)
