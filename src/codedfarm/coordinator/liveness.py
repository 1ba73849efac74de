"""Refuse at once what would only time out: a batch for queues no live worker serves, or for
a collector service that is not running (from the heartbeats in :mod:`codedfarm.heartbeat`)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis

from codedfarm.errors import CollectorUnavailableError, NoWorkerError, RedisUnavailableError
from codedfarm.heartbeat import LIVENESS_S, live_counts
from codedfarm.protocol import Keys, queue_keys

__all__ = ["FarmCheck", "queue_depths"]

CHECK_CACHE_S = 1.0
"""A positive answer is trusted this long (a high-rate client checks once a second)."""


class FarmCheck:
    """Checks that the queues and the collector of a batch are served by live processes."""

    def __init__(self, client: redis.Redis, keys: Keys) -> None:
        self.redis = client
        self.keys = keys
        self._good_until: dict[tuple[tuple[str, ...], str], float] = {}

    def restarted_within(self, seconds: float, queues: Sequence[str]) -> bool:
        """True if Redis started less than ``seconds`` ago and holds no heartbeat of any of
        ``queues``: it lost them in a restart, and workers need a moment to announce
        themselves again (a queue nobody serves next to served ones is refused at once)."""
        try:
            uptime = float(self.redis.info("server").get("uptime_in_seconds", seconds))
            known = self.redis.exists(*(self.keys.live_workers(q) for q in queues))
        except redis.RedisError:
            return True
        return uptime < seconds and not known

    def require(self, queues: Sequence[str], collector: str = "") -> None:
        """Raise :class:`NoWorkerError` or :class:`CollectorUnavailableError` (exit code 3)
        unless every queue has a live worker and ``collector`` (if named) is live."""
        key = (tuple(queues), collector)
        now = time.monotonic()
        if self._good_until.get(key, 0.0) > now:
            return
        sets = [self.keys.live_workers(q) for q in queues]
        try:
            counts = live_counts(self.redis, sets)
            known = self.redis.zscore(self.keys.live_collectors(), collector) if collector else 0
        except redis.RedisError as exc:
            raise RedisUnavailableError(f"cannot check the farm's workers: {exc}") from exc
        idle = [q for q, n in zip(queues, counts, strict=True) if n == 0]
        if idle:
            names = ", ".join(repr(q) for q in idle)
            raise NoWorkerError(
                f"no live worker serves queue {names} (none has sent a heartbeat in the last "
                f"{LIVENESS_S:g} s): start one with `codedfarm worker -Q {idle[0]}`, or submit "
                "with --wait-for-workers to queue the batch until one comes"
            )
        if collector and (known is None or time.time() - float(known) > LIVENESS_S):
            raise CollectorUnavailableError(
                f"no live collector service named {collector!r}: start one with "
                f"`codedfarm collector --name {collector}`, or submit without --collector"
            )
        self._good_until[key] = now + CHECK_CACHE_S


def queue_depths(client: redis.Redis, queues: Sequence[str] | set[str]) -> dict[str, int]:
    """Tasks waiting in each worker queue (the Redis lists of its priorities: named after
    it, and kombu's priority lists, where redundant tasks wait), one round trip."""
    names = sorted(queues)
    with client.pipeline(transaction=False) as pipe:
        for queue in names:
            for key in queue_keys([queue]):
                pipe.llen(key)
        depths = [int(d) for d in pipe.execute()]
    per = len(queue_keys(["q"]))
    return {q: sum(depths[i * per : (i + 1) * per]) for i, q in enumerate(names)}
