"""Who is alive: workers per queue and collector services announce themselves in Redis.

Each live process keeps its name in a sorted set scored by the time of its last beat
(``P:live:queue:Q`` for the workers of queue Q, ``P:live:collectors`` for collector
services), refreshed every ``BEAT_S`` seconds; a member older than ``LIVENESS_S`` is gone.
Clients read the sets before they write a batch, so a batch for a queue nobody serves, or
for a collector that does not run, is refused at once instead of timing out. A beat is a
thread; given a ``healthy`` check it beats only while the process's real work goes on (a
worker's engine loop still turns), so a stuck process drops out of the sets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

import redis

__all__ = ["BEAT_S", "LIVENESS_S", "Heartbeat", "live_counts"]

log = logging.getLogger(__name__)

BEAT_S = 0.5
"""Seconds between beats."""
LIVENESS_S = 10.0
"""A member whose last beat is older than this is not alive."""


class Heartbeat:
    """A daemon thread that keeps ``member`` in the sorted sets ``keys`` (``start``/``stop``)."""

    def __init__(
        self,
        client: Callable[[], redis.Redis],
        keys: Sequence[str],
        member: str,
        *,
        interval: float = BEAT_S,
        expire: Sequence[str] = (),
        expire_s: int = 0,
        healthy: Callable[[], bool] | None = None,
    ) -> None:
        self._client = client
        self.keys = list(keys)
        self.member = member
        self.interval = interval
        self.expire = list(expire)  # other keys whose TTL each beat renews to ``expire_s``
        self.expire_s = expire_s
        self.healthy = healthy  # False: skip the beat (the process's real work is stuck)
        self._skipping = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="heartbeat", daemon=True)

    def start(self) -> Heartbeat:
        self.beat()
        self._thread.start()
        return self

    def beat(self) -> None:
        """One beat now (errors are logged: Redis may be restarting)."""
        now = time.time()
        try:
            with self._client().pipeline(transaction=False) as pipe:
                for key in self.keys:
                    pipe.zadd(key, {self.member: now})
                    pipe.zremrangebyscore(key, "-inf", now - 6 * LIVENESS_S)  # the long gone
                    pipe.expire(key, int(6 * LIVENESS_S))
                for key in self.expire:
                    pipe.expire(key, self.expire_s)
                pipe.execute()
        except redis.RedisError as exc:
            log.warning("heartbeat failed (%s); retrying", exc)

    def stop(self) -> None:
        """Stop beating and leave the sets (a clean shutdown is not a death)."""
        self._stop.set()
        try:
            with self._client().pipeline(transaction=False) as pipe:
                for key in self.keys:
                    pipe.zrem(key, self.member)
                pipe.execute()
        except redis.RedisError:
            pass

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            if self.healthy is not None and not self.healthy():
                if not self._skipping:
                    log.warning("%s: not beating while its work is stuck", self.member)
                self._skipping = True
                continue
            self._skipping = False
            self.beat()


def live_counts(client: redis.Redis, keys: Sequence[str]) -> list[int]:
    """How many members of each sorted set beat within ``LIVENESS_S``, in one round trip."""
    since = time.time() - LIVENESS_S
    with client.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.zcount(key, since, "+inf")
        return [int(n) for n in pipe.execute()]
