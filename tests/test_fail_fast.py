"""Fail fast instead of silent timeouts: a batch nobody would serve is refused at once (exit
status 3), unless the caller chooses to wait for workers."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from codedfarm import BatchSpec, CollectorUnavailableError, FarmClient, NoWorkerError
from codedfarm.cli import cli
from codedfarm.heartbeat import LIVENESS_S, Heartbeat, live_counts
from codedfarm.local import LocalFarm
from codedfarm.models.digits import load_digits_split
from codedfarm.protocol import Keys
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

pytestmark = pytest.mark.slow  # a live farm


@pytest.fixture(scope="module")
def small_farm(model_cache):
    base = Settings(key_prefix="ff", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    options = WorkerOptions(queues=("ff0",), engine="batch", concurrency=16, preload=("lenet5",))
    with LocalFarm([options], settings=base) as farm:
        yield farm


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits_split().test_x[:4]


def test_a_queue_without_a_live_worker_is_refused_at_once(small_farm, digits):
    with FarmClient(small_farm.settings) as client:
        start = time.monotonic()
        with pytest.raises(NoWorkerError, match="no live worker serves queue 'nobody'"):
            client.submit(digits, BatchSpec(model="lenet5", queues=("ff0", "nobody")))
        assert time.monotonic() - start < 1.0
        store = redis.Redis.from_url(small_farm.settings.redis_url)
        assert store.llen("nobody") == 0 and store.llen("ff0") == 0  # nothing was sent
        result = client.submit(digits, BatchSpec(model="lenet5", codec="berrut", n=8, s=1,
                                                 queues=("ff0",)))  # fmt: skip
        assert result.outcome == "decoded"
        client._collector.flush_cleanup()  # the housekeeping of the next poll
        # the in-process collector answers in memory: no reply key, and the batch's keys go
        assert list(store.scan_iter(match=f"ff:b:{result.record.batch}:*")) == []


def test_an_unknown_collector_is_refused_at_once(small_farm, digits):
    with FarmClient(small_farm.settings, collector="nosuch") as client:
        start = time.monotonic()
        with pytest.raises(CollectorUnavailableError, match="no live collector service named"):
            client.submit(digits, BatchSpec(model="lenet5", queues=("ff0",)))
        assert time.monotonic() - start < 1.0


def test_the_cli_exits_3_with_one_line(small_farm, digits, tmp_path):
    batch = tmp_path / "x.npy"
    np.save(batch, digits)
    base = ["--redis-url", small_farm.settings.redis_url, "submit", str(batch), "-m", "lenet5"]
    env = {"CODEDFARM_KEY_PREFIX": "ff"}
    cases = [
        (["-Q", "nobody"], "no live worker serves queue 'nobody'"),
        (["-Q", "ff0", "--collector", "nosuch"], "no live collector"),
    ]
    for args, message in cases:
        result = CliRunner().invoke(cli, [*base, *args], env=env)
        assert result.exit_code == 3, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_told_to_wait_the_batch_waits_for_a_worker(small_farm, digits):
    spec = BatchSpec(model="lenet5", codec="berrut", n=8, s=1, queues=("late",), deadline=20.0)
    results = []
    with FarmClient(small_farm.settings, wait_for_workers=True) as client:
        thread = threading.Thread(target=lambda: results.append(client.submit(digits, spec)))
        thread.start()
        time.sleep(0.5)
        worker = small_farm.add_worker(
            WorkerOptions(queues=("late",), engine="batch", concurrency=8, preload=("lenet5",))
        )
        thread.join(30)
    assert results[0].outcome == "decoded", results[0].record.error
    worker.stop()


def test_a_clean_stop_leaves_the_live_set_and_beats_expire(small_farm):
    client = redis.Redis.from_url(small_farm.settings.redis_url)
    keys = Keys("ff")
    worker = small_farm.add_worker(WorkerOptions(queues=("solo",), engine="batch",
                                                 concurrency=2))  # fmt: skip
    assert live_counts(client, [keys.live_workers("solo")]) == [1]
    worker.signal_group(15)  # SIGTERM: a requested, warm shutdown
    worker.process.wait(20)
    assert live_counts(client, [keys.live_workers("solo")]) == [0]
    beat = Heartbeat(lambda: client, [keys.live_workers("ghost")], "ghost@test")
    beat.beat()  # one beat, then silence: as a SIGKILLed worker
    client.zadd(keys.live_workers("ghost"), {"ghost@test": time.time() - LIVENESS_S - 1})
    assert live_counts(client, [keys.live_workers("ghost")]) == [0]
