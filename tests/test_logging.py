"""One logging setup for every process (codedfarm.logs): time, level, role and pid on every
line, text or one JSON object per line, the batch and request ids where there are some; and
live: a served request's id in the server's, the collector service's and both engines'
lines for its batch."""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.errors import ConfigError
from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.logs import (
    LIFECYCLE,
    LogConfig,
    configure_logging,
    current_log_config,
    log_context,
    trace,
)
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

TEXT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (DEBUG|INFO|WARNING|ERROR|CRITICAL) "
    r"(?P<role>[\w-]+)\[\d+\] (?P<logger>[\w.]+): (?P<message>.*)$"
)


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    for name in ("codedfarm", LIFECYCLE, "httpx", "celery.app.trace"):
        logging.getLogger(name).setLevel(logging.NOTSET)
    logging.captureWarnings(False)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def test_text_lines_carry_time_level_role_and_the_ids(restore_logging, capsys):
    configure_logging(LogConfig(level="info", role="serve"))
    log = logging.getLogger("codedfarm.test")
    log.info("plain")
    log.info("about a batch", extra=trace("b1", ["r1", "r2"]))
    with log_context(request_id="r9"):
        log.warning("in a request's context")
    log.debug("below the level")
    lines = _lines(capsys)
    assert len(lines) == 3
    for line in lines:
        match = TEXT_LINE.match(line)
        assert match and match["role"] == "serve" and match["logger"] == "codedfarm.test", line
    assert lines[0].endswith(": plain")
    assert lines[1].endswith("about a batch batch_id=b1 request_id=r1,r2")
    assert lines[2].endswith("in a request's context request_id=r9") and " WARNING " in lines[2]


def test_json_gives_one_object_per_line_with_the_same_fields(restore_logging, capsys):
    configure_logging(LogConfig(level="debug", format="json", role="worker"))
    log = logging.getLogger("codedfarm.test")
    log.debug("task %s/%d ok", "b1", 3, extra=trace("b1", ["r1"]))
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed\non two lines")
    logging.getLogger("redis.connection").debug("a library's debug chatter")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("a Python warning", UserWarning, stacklevel=1)
    lines = _lines(capsys)
    assert len(lines) == 3  # the exception's traceback is inside its object
    objects = [json.loads(line) for line in lines]
    first, second, third = objects
    assert list(first)[:6] == ["time", "level", "role", "pid", "logger", "message"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert first["level"] == "debug" and first["role"] == "worker"
    assert first["message"] == "task b1/3 ok"
    assert (first["batch_id"], first["request_id"]) == ("b1", "r1")
    assert second["level"] == "error" and "ValueError: boom" in second["exc_info"]
    assert "batch_id" not in second and "request_id" not in second  # absent, not empty
    assert third["logger"] == "py.warnings" and "a Python warning" in third["message"]


def test_ready_lines_show_at_every_level_and_per_event_lines_only_at_debug(restore_logging,
                                                                         capsys):  # fmt: skip
    configure_logging(LogConfig(level="error", role="worker"))
    logging.getLogger(LIFECYCLE).info("codedfarm worker w ready.")
    logging.getLogger("codedfarm.test").warning("below error")
    lines = _lines(capsys)
    assert len(lines) == 1 and lines[0].endswith("codedfarm worker w ready.")
    configure_logging(LogConfig(level="info", role="loadgen"))
    logging.getLogger("httpx").info("HTTP Request: POST ... 200")  # one per request
    logging.getLogger("celery.app.trace").info("Task ... succeeded")  # one per task
    assert _lines(capsys) == []
    configure_logging(LogConfig(level="debug", role="loadgen"))
    logging.getLogger("httpx").info("HTTP Request: POST ... 200")
    assert len(_lines(capsys)) == 1
    assert len(logging.getLogger().handlers) == 1 + sum(  # replaced, not added
        not getattr(h, "codedfarm", False) for h in logging.getLogger().handlers
    )


def test_bad_settings_are_refused(restore_logging, monkeypatch):
    with pytest.raises(ConfigError, match="log level must be one of debug, info"):
        LogConfig(level="loud")
    with pytest.raises(ConfigError, match="log format must be one of text, json"):
        LogConfig(format="xml")
    monkeypatch.setenv("CODEDFARM_LOG_FORMAT", "yaml")
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 2 and "Invalid value for '--log-format': 'yaml'" in result.output
    assert "Traceback" not in result.output


def test_the_command_line_and_its_variables_set_it_up(restore_logging, monkeypatch, tmp_path):
    monkeypatch.setenv("CODEDFARM_LOG_LEVEL", "")  # restored afterwards: the CLI sets it
    monkeypatch.setenv("CODEDFARM_LOG_FORMAT", "json")
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(tmp_path))
    assert CliRunner().invoke(cli, ["models"]).exit_code == 0
    assert current_log_config() == LogConfig(level="info", format="json", role="models")
    result = CliRunner().invoke(cli, ["--log-level", "DEBUG", "--log-format", "text", "models"])
    assert result.exit_code == 0
    assert current_log_config() == LogConfig(level="debug", format="text", role="models")
    import os

    # what was given on the command line is passed on to the processes a command starts
    assert os.environ["CODEDFARM_LOG_LEVEL"] == "debug"
    assert os.environ["CODEDFARM_LOG_FORMAT"] == "text"


# -- live: one request's id through the server, the collector service and the workers ----

httpclient = pytest.importorskip("tritonclient.http")
DEBUG_JSON = {"CODEDFARM_LOG_LEVEL": "debug", "CODEDFARM_LOG_FORMAT": "json"}


@pytest.fixture(scope="module")
def farm(model_cache: Path) -> Iterator[LocalFarm]:
    """Both engines at debug level in JSON: the batch engine on queue logs0, Celery on logs1."""
    base = Settings(key_prefix="logs", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    workers = [
        WorkerOptions(queues=("logs0",), preload=("lenet5",)),
        WorkerOptions(queues=("logs1",), engine="celery", preload=("lenet5",)),
    ]
    with pytest.MonkeyPatch.context() as patch:
        for name, value in DEBUG_JSON.items():
            patch.setenv(name, value)
        with LocalFarm(workers, settings=base) as local:
            yield local


def _start(farm: LocalFarm, argv: list[str], log: Path, env: dict[str, str]) -> (
    subprocess.Popen[bytes]
):  # fmt: skip
    with open(log, "wb") as out:
        return subprocess.Popen([sys.executable, "-m", "codedfarm", *argv],
                                env={**farm.env(), **env}, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip


def _wait_for(predicate, what: str, process: subprocess.Popen[bytes], log: Path) -> None:
    end = time.monotonic() + 60
    while not predicate():
        assert process.poll() is None and time.monotonic() < end, f"{what}:\n{log.read_text()}"
        time.sleep(0.1)


def _json_lines(log: Path, role: str) -> list[dict[str, object]]:
    objects = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for item in objects:  # every line is one object with its time, level and role
        assert item["role"] == role and item["time"] and item["level"], item
    return objects


@pytest.mark.slow
def test_a_requests_id_is_in_the_server_collector_and_worker_lines_of_its_batch(farm):
    collector_log = farm.log_dir / "collector-logs.log"
    collector = _start(
        farm,
        ["collector", "--name", "logs"],
        collector_log,
        {"CODEDFARM_LOG_LEVEL": "debug", "CODEDFARM_LOG_FORMAT": "text"},
    )
    port = free_port()
    server_log = farm.log_dir / "serve-logs.log"
    server = _start(farm, ["serve", "--port", str(port), "-Q", "logs0", "-Q", "logs1",
                           "--access-log"], server_log,
                    {**DEBUG_JSON, "CODEDFARM_COLLECTOR": "logs"})  # fmt: skip
    try:
        _wait_for(lambda: b"listening" in collector_log.read_bytes(), "collector", collector,
                  collector_log)  # fmt: skip

        def ready() -> bool:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready").close()
                return True
            except OSError:
                return False

        _wait_for(ready, "server", server, server_log)
        x = np.random.default_rng(0).random((1, 1, 32, 32), dtype=np.float32)
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        tensor = httpclient.InferInput("input__0", [1, 1, 32, 32], "FP32")
        tensor.set_data_from_numpy(x, binary_data=False)
        answer = client.infer("lenet5", [tensor], request_id="req-log-1")
        assert answer.get_response()["id"] == "req-log-1"
        # without an id in the body: the X-Request-ID header's, echoed back
        body = json.dumps(
            {
                "inputs": [
                    {
                        "name": "input__0",
                        "shape": [1, 1, 32, 32],
                        "datatype": "FP32",
                        "data": x.ravel().tolist(),
                    }
                ]
            }
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v2/models/lenet5/infer", body.encode(),
            {"Content-Type": "application/json", "X-Request-ID": "hdr-log-2"})  # fmt: skip
        with urllib.request.urlopen(request) as response:
            assert response.headers["X-Request-ID"] == "hdr-log-2"
        time.sleep(1.0)  # the worker and collector lines are written as the tasks end
    finally:
        server.terminate()
        collector.terminate()
        server.wait(30)
        collector.wait(30)
    server_lines = _json_lines(server_log, "serve")
    worker_lines = [item for log in sorted(farm.log_dir.glob("worker-*.log"))
                    for item in _json_lines(log, "worker")]  # fmt: skip
    collector_lines = collector_log.read_text().splitlines()
    for line in collector_lines:
        match = TEXT_LINE.match(line)
        assert match and match["role"] == "collector", line
    for request_id in ("req-log-1", "hdr-log-2"):
        mine = [item for item in server_lines if item.get("request_id") == request_id]
        assert {item["logger"] for item in mine} == {"codedfarm.access", "codedfarm.serve"}
        (group,) = [item for item in mine if item["logger"] == "codedfarm.serve"]
        batch = group["batch_id"]
        (access,) = [item for item in mine if item["logger"] == "codedfarm.access"]
        assert access["status"] == 200 and access["path"] == "/v2/models/lenet5/infer"
        # the collector service finished the batch: its line names the request
        assert any(f"batch_id={batch} request_id={request_id}" in line
                   for line in collector_lines)  # fmt: skip
        # a lone row costs its task and one copy, on the two queues: both engines log it
        tasks = [item for item in worker_lines if item.get("batch_id") == batch]
        assert {item["request_id"] for item in tasks} == {request_id}
        assert len({item["pid"] for item in tasks}) == 2, tasks
