"""The HTTP boundary's one error map: each error class has its status, an internal error is
a 500 with an error id whose traceback is logged once, never a 400."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from codedfarm import errors
from codedfarm.errors import ConfigError
from codedfarm.server.batcher import BatcherConfig
from codedfarm.server.oip import infer_request
from codedfarm.server.status import STATUS_BY_ERROR, answer_error, status_of

# Starlette's TestClient runs the app in-process (lifespan included); it warns that it will
# move from httpx to httpx2, which is not a behaviour of ours
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InputError("bad tensor"), 400),
        (errors.PayloadTooLargeError("too big"), 413),
        (errors.UnknownModelError("no such model"), 404),
        (errors.ModelConfigError("broken config.json"), 404),
        (errors.QueueFullError("full"), 503),
        (errors.NoWorkerError("no worker"), 503),
        (errors.RedisUnavailableError("no redis"), 503),
        (errors.BatchTimeoutError("deadline"), 504),
        (errors.BatchFailedError("workers failed"), 500),
        (errors.ConfigError("s must be < n"), 500),  # the server's settings, not the request
        (errors.CodecParameterError("k"), 500),
        (ValueError("unexpected array size"), 500),  # a library's error is never a 400
        (RuntimeError("a bug"), 500),
    ],
)
def test_every_error_class_has_one_status(error, status):
    assert status_of(error) == status


def test_the_table_lists_subclasses_before_their_bases():
    for i, (cls, _) in enumerate(STATUS_BY_ERROR):
        for later, _ in STATUS_BY_ERROR[i + 1 :]:
            assert not issubclass(later, cls), f"{later.__name__} is shadowed by {cls.__name__}"


def test_an_error_shared_by_a_groups_requests_is_logged_once_under_one_id(caplog):
    error = RuntimeError("one failure, three requests")
    with caplog.at_level(logging.ERROR, logger="codedfarm.serve"):
        answers = [answer_error(error) for _ in range(3)]
    assert {a.status for a in answers} == {500}
    ids = {a.body["error_id"] for a in answers}
    assert len(ids) == 1 and ids.pop() in answers[0].body["error"]
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert "one failure" not in answers[0].body["error"]  # internals stay in the log


def test_a_4xx_answer_carries_the_message_and_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="codedfarm.serve"):
        answer = answer_error(errors.InputError("input 'x': shape [1, 3]"))
    assert (answer.status, answer.body) == (400, {"error": "input 'x': shape [1, 3]"})
    assert caplog.records == []


def _post_one_row(settings, config, caplog):
    from starlette.testclient import TestClient

    from codedfarm.server.app import create_app

    app = create_app(settings, config)
    body = infer_request(np.zeros((1, 1, 32, 32), np.float32))
    with caplog.at_level(logging.DEBUG, logger="codedfarm.serve"), TestClient(app) as client:
        return client.post("/v2/models/linear/infer", json=body)


def test_a_codec_failing_inside_a_served_group_is_a_500_with_an_error_id(
    settings, monkeypatch, caplog
):
    """The group fails before anything is dispatched (its encode raises the kind of error
    numpy raises): the client gets 500 with an error id, the log its traceback once."""
    from codedfarm.codecs.berrut import BerrutCodec
    from codedfarm.server.farm import ServeConfig

    def broken_encode(self, x, *, out=None):
        raise ValueError("unexpected array size")

    monkeypatch.setattr(BerrutCodec, "encode", broken_encode)
    config = ServeConfig(codec="berrut", clients=1, batcher=BatcherConfig(group_size=2))
    response = _post_one_row(settings, config, caplog)
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error_id"] and body["error_id"] in body["error"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert body["error_id"] in tracebacks[0].getMessage()
    assert "unexpected array size" in caplog.text and "broken_encode" in caplog.text


def test_a_stragglers_budget_for_a_full_group_fits_a_lone_row():
    """-s 4 at the default redundancy: a lone row gets its task and one parity (n=2), so
    its group tolerates what its workers allow (1), not a 400 or 500 per request."""
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import ServeConfig, group_settings
    from codedfarm.settings import Settings

    for codec in ("spline", "berrut:systematic=true", "mds", "replication", "uncoded"):
        for rows in range(1, 9):
            got = group_settings(Settings(), ServeConfig(codec=codec, s=4), resolve_model("linear"),
                                 rows)  # fmt: skip
            assert got.s < got.n and got.codec.min_results <= got.wait_for <= got.n


def test_impossible_serve_settings_are_refused_when_configured():
    from codedfarm.server.farm import ServeConfig

    with pytest.raises(ConfigError, match="n must be >= the group size"):
        ServeConfig(n=4)  # a full group of 8 rows cannot have fewer tasks than rows
    with pytest.raises(ConfigError, match="s must be < n"):
        ServeConfig(n=8, s=8)
    with pytest.raises(ConfigError, match="redundancy must be >= 1"):
        ServeConfig(redundancy=0.9)


# ----- every route answers JSON; the extensions /v2 lists (issue 24, point 7) ------------
EXTENSIONS = ["binary_tensor_data", "model_repository", "statistics"]


def _repository(root):
    """affine (versions 1 and 2), empty (no version yet) and broken (config.json not JSON)."""
    import json

    (root / "affine").mkdir(parents=True)
    (root / "affine" / "config.json").write_text(
        json.dumps({"input_shape": [1, 32, 32], "output_shape": [10]})
    )
    for version in ("1", "2"):
        (root / "affine" / version).mkdir()
        (root / "affine" / version / "model.pt").write_bytes(b"not loaded by the server")
    (root / "empty").mkdir()
    (root / "empty" / "config.json").write_text(
        json.dumps({"input_shape": [1, 32, 32], "output_shape": [10]})
    )
    (root / "broken").mkdir()
    (root / "broken" / "config.json").write_text("{")


@pytest.fixture
def app_client(redis_server, tmp_path):
    """The server's app in-process (Starlette's TestClient): a private Redis, no workers (so
    nothing is ready and nothing infers), and a model repository beside the zoo."""
    import uuid

    from starlette.testclient import TestClient

    from codedfarm.server.app import create_app
    from codedfarm.server.farm import ServeConfig
    from codedfarm.settings import Settings

    _repository(tmp_path / "repo")
    settings = Settings(redis_url=redis_server.url, key_prefix=f"t{uuid.uuid4().hex[:6]}",
                        key_ttl=60.0, deadline=5.0, cache_dir=tmp_path / "cache",
                        model_repository=tmp_path / "repo")  # fmt: skip
    app = create_app(settings, ServeConfig(clients=1))
    with TestClient(app) as client:
        yield app, client


def test_v2_lists_the_extensions_the_server_implements_and_each_answers(app_client):
    _, client = app_client
    meta = client.get("/v2").json()
    assert meta["name"] == "codedfarm" and meta["extensions"] == EXTENSIONS
    assert client.post("/v2/repository/index").status_code == 200  # model_repository
    assert client.get("/v2/models/stats").status_code == 200  # statistics


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/v2/nosuch", 404, ["no route GET /v2/nosuch"]),
        ("GET", "/", 404, ["no route GET /"]),
        ("POST", "/v2/models/linear/infer/more", 404, ["no route POST"]),
        ("GET", "/v2/models/linear/infer", 405, ["method GET", "allowed: POST"]),
        ("PUT", "/v2/models/linear/infer", 405, ["method PUT", "allowed: POST"]),
        ("POST", "/v2/health/live", 405, ["method POST", "GET"]),
        ("GET", "/v2/repository/index", 405, ["method GET", "allowed: POST"]),
        ("DELETE", "/v2/models/linear/stats", 405, ["method DELETE"]),
        ("POST", "/v2/repository/models/affine/load", 501, ["read at every lookup"]),
        ("POST", "/v2/repository/models/affine/unload", 501, ["not loaded or unloaded"]),
    ],
)
def test_unknown_routes_and_wrong_methods_answer_a_json_error(app_client, method, path, status,
                                                              words):  # fmt: skip
    """Not Starlette's plain text: the protocol's {"error": ...}, with the Allow header of a
    405 kept."""
    _, client = app_client
    response = client.request(method, path)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert list(body) == ["error"] and all(w in body["error"] for w in words), body
    if status == 405:
        assert response.headers["allow"] == body["error"].rpartition("allowed: ")[2]


def test_only_a_repository_model_reports_versions(app_client):
    """A zoo model has no version: its metadata lists none (not "1"), and a version of it is
    a 404; a repository model lists its versions."""
    _, client = app_client
    zoo = client.get("/v2/models/linear").json()
    assert "versions" not in zoo and zoo["name"] == "linear"
    assert client.get("/v2/models/affine").json()["versions"] == ["1", "2"]
    assert client.get("/v2/models/affine/versions/1").json()["versions"] == ["1", "2"]
    response = client.get("/v2/models/linear/versions/1")
    assert response.status_code == 404 and "has no versions" in response.json()["error"]


def test_the_repository_index_lists_repository_versions_then_the_zoo(app_client):
    from codedfarm.models.registry import MODELS

    _, client = app_client
    index = client.post("/v2/repository/index").json()  # an empty body, as Triton's clients
    by_name: dict[str, list[dict[str, str]]] = {}
    for entry in index:
        by_name.setdefault(entry["name"], []).append(entry)
    assert by_name["affine"] == [
        {"name": "affine", "version": "1", "state": "READY", "reason": ""},
        {"name": "affine", "version": "2", "state": "READY", "reason": ""},
    ]
    (empty,) = by_name["empty"]
    assert empty["state"] == "UNAVAILABLE" and "no version yet" in empty["reason"]
    assert "version" not in empty
    (broken,) = by_name["broken"]
    assert broken["state"] == "UNAVAILABLE" and "invalid" in broken["reason"]
    for name in MODELS:  # the zoo: no version, servable by name
        assert by_name[name] == [{"name": name, "state": "READY", "reason": ""}]
    assert [e["name"] for e in index][:4] == ["affine", "affine", "broken", "empty"]
    ready = client.post("/v2/repository/index", json={"ready": True}).json()
    assert ready == [e for e in index if e["state"] == "READY"]
    assert client.post("/v2/repository/index", json={"ready": False}).json() == index


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"ready": "yes"}', 400, "'ready' must be true or false"),
        (b"[true]", 400, "must be a JSON object"),
        (b"{ready", 400, "not JSON"),
        (b"{}" + b" " * (1 << 16), 413, "over the limit"),
    ],
)
def test_a_bad_repository_index_request_is_a_json_error(app_client, body, status, message):
    _, client = app_client
    response = client.post("/v2/repository/index", content=body)
    assert response.status_code == status and message in response.json()["error"]


def test_statistics_are_the_servers_metrics_in_tritons_format(app_client):
    """Per model, all versions together (version ""): requests by outcome, rows, coding
    groups and their times, as /metrics has them; an unknown model or version is a 404."""
    from codedfarm.protocol import BatchRecord
    from codedfarm.protocol.records import StageTimings

    app, client = app_client
    assert client.get("/v2/models/stats").json() == {"model_stats": []}
    zero = {"count": 0, "ns": 0}
    timed = {"success": zero, "fail": zero, "queue": zero, "compute_infer": zero}
    fresh = {"name": "linear", "version": "", "last_inference": 0, "inference_count": 0,
             "execution_count": 0, "inference_stats": timed}  # fmt: skip
    assert client.get("/v2/models/linear/stats").json() == {"model_stats": [fresh]}
    before = time.time()
    bad = client.post("/v2/models/linear/infer", json={"inputs": []})  # a real failed request
    assert bad.status_code == 400
    # what a served group records (Farm._submit and the coding queue), without workers
    metrics = app.state.farm.metrics
    for seconds in (0.25, 0.5):
        metrics.request("linear", "spline", "ok", seconds)
    metrics.group("linear", 3, 0.004)
    metrics.groups.labels("linear", "spline", "decoded").inc()
    record = BatchRecord(batch="b1", model="linear", codec="spline", k=3, n=5, s=2,
                         wait_for=3, outcome="decoded", rows_own=[0, 1], rows_decoded=[2],
                         timings=StageTimings(end_to_end=0.125))  # fmt: skip
    metrics.rows("linear", record)
    metrics.groups.labels("linear", "spline", "timeout").inc()  # failed: no execution
    metrics.rows("linear", BatchRecord(batch="b2", model="linear", codec="spline", k=1, n=2,
                                       s=1, wait_for=1, outcome="timeout"))  # fmt: skip
    (stats,) = client.get("/v2/models/linear/stats").json()["model_stats"]
    assert before * 1000 <= stats["last_inference"] <= time.time() * 1000
    fail = stats["inference_stats"].pop("fail")
    assert fail["count"] == 1 and fail["ns"] > 0
    assert stats == {
        "name": "linear", "version": "", "last_inference": stats["last_inference"],
        "inference_count": 3, "execution_count": 1,
        "inference_stats": {"success": {"count": 2, "ns": 750_000_000},
                            "queue": {"count": 1, "ns": 4_000_000},
                            "compute_infer": {"count": 1, "ns": 125_000_000}},
    }  # fmt: skip
    everyone = client.get("/v2/models/stats").json()["model_stats"]
    assert [s["name"] for s in everyone] == ["linear"]
    (versioned,) = client.get("/v2/models/affine/versions/2/stats").json()["model_stats"]
    assert versioned["name"] == "affine" and versioned["version"] == ""
    for path, message in [("/v2/models/nosuch/stats", "unknown model 'nosuch'"),
                          ("/v2/models/affine/versions/9/stats", "no version 9"),
                          ("/v2/models/linear/versions/1/stats", "has no versions")]:  # fmt: skip
        response = client.get(path)
        assert response.status_code == 404 and message in response.json()["error"], path


@pytest.fixture
def live_app(app_client):
    """The same app behind a real uvicorn on a free port (in a thread): what the standard
    KServe v2 client (tritonclient[http]) talks to."""
    import threading

    import uvicorn

    from codedfarm.local.redis_server import free_port

    app, _ = app_client  # its lifespan has run: the farm is on app.state
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off",
                                           log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    end = time.monotonic() + 10
    while not server.started and time.monotonic() < end:
        time.sleep(0.01)
    assert server.started
    try:
        yield app, f"127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_the_kserve_client_reads_the_index_the_statistics_and_the_errors(live_app):
    httpclient = pytest.importorskip("tritonclient.http")
    from tritonclient.utils import InferenceServerException

    app, url = live_app
    client = httpclient.InferenceServerClient(url)
    assert client.get_server_metadata()["extensions"] == EXTENSIONS
    index = client.get_model_repository_index()
    assert {"name": "affine", "version": "2", "state": "READY", "reason": ""} in index
    assert {"name": "linear", "state": "READY", "reason": ""} in index
    app.state.farm.metrics.request("linear", "spline", "ok", 0.5)
    (stats,) = client.get_inference_statistics("linear")["model_stats"]
    assert stats["inference_stats"]["success"] == {"count": 1, "ns": 500_000_000}
    assert client.get_inference_statistics()["model_stats"] == [stats]  # every model
    assert client.get_inference_statistics("affine", "1")["model_stats"][0]["name"] == "affine"
    with pytest.raises(InferenceServerException, match="unknown model 'nosuch'"):
        client.get_inference_statistics("nosuch")
    with pytest.raises(InferenceServerException, match="read at every lookup"):
        client.load_model("affine")


@pytest.mark.slow
def test_served_requests_show_in_a_live_servers_statistics(tmp_path):
    """`codedfarm serve` in front of a real worker: after three infer requests (5 rows) the
    statistics count them as /metrics does, coding groups as executions; a zoo model's
    answer carries no model_version."""
    import re
    import subprocess
    import sys
    import urllib.request

    httpclient = pytest.importorskip("tritonclient.http")
    from codedfarm.local import LocalFarm
    from codedfarm.local.redis_server import free_port
    from codedfarm.settings import Settings
    from codedfarm.worker import WorkerOptions

    base = Settings(key_prefix="stx", key_ttl=60.0, deadline=10.0, cache_dir=tmp_path)
    worker = WorkerOptions(queues=("stx",), concurrency=8, preload=("linear",))
    with LocalFarm([worker], settings=base) as farm:
        port = free_port()
        log = farm.log_dir / "serve.log"
        with open(log, "wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "codedfarm", "serve", "--port", str(port), "-Q", "stx",
                 "--group-size", "4", "--max-queue-delay", "20"],
                env=farm.env(), stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        try:
            client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
            end = time.monotonic() + 60
            while time.monotonic() < end:
                try:
                    if client.is_server_ready():
                        break
                except Exception:  # not listening yet
                    pass
                assert server.poll() is None, log.read_text()
                time.sleep(0.2)
            start = time.time()
            for rows in (3, 1, 1):
                x = np.random.default_rng(rows).random((rows, 1, 32, 32), np.float32)
                tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
                tensor.set_data_from_numpy(x)
                result = client.infer("linear", [tensor])
                assert result.as_numpy("output__0").shape == (rows, 10)
                assert "model_version" not in result.get_response()  # a zoo model
            (stats,) = client.get_inference_statistics("linear")["model_stats"]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                text = r.read().decode()
        finally:
            server.terminate()
            server.wait(30)
    infer = stats["inference_stats"]
    assert stats["name"] == "linear" and stats["version"] == ""
    assert start * 1000 <= stats["last_inference"] <= time.time() * 1000
    assert infer["success"]["count"] == 3 and infer["fail"] == {"count": 0, "ns": 0}
    assert stats["inference_count"] == 5  # rows
    decoded = sum(float(v) for v in re.findall(
        r'codedfarm_server_groups_total\{codec="[^"]*",model="linear",'
        r'outcome="(?:deadline_)?decoded"\} (\S+)', text))  # fmt: skip
    assert stats["execution_count"] == decoded >= 3  # one coding group at least per request
    assert infer["compute_infer"]["count"] == infer["queue"]["count"] == decoded
    # each request waited for its groups: their time in the farm is within the requests'
    assert 0 < infer["compute_infer"]["ns"] <= infer["success"]["ns"]
