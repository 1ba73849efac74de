"""End to end on a real Redis and real `codedfarm worker` processes."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import redis
import torch

from codedfarm.codecs import make_codec
from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec
from codedfarm.errors import InputWarning
from codedfarm.local import LocalFarm
from codedfarm.models.digits import load_digits_split
from codedfarm.models.registry import load_model
from codedfarm.worker import WorkerOptions

pytestmark = pytest.mark.slow  # the session's live farm

QUEUES = ("gpu0", "gpu1")
STRAGGLE = "fixed:S=4,delay=3"


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits_split().test_x[:8]


def model_outputs(name: str, cache, x: np.ndarray) -> np.ndarray:
    model = load_model(name, cache)
    with torch.inference_mode():
        return model(torch.from_numpy(np.asarray(x, np.float32))).numpy()


def submit(farm: LocalFarm, x: np.ndarray, **spec: object):
    with FarmClient(farm.settings) as client:
        start = time.perf_counter()
        result = client.submit(x, BatchSpec(queues=QUEUES, **spec))  # type: ignore[arg-type]
        return result, time.perf_counter() - start


def test_coded_batch_returns_well_before_the_stragglers(farm, digits):
    result, _ = submit(
        farm, digits, model="lenet5", codec="spline", n=24, s=4, straggle=STRAGGLE, seed=1
    )
    record = result.record
    # decoded at its wait policy from N−S = 20 results, none of them from the 4 tasks that
    # sleep 3 s: the answer did not wait for a straggler (events, not a stopwatch)
    assert result.outcome == "decoded", record
    slowed = {d["index"] for d in record.slowed}
    assert len(slowed) == 4 and not slowed & set(record.workers_used)
    assert len(record.workers_used) >= 20 and record.timings.injected_delay == 0.0
    # the farm's answer is exactly the codec applied to the model's outputs on the coded inputs
    codec = make_codec("spline", 8, 24)
    coded_outputs = model_outputs("lenet5", farm.settings.cache_dir, codec.encode(digits))
    workers = record.workers_used
    expected = codec.decode(coded_outputs[workers], workers)
    np.testing.assert_allclose(result.predictions, expected, rtol=1e-4, atol=1e-4)
    # and it is close to direct inference (the approximation error of the code)
    direct = model_outputs("lenet5", farm.settings.cache_dir, digits)
    mse = float(np.mean((result.predictions - direct) ** 2))
    assert mse < 0.2 * float(np.mean(direct**2)), mse


def test_mds_on_a_linear_model_is_exact_despite_stragglers(farm, digits):
    result, _ = submit(
        farm, digits, model="linear", codec="mds", n=24, s=4, straggle=STRAGGLE, seed=2
    )
    assert result.outcome == "decoded"
    slowed = {d["index"] for d in result.record.slowed}
    assert len(slowed) == 4 and not slowed & set(result.record.workers_used)  # not waited for
    direct = model_outputs("linear", farm.settings.cache_dir, digits)
    np.testing.assert_allclose(result.predictions, direct, rtol=1e-4, atol=1e-4)


def test_uncoded_batch_takes_the_full_delay(farm, digits):
    result, _ = submit(farm, digits, model="lenet5", codec="uncoded", straggle=STRAGGLE)
    record = result.record
    assert result.outcome == "decoded"
    # every task is needed, the 4 slowed ones too: the result that completed the batch is a
    # straggler's, with its 3 s injected delay on the critical path
    slowed = {d["index"] for d in record.slowed}
    assert len(slowed) == 4 and slowed <= set(record.workers_used)
    assert record.timings.injected_delay == 3.0, record.timings
    direct = model_outputs("lenet5", farm.settings.cache_dir, digits)
    np.testing.assert_allclose(result.predictions, direct, rtol=1e-4, atol=1e-4)


def test_sigkilled_worker_mid_batch_still_decodes_and_nothing_hangs(farm, digits):
    victim = farm.add_worker(
        WorkerOptions(queues=("victim",), concurrency=8, straggle="exp:shift=1.5,rate=100")
    )
    results = []

    def run() -> None:
        with FarmClient(farm.settings) as client:
            spec = BatchSpec(model="lenet5", codec="berrut", n=24, s=8, deadline=10.0,
                             queues=("gpu0", "gpu1", "victim"))  # fmt: skip
            start = time.perf_counter()
            results.append((client.submit(digits, spec), time.perf_counter() - start))

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.6)  # the victim's 8 tasks are sleeping inside the task
    victim.kill()
    thread.join(15)
    assert not thread.is_alive()
    result, _ = results[0]
    # decoded at its wait policy (not at the 10 s deadline), from none of the victim's tasks
    assert result.outcome == "decoded", result.record
    assert all(w % 3 != 2 for w in result.record.workers_used)  # none from the victim
    assert len(result.record.workers_used) == 16


def test_deadline_decode_and_timeout(farm, digits):
    slow = "fixed:S=20,delay=2.5"
    result, elapsed = submit(
        farm, digits, model="lenet5", codec="spline", n=24, s=4, straggle=slow, deadline=1.0
    )
    # the deadline fired (its outcome) with only the 4 unslowed results in; only a clock can
    # say it did not fire early, and that bound is one-sided: load only makes it later
    assert result.outcome == "deadline_decoded", result.record
    assert elapsed >= 1.0, elapsed
    slowed = {d["index"] for d in result.record.slowed}
    assert len(result.record.workers_used) == 4 and not slowed & set(result.record.workers_used)
    assert result.predictions.shape == (8, 10)
    time.sleep(2.0)  # the 20 sleeping tasks hold their slots until then
    with pytest.warns(InputWarning, match="model lenet5 is not declared a polynomial"):
        result, elapsed = submit(
            farm, digits, model="lenet5", codec="mds", n=24, s=4, straggle=slow, deadline=1.0
        )
    assert result.outcome == "timeout" and result.predictions is None
    assert elapsed >= 1.0, elapsed  # not before the deadline (one-sided, as above)
    assert result.record.results_received == 4  # fewer than k = 8 arrived by the deadline
    time.sleep(2.0)  # let the sleeping tasks finish before other tests use the slots


def test_every_farm_key_has_a_ttl(farm):
    client = redis.Redis.from_url(farm.settings.redis_url)
    keys = list(client.scan_iter(f"{farm.settings.key_prefix}:*"))
    for key in keys:
        assert client.ttl(key) > 0, key
    # queue lists written by the dispatcher expire too
    for queue in (*QUEUES, "victim"):
        assert client.ttl(queue) != -1
