"""`codedfarm serve` on a live farm, checked with the standard KServe v2 client
(tritonclient[http]) and raw HTTP for the error cases."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import redis
import torch

from codedfarm.local import LocalFarm
from codedfarm.models.digits import load_digits_split
from codedfarm.models.registry import load_model
from codedfarm.protocol import BatchRecord, Keys
from codedfarm.server.oip import infer_request
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

pytestmark = pytest.mark.slow  # a live farm behind `codedfarm serve`

httpclient = pytest.importorskip("tritonclient.http")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def served(model_cache) -> Iterator[tuple[LocalFarm, str, subprocess.Popen[bytes]]]:
    """A batch-engine worker and `codedfarm serve` coding groups of 4 with MDS (n=6, S=2),
    2 of every 6 tasks straggling 3 s; 16 rows may wait, 2 groups in the farm at once."""
    base = Settings(key_prefix="srv", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    worker = WorkerOptions(queues=("srv",), concurrency=48, preload=("lenet5", "linear"))
    with LocalFarm([worker], settings=base) as farm:
        port = free_port()
        log_path = farm.log_dir / "serve.log"
        with open(log_path, "wb") as log:
            server = subprocess.Popen(
                [sys.executable, "-m", "codedfarm", "serve", "--port", str(port), "-Q", "srv",
                 "--group-size", "4", "--max-queue-delay", "20", "--codec", "mds", "-n", "6",
                 "-s", "2", "--straggle", "fixed:S=2,delay=3", "--max-queue", "16",
                 "--groups-in-flight", "2"],
                env=farm.env(), stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        url = f"127.0.0.1:{port}"
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                urllib.request.urlopen(f"http://{url}/v2/health/live", timeout=1).close()
                break
            except OSError:
                assert server.poll() is None, log_path.read_text()
                time.sleep(0.1)
        try:
            yield farm, url, server
        finally:
            if server.poll() is None:
                server.terminate()
                server.wait(30)


def direct(name: str, cache, x: np.ndarray) -> np.ndarray:
    model = load_model(name, cache)
    with torch.inference_mode():
        return model(torch.from_numpy(x)).numpy()


def relayed(farm: LocalFarm) -> int:
    """How many records the server's farm clients have relayed so far (no collector service
    drains them here): the mark to pass to :func:`groups_since`."""
    store = redis.Redis.from_url(farm.settings.redis_url)
    return int(store.llen(Keys(farm.settings.key_prefix).records()))


def groups_since(farm: LocalFarm, mark: int, rows: int) -> list[BatchRecord]:
    """The records of the coding groups finished after ``mark`` (see :func:`relayed`), once
    they hold ``rows`` rows: each farm client relays its group's record after the answer.
    A group of an earlier test that finished just after the mark may be among them."""
    store = redis.Redis.from_url(farm.settings.redis_url)
    key = Keys(farm.settings.key_prefix).records()

    def records() -> list[BatchRecord]:
        entries = [json.loads(raw) for raw in store.lrange(key, mark, -1)]
        return [BatchRecord.from_dict(e["record"]) for e in entries if "record" in e]

    end = time.monotonic() + 30
    while sum(r.k for r in records()) < rows and time.monotonic() < end:
        time.sleep(0.02)
    return records()


def not_waited_for(record: BatchRecord) -> bool:
    """Decoded at its wait policy from none of its straggling (3 s) tasks."""
    slowed = {d["index"] for d in record.slowed}
    return record.outcome == "decoded" and not slowed & set(record.workers_used)


def infer_body(x: np.ndarray) -> bytes:
    return json.dumps(infer_request(x)).encode()


def post(url: str, path: str, body: bytes, timeout: float = 30) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"http://{url}{path}", data=body, method="POST",
                                     headers={"Content-Type": "application/json"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_kserve_client_sees_a_live_ready_server_and_its_models(served):
    _, url, _ = served
    client = httpclient.InferenceServerClient(url)
    assert client.is_server_live() and client.is_server_ready()
    for probe in ("livez", "readyz"):  # the probes' names, as on workers and collectors
        with urllib.request.urlopen(f"http://{url}/{probe}", timeout=5) as response:
            assert response.status == 200
    assert client.get_server_metadata()["name"] == "codedfarm"
    assert client.is_model_ready("linear")
    meta = client.get_model_metadata("lenet5")
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]
    assert meta["outputs"][0]["shape"] == [-1, 10]


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary-extension"])
def test_kserve_client_inference_is_exact_with_mds_on_the_linear_model(served, model_cache, binary):
    farm, url, _ = served
    x = load_digits_split().test_x[:3]
    client = httpclient.InferenceServerClient(url)
    tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary)
    mark = relayed(farm)
    result = client.infer(
        "linear",
        [tensor],
        request_id="req-1",
        outputs=[httpclient.InferRequestedOutput("output__0", binary_data=binary)],
    )
    # the two 3 s stragglers of its group are not waited for: its record says so
    groups = groups_since(farm, mark, rows=3)
    assert any(g.k == 3 for g in groups), groups
    assert all(len(g.slowed) == 2 and not_waited_for(g) for g in groups), groups
    assert result.get_response()["id"] == "req-1"
    np.testing.assert_allclose(result.as_numpy("output__0"), direct("linear", model_cache, x),
                               rtol=1e-3, atol=1e-3)  # fmt: skip


def test_concurrent_single_image_requests_are_coded_together_and_answered(served, model_cache):
    farm, url, _ = served
    x = load_digits_split().test_x[:12]
    answers: dict[int, np.ndarray] = {}

    def one(i: int) -> None:
        client = httpclient.InferenceServerClient(url)
        tensor = httpclient.InferInput("input__0", [1, 1, 32, 32], "FP32")
        tensor.set_data_from_numpy(x[i : i + 1], binary_data=False)
        answers[i] = client.infer("linear", [tensor]).as_numpy("output__0")

    mark = relayed(farm)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(answers) == 12
    # coded together in groups of up to K = 4, none waiting for its 3 s stragglers
    groups = groups_since(farm, mark, rows=12)
    assert sum(g.k for g in groups) >= 12 and all(g.k <= 4 for g in groups)
    assert all(not_waited_for(g) for g in groups), groups
    expected = direct("linear", model_cache, x)
    for i, y in answers.items():
        np.testing.assert_allclose(y[0], expected[i], rtol=1e-3, atol=1e-3)


def test_an_answered_groups_stragglers_are_cancelled_at_once(served):
    """The group's inputs are deleted right after its answer, though its pooled farm client
    sends nothing more: its 3 s stragglers then give their worker slots back."""
    farm, url, _ = served
    status, _ = post(url, "/v2/models/linear/infer", infer_body(load_digits_split().test_x[:4]))
    assert status == 200
    store = redis.Redis.from_url(farm.settings.redis_url)
    deadline = time.monotonic() + 1.0  # well before the stragglers' 3 s
    while list(store.scan_iter(match="srv:b:*:in")) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(store.scan_iter(match="srv:b:*:in")) == []


@pytest.mark.parametrize(
    ("path", "body", "status", "message"),
    [
        ("/v2/models/linear/infer", b"{not json", 400, "not JSON"),
        ("/v2/models/linear/infer", json.dumps({"inputs": [{"name": "input__0",
         "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]}).encode(), 400,
         "the model takes [B, 1, 32, 32]"),
        ("/v2/models/linear/infer", json.dumps({"inputs": [{"name": "input__0",
         "shape": [1, 1, 32, 32], "datatype": "BYTES", "data": ["a"] * 1024}]}).encode(), 400,
         "datatype BYTES"),
        ("/v2/models/linear/infer", json.dumps({"inputs": [{"name": "input__0",
         "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [0.0] * 1023 + [None]}]}).encode(),
         400, "data"),
        ("/v2/models/nosuch/infer", b"{}", 404, "unknown model 'nosuch'"),
        ("/v2/models/linear/versions/2/infer", b"{}", 404, "no versions"),
    ],
)  # fmt: skip
def test_bad_requests_get_the_protocols_status_and_a_json_error(served, path, body, status,
                                                                  message):  # fmt: skip
    _, url, _ = served
    code, answer = post(url, path, body)
    assert code == status and message in answer["error"], answer


def test_nan_and_oversized_bodies_are_refused(served):
    _, url, _ = served
    nan = (
        '{"inputs": [{"name": "input__0", "shape": [1, 1, 32, 32], "datatype": "FP32", "data": [NaN'
        + ", 0" * 1023
        + "]}]}"
    )
    code, answer = post(url, "/v2/models/linear/infer", nan.encode())
    assert code == 400 and "NaN" in answer["error"]
    # the server answers from the headers, without reading 65 MB it would refuse anyway
    host, port = url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n{"
                     % (65 << 20))  # fmt: skip
        reply = b""
        while b"}" not in reply.partition(b"\r\n\r\n")[2]:
            data = sock.recv(65536)
            if not data:
                break
            reply += data
    head, _, payload = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"over the limit" in payload, reply


def test_a_full_queue_answers_503_at_once_and_the_rest_are_served(served):
    _, url, _ = served
    x = load_digits_split().test_x[:1]
    body = infer_body(x)
    results: list[tuple[int, float, dict[str, Any]]] = []

    def one() -> None:
        start = time.monotonic()
        code, answer = post(url, "/v2/models/linear/infer", body)
        results.append((code, time.monotonic() - start, answer))

    threads = [threading.Thread(target=one) for _ in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    codes = [code for code, _, _ in results]
    assert len(codes) == 60 and set(codes) <= {200, 503} and codes.count(503) > 0, codes
    refused = [(seconds, answer) for code, seconds, answer in results if code == 503]
    assert all("rows are waiting" in answer["error"] for _, answer in refused)
    assert max(seconds for seconds, _ in refused) < 1.0  # refused at once, not queued


def test_metrics_count_requests_by_outcome_and_groups_by_rows(served, model_cache):
    _, url, _ = served
    x = load_digits_split().test_x[:10]
    body = infer_body(x)
    code, answer = post(url, "/v2/models/linear/infer", body)  # 10 rows: 3 groups of K=4
    assert code == 200 and answer["outputs"][0]["shape"] == [10, 10]
    np.testing.assert_allclose(np.reshape(answer["outputs"][0]["data"], (10, 10)),
                               direct("linear", model_cache, x), rtol=1e-3, atol=1e-3)  # fmt: skip
    post(url, "/v2/models/linear/infer", b"[]")
    post(url, "/v2/models/nosuch/infer", b"{}")
    with urllib.request.urlopen(f"http://{url}/metrics", timeout=10) as response:
        text = response.read().decode()

    def value(line_start: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(line_start)]
        assert lines, line_start
        return float(lines[0].rsplit(" ", 1)[1])

    ok = 'codedfarm_server_request_seconds_count{codec="mds",model="linear",outcome="ok"}'
    bad = 'codedfarm_server_request_seconds_count{codec="mds",model="linear",outcome="bad_request"}'
    assert value(ok) >= 1 and value(bad) >= 1
    assert (
        value(
            'codedfarm_server_request_seconds_count{codec="",model="unknown",outcome="not_found"}'
        )
        >= 1
    )
    assert value('codedfarm_server_group_rows_count{model="linear"}') >= 3
    assert value('codedfarm_server_requests_in_flight{model="linear"}') == 0


def test_loadgen_runs_an_open_loop_load_and_reports_what_it_measured(served):
    from click.testing import CliRunner

    from codedfarm.cli import cli
    from codedfarm.local.loadgen import LoadConfig, run_load

    farm, url, _ = served
    mark = relayed(farm)
    report = run_load(LoadConfig(url=f"http://{url}", model="linear", rate=20, seconds=2))
    assert report.sent > 10 and report.ok == report.sent and report.errors == {}
    assert 8 < report.offered_rate < 40  # Poisson arrivals around 20/s
    # every answer is decoded without the injected 3 s stragglers of its group
    groups = groups_since(farm, mark, rows=report.sent)
    assert sum(g.k for g in groups) >= report.sent and all(map(not_waited_for, groups)), groups
    result = CliRunner().invoke(cli, ["loadgen", "--url", f"http://{url}", "-m", "nosuch",
                                      "--rate", "10", "--seconds", "0.5", "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert answer["ok"] == 0 and answer["errors"] == {"404": answer["sent"]}


def test_a_client_that_leaves_mid_body_is_counted_not_logged_as_an_error(served):
    """A body cut off by its client: no traceback in the server's log, a debug line at most,
    and one count on codedfarm_server_client_disconnects_total."""
    farm, url, _ = served
    host, port = url.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"POST /v2/models/linear/infer HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
                     b'{"inputs": [')  # fmt: skip
    pattern = re.compile(r'codedfarm_server_client_disconnects_total\{model="linear"\} (\S+)')
    end = time.monotonic() + 10
    counted = 0.0
    while time.monotonic() < end and not counted:
        with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as response:
            found = pattern.findall(response.read().decode())
        counted = float(found[0]) if found else 0.0
        time.sleep(0.05)
    assert counted == 1.0
    log = (farm.log_dir / "serve.log").read_text()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def test_sigterm_answers_requests_in_flight_then_stops(served, model_cache):
    """Last in this module: it stops the module's server."""
    _, url, server = served
    x = load_digits_split().test_x[:1]
    body = infer_body(x)
    results: list[tuple[int, dict[str, Any]]] = []
    thread = threading.Thread(target=lambda: results.append(post(url, "/v2/models/linear/infer",
                                                                 body)))  # fmt: skip
    thread.start()
    time.sleep(0.01)  # the request waits in its coding queue (20 ms) or in the farm
    server.send_signal(signal.SIGTERM)
    thread.join(30)
    assert results and results[0][0] == 200, results
    expected = direct("linear", model_cache, x)[0]
    got = results[0][1]["outputs"][0]["data"]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-3)
    assert server.wait(30) == 0
