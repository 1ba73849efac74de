"""Stop signals set a stop event once and never re-enter the handler (a second SIGTERM
inside ``Event.set`` waited on the event's lock forever: the batch engine's warm-shutdown
test hung once in a few runs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from codedfarm.signals import stop_on_signals


def test_the_first_stop_signal_sets_the_event_and_ignores_the_rest():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = threading.Event()
        stop_on_signals(stop)
        handler = signal.getsignal(signal.SIGTERM)
        assert callable(handler) and signal.getsignal(signal.SIGINT) is handler
        handler(signal.SIGTERM, None)
        assert stop.is_set()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        os.kill(os.getpid(), signal.SIGTERM)  # ignored: this process lives on
        time.sleep(0.05)
    finally:
        for sig, old in before.items():
            signal.signal(sig, old)


def test_a_process_sent_two_sigterms_at_once_stops_every_time():
    """A process that waits on its stop event, sent SIGTERM twice back to back (as a process
    group and its supervisor's forward do), 30 times: it exits each time."""
    code = (
        "import sys, threading, time\n"
        "from codedfarm.signals import stop_on_signals\n"
        "stop = threading.Event(); stop_on_signals(stop)\n"
        "print('ready', flush=True)\n"
        "while not stop.is_set(): stop.wait(0.01)\n"
    )
    for _ in range(30):
        with subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              text=True) as proc:  # fmt: skip
            assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
            proc.send_signal(signal.SIGTERM)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(10) == 0
