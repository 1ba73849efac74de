"""`codedfarm serve` as the README runs it: no codec, redundancy or straggler flags, one
worker. Every group size the server can form is answered, exactly (a systematic code
answers rows from their own results), and the rows metric says so; with a straggler in
every group, each request is answered without waiting for it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.models.digits import load_digits_split
from codedfarm.models.registry import load_model
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

pytestmark = pytest.mark.slow  # a live farm behind `codedfarm serve`

httpclient = pytest.importorskip("tritonclient.http")


def start_server(farm: LocalFarm, *flags: str, queue: str = "dflt") -> tuple[
    str, subprocess.Popen[bytes]
]:  # fmt: skip
    port = free_port()
    with open(farm.log_dir / f"serve-{port}.log", "wb") as log:  # the child keeps its copy
        server = subprocess.Popen([sys.executable, "-m", "codedfarm", "serve", "--port",
                                   str(port), "-Q", queue, *flags], env=farm.env(),
                                  stdout=log, stderr=subprocess.STDOUT)  # fmt: skip
    url = f"127.0.0.1:{port}"
    end = time.monotonic() + 60
    while time.monotonic() < end:
        try:
            urllib.request.urlopen(f"http://{url}/v2/health/ready", timeout=1).close()
            return url, server
        except OSError:
            assert server.poll() is None, (farm.log_dir / f"serve-{port}.log").read_text()
            time.sleep(0.1)
    raise AssertionError("the server never became ready")


@pytest.fixture(scope="module")
def farm(model_cache) -> Iterator[LocalFarm]:
    base = Settings(key_prefix="dflt", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    with LocalFarm([WorkerOptions(queues=("dflt",), preload=("lenet5",))], settings=base) as f:
        yield f


def infer(url: str, x: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(url)
    tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=True)
    return client.infer("lenet5", [tensor]).as_numpy("output__0")


def rows_metric(url: str) -> dict[str, float]:
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as response:
        text = response.read().decode()
    found = {"own": 0.0, "decoded": 0.0}
    for line in text.splitlines():
        if line.startswith("codedfarm_server_rows_total{"):
            path = line.split('path="', 1)[1].split('"', 1)[0]
            found[path] += float(line.rsplit(" ", 1)[1])
    return found


def own_outputs(model_cache, x: np.ndarray) -> np.ndarray:
    model = load_model("lenet5", model_cache)
    with torch.inference_mode():  # row by row, as the workers' tasks compute them
        return np.concatenate([model(torch.from_numpy(x[i : i + 1])).numpy()
                               for i in range(len(x))])  # fmt: skip


def test_the_defaults_answer_every_group_size_with_the_models_own_outputs(farm, model_cache):
    url, server = start_server(farm)
    try:
        x = load_digits_split().test_x[:27]
        start = 0
        for size in (1, 2, 3, 8, 11):  # 1, 2, 3, K and K + 3 rows (one request each)
            got = infer(url, x[start : start + size])
            want = own_outputs(model_cache, x[start : start + size])
            assert got.shape == want.shape
            assert np.max(np.abs(got - want)) <= 1e-4, size
            start += size
        counts = rows_metric(url)
        assert counts == {"own": 25.0, "decoded": 0.0}
    finally:
        server.terminate()
        server.wait(30)


def test_a_straggler_in_every_group_is_not_waited_for(farm, model_cache):
    """8 concurrent single-row requests; one task of every group sleeps 3 s. Rows whose own
    task is in answer at once, the straggler's row is decoded from the parity."""
    url, server = start_server(farm, "--straggle", "fixed:S=1,delay=3", "--straggle-seed", "7")
    try:
        x = load_digits_split().test_x[:8]
        answers: dict[int, tuple[np.ndarray, float]] = {}

        def one(i: int) -> None:
            begin = time.monotonic()
            answers[i] = (infer(url, x[i : i + 1]), time.monotonic() - begin)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert len(answers) == 8
        assert max(seconds for _, seconds in answers.values()) < 2.0  # not the 3 s straggler
        want = own_outputs(model_cache, x)
        agree = sum(int(y.argmax() == want[i].argmax()) for i, (y, _) in answers.items())
        counts = rows_metric(url)
        assert counts["own"] + counts["decoded"] == 8 and counts["own"] >= 1
        assert agree >= 8 - counts["decoded"]  # every row answered from its own result agrees
    finally:
        server.terminate()
        server.wait(30)
