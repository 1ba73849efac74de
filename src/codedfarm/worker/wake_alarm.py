"""End a blocking Redis pop at a precise time.

Redis checks the timeouts of blocking commands on its server cron, every 100 ms at the
default ``hz 10``: a BRPOP asked to wait 50 ms returns after 50 to 150 ms. The batch
engine waits for injected straggler delays while it blocks on its queues, so it needs
better: a :class:`WakeAlarm` thread pushes to a private wake list, which the BRPOP also
watches, at the moment the wait should end.
"""

from __future__ import annotations

import threading
import time

import redis

__all__ = ["WakeAlarm"]


class WakeAlarm:
    """A thread that pushes to list ``key`` when the armed time comes (monotonic seconds)."""

    def __init__(self, client: redis.Redis, key: str, ttl: int = 60) -> None:
        self.key = key
        self.key_bytes = key.encode()
        self._client = client
        self._ttl = ttl
        self._cond = threading.Condition()
        self._at: float | None = None
        self._thread = threading.Thread(target=self._run, name="wake-alarm", daemon=True)
        self._thread.start()

    def arm(self, at: float) -> None:
        with self._cond:
            self._at = at
            self._cond.notify()

    def disarm(self) -> None:
        with self._cond:
            self._at = None

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._at is None:
                    self._cond.wait()
                left = self._at - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue  # re-read: disarmed, re-armed or due
                self._at = None
            try:
                with self._client.pipeline(transaction=False) as pipe:
                    pipe.lpush(self.key, b"1")
                    pipe.expire(self.key, self._ttl)
                    pipe.execute()
            except redis.RedisError:
                pass  # the BRPOP times out by itself, a little late
