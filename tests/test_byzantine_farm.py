"""A live farm with one corrupting worker: byzantine decodes keep an honest farm's
fidelity, and the rejections show in the record and in the collector's metric."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from codedfarm.codecs import make_codec
from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec
from codedfarm.local.redis_server import free_port
from codedfarm.models.digits import load_digits_split
from codedfarm.models.registry import load_model
from codedfarm.worker import WorkerOptions
from live_processes import get, start_collector

# eleven queue slots, one of them the liar's: tasks j = 10 and 21 of 24 go to it
pytestmark = pytest.mark.slow  # the session's live farm

QUEUES = ("gpu0", "gpu1") * 5 + ("liar",)


def test_one_corrupting_worker_is_outvoted_and_counted(farm, tmp_path):
    farm.add_worker(WorkerOptions(queues=("liar",), corrupt="large:p=1", preload=("lenet5",)))
    x = load_digits_split().test_x[:8]
    port = free_port()
    with open(tmp_path / "collector.log", "wb") as log:
        collector = start_collector(farm, "byz", port, log)
        try:
            _wait_ready(port)
            with FarmClient(farm.settings, collector="byz") as client:
                spec = BatchSpec(model="lenet5", codec="berrut:byzantine=2", n=24, s=0,
                                 queues=QUEUES)  # fmt: skip
                result = client.submit(x, spec)
                plain = client.submit(x, BatchSpec(model="lenet5", codec="berrut", n=24, s=0,
                                                   queues=QUEUES))  # fmt: skip
            record = result.record
            assert result.outcome == "decoded"
            assert sorted(d["index"] for d in record.rejected) == [10, 21]
            liar = {d["worker"] for d in record.rejected}
            assert len(liar) == 1 and "" not in liar
            assert not {10, 21} & set(record.workers_used) and len(record.workers_used) == 22
            # the fidelity of an honest farm that lost two results: exactly its decode
            module = load_model("lenet5", farm.settings.cache_dir)
            codec = make_codec("berrut", 8, 24)
            with torch.inference_mode():
                honest = module(torch.from_numpy(codec.encode(x).astype(np.float32))).numpy()
                direct = module(torch.from_numpy(x)).numpy()
            used = record.workers_used
            expected = codec.decode(honest[used], used)
            np.testing.assert_allclose(result.predictions, expected, rtol=1e-4, atol=1e-4)
            honest_mse = np.mean((expected - direct) ** 2)
            # without byzantine the liar's garbage goes into the answer
            assert plain.record.rejected == []
            assert np.mean((plain.predictions - direct) ** 2) > 100 * honest_mse
            (name,) = liar
            line = (f'codedfarm_results_rejected_total{{codec="berrut",model="lenet5",'
                    f'worker="{name}"}} 2.0')  # fmt: skip
            for _ in range(50):
                if line in get(port, "/metrics")[1]:
                    break
                time.sleep(0.2)
            assert line in get(port, "/metrics")[1]
        finally:
            collector.terminate()
            collector.wait(10)


def _wait_ready(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if get(port, "/readyz")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"collector on port {port} not ready after {timeout:g} s")


@pytest.fixture(autouse=True)
def _no_leftover_liar(farm):
    yield
    for worker in list(farm.workers):
        if worker.options.corrupt != "none":
            worker.kill()
            farm.workers.remove(worker)
