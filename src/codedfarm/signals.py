"""Stopping a long-running process on a signal, safely.

``signal.signal(SIGTERM, lambda *_: stop.set())`` can hang a process for good: a
:class:`threading.Event`'s ``set`` takes a lock that is not reentrant, and a second signal
that arrives while the handler holds it (a supervisor forwards the SIGTERM that its process
group just received: two signals a few microseconds apart) runs the handler again, inside
the first, which waits on that lock forever. Measured: the batch engine's warm-shutdown test
hung once in a few runs. :func:`stop_on_signals` ignores further stop signals before it sets
the event (SIGQUIT, a cold stop, is left alone).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Sequence

__all__ = ["STOP_SIGNALS", "stop_on_signals"]

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(stop: threading.Event, signals: Sequence[int] = STOP_SIGNALS) -> None:
    """Set ``stop`` on the first of ``signals`` (main thread only); the rest are ignored
    from then on, so the handler never runs inside itself."""

    def handler(_signum: int, _frame: object) -> None:
        for sig in signals:  # first: a signal landing now finds no handler to re-enter
            signal.signal(sig, signal.SIG_IGN)
        stop.set()

    for sig in signals:
        signal.signal(sig, handler)
