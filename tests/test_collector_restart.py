"""Killing the collector service loses no batch: a restarted one finishes the open batches
(their registrations stay in Redis until the reply is written) and every caller gets its
answer, not a timeout."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis

from codedfarm import BatchSpec, FarmClient
from codedfarm.local import LocalFarm
from codedfarm.models.digits import load_digits_split
from codedfarm.protocol import Keys
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

pytestmark = pytest.mark.slow  # a live farm and collector services


def test_a_killed_collector_loses_no_open_batch(model_cache):
    base = Settings(key_prefix="cr", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    options = WorkerOptions(queues=("cr",), engine="batch", concurrency=48, preload=("lenet5",))
    digits = load_digits_split().test_x[:8]
    spec = BatchSpec(
        model="lenet5",
        codec="berrut",
        n=24,
        s=4,
        queues=("cr",),
        deadline=8.0,
        straggle="fixed:S=24,delay=1.2",
    )  # every task answers after 1.2 s
    with LocalFarm([options], settings=base) as farm:
        collector = farm.start_collector("svc")
        client = redis.Redis.from_url(farm.settings.redis_url)
        for _round in range(3):
            results: list[object] = []

            def run(results: list[object] = results) -> None:
                with FarmClient(farm.settings, collector="svc") as farm_client:
                    results.append(farm_client.submit(digits, spec))

            threads = [threading.Thread(target=run) for _ in range(3)]
            for thread in threads:
                thread.start()
            time.sleep(0.6)  # registered, results not in yet
            assert client.hlen(Keys("cr").open_batches("svc")) == 3
            collector.kill()  # SIGKILL: its memory of the open batches is gone
            collector.wait(10)
            collector = farm.start_collector("svc")
            for thread in threads:
                thread.join(30)
            outcomes = [r.outcome for r in results]  # type: ignore[attr-defined]
            assert outcomes == ["decoded"] * 3, [r.record.error for r in results]  # type: ignore[attr-defined]
            for result in results:
                assert np.isfinite(result.predictions).all()  # type: ignore[attr-defined]
        assert client.hlen(Keys("cr").open_batches("svc")) == 0  # ended with their replies
