"""A poison message costs one dropped message and a log line, never a worker; the supervisor
restarts a worker that stops unasked, with backoff, and not one that was told to stop."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import psutil
import pytest
import redis

from codedfarm import BatchSpec, FarmClient
from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.models.digits import load_digits_split
from codedfarm.protocol import INFER_TASK, TaskMessage, task_envelope
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions
from codedfarm.worker.kombu_guards import POISON_CONTENT_TYPE, envelope_or_poison
from codedfarm.worker.supervisor import describe_status

QUEUES = ("pc", "pb")


@pytest.fixture(scope="module")
def poison_farm(model_cache) -> Iterator[tuple[LocalFarm, dict[str, int]]]:
    ports = {"pc": free_port(), "pb": free_port()}
    base = Settings(key_prefix="psn", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    workers = [
        WorkerOptions(queues=("pc",), engine="celery", concurrency=4, preload=("lenet5",),
                      metrics_port=ports["pc"]),
        WorkerOptions(queues=("pb",), engine="batch", concurrency=16, preload=("lenet5",),
                      metrics_port=ports["pb"]),
    ]  # fmt: skip
    with LocalFarm(workers, settings=base) as farm:
        yield farm, ports


def _task_kwargs() -> dict[str, object]:
    return TaskMessage(batch="poison", index=0, model="lenet5", input_key="none", offset=0,
                       nbytes=4096, dtype="float32", shape=[1, 32, 32], output_key="none",
                       inbox="none", ttl=60.0).to_dict()  # fmt: skip


def poison_messages(queue: str) -> list[bytes]:
    good = json.loads(task_envelope(INFER_TASK, _task_kwargs(), queue))
    other_task = json.loads(json.dumps(good))
    other_task["headers"]["task"] = "someone.elses.task"
    other_task["properties"]["delivery_tag"] = "other-task"
    pickled = json.loads(json.dumps(good))
    pickled["content-type"] = "application/x-python-serialize"
    pickled["content-encoding"] = "binary"
    pickled["body"] = base64.b64encode(b"\x80\x04cos\nsystem\n.").decode()
    pickled["properties"]["delivery_tag"] = "pickled"
    bad_body = json.loads(json.dumps(good))
    bad_body["body"] = base64.b64encode(b"{not json").decode()
    bad_body["properties"]["delivery_tag"] = "bad-body"
    no_tag = json.loads(json.dumps(good))
    del no_tag["properties"]["delivery_tag"]
    return [
        b"not json at all",
        b"\xff\xfe binary",
        b"[]",
        b'{"x": 1}',
        json.dumps(no_tag).encode(),
        json.dumps(other_task).encode(),
        json.dumps(pickled).encode(),
        json.dumps(bad_body).encode(),
        json.dumps({"body": "A" * 2_000_000, "properties": {"delivery_tag": "huge"}}).encode(),
    ]


def _refused(port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("codedfarm_messages_refused_total{"))  # fmt: skip


@pytest.mark.slow
def test_poison_messages_kill_no_worker_of_either_engine(poison_farm):
    farm, ports = poison_farm
    client = redis.Redis.from_url(farm.settings.redis_url)
    pids = {w.hostname: {p.pid for p in psutil.Process(w.pid).children(recursive=True)}
            for w in farm.workers}  # fmt: skip
    for queue in QUEUES:
        for raw in poison_messages(queue):
            client.lpush(queue, raw)
    deadline = time.monotonic() + 20
    while any(client.llen(q) for q in QUEUES) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(client.llen(q) == 0 for q in QUEUES)
    digits = load_digits_split().test_x[:8]
    time.sleep(1.0)  # Celery acks its refusals asynchronously
    with FarmClient(farm.settings) as farm_client:
        for queues in (("pc",), ("pb",)):
            result = farm_client.submit(digits, BatchSpec(model="lenet5", codec="berrut", n=12,
                                                          s=2, queues=queues))  # fmt: skip
            assert result.outcome == "decoded", result.record.error
    for worker in farm.workers:  # the same processes: nothing died, nothing was restarted
        assert worker.alive()
        now = {p.pid for p in psutil.Process(worker.pid).children(recursive=True)}
        assert pids[worker.hostname] <= now, worker.log.read_text()[-2000:]
        assert "stopped unasked" not in worker.log.read_text()
    assert _refused(ports["pb"]) >= 8 and _refused(ports["pc"]) >= 5
    assert client.hlen("unacked") == 0  # every refusal was acknowledged
    # kombu's own keys expire unless live workers renew them (2 x the key TTL here)
    assert 0 < client.ttl("_kombu.binding.pc") <= 120
    assert client.llen("psn:inbox:none") == 0 and not client.exists("none")  # none ran


def test_envelope_or_poison_keeps_envelopes_and_stands_in_for_the_rest():
    good = task_envelope(INFER_TASK, _task_kwargs(), "q")
    envelope, reason = envelope_or_poison(good, "q")
    assert reason is None and envelope == json.loads(good)
    for raw, expected in ((b"{", "not_json"), (b"[]", "bad_envelope"),
                          (b'{"properties": {"delivery_tag": 5}}', "bad_envelope")):  # fmt: skip
        envelope, reason = envelope_or_poison(raw, "q")
        assert reason == expected
        assert envelope["content-type"] == POISON_CONTENT_TYPE
        assert envelope["properties"]["delivery_info"]["routing_key"] == "q"


SUPERVISED = """
import os, signal, sys
from pathlib import Path
from codedfarm.worker.supervisor import supervise
runs = Path(sys.argv[1])

def target():
    count = int(runs.read_text()) if runs.exists() else 0
    runs.write_text(str(count + 1))
    if count == 0:
        sys.exit(3)  # an error exit, as Celery's "Unrecoverable error"
    if count == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # killed
    if sys.argv[2] == "wait":
        signal.pause()
    sys.exit(0)  # a requested stop (Celery's remote shutdown)

sys.exit(supervise(target, delay=0.05, max_delay=0.2))
"""


def test_the_supervisor_restarts_unasked_stops_with_backoff(tmp_path):
    runs = tmp_path / "runs"
    done = subprocess.run([sys.executable, "-c", SUPERVISED, str(runs), "exit"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert runs.read_text() == "3"
    lines = [line for line in done.stderr.splitlines() if "stopped unasked" in line]
    assert lines == [
        "codedfarm worker: the worker process stopped unasked (status 3); restarting in "
        "0.05 s (restart 1)",
        "codedfarm worker: the worker process stopped unasked (signal 9 (SIGKILL)); "
        "restarting in 0.1 s (restart 2)",
    ]
    assert describe_status(-15) == "signal 15 (SIGTERM)"


def test_a_requested_shutdown_is_not_restarted(tmp_path):
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(runs), "wait"],
                               stderr=subprocess.DEVNULL)  # fmt: skip
    end = time.monotonic() + 30
    while (not runs.exists() or runs.read_text() != "3") and time.monotonic() < end:
        time.sleep(0.05)
    time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(20) == 0
    assert runs.read_text() == "3"  # no fourth run


@pytest.mark.slow
def test_a_killed_worker_process_is_restarted_and_serves_again(poison_farm):
    farm, _ = poison_farm
    worker = farm.workers[1]  # the batch engine: supervisor -> one child
    (child,) = psutil.Process(worker.pid).children()
    os.kill(child.pid, signal.SIGKILL)
    end = time.monotonic() + 30
    while time.monotonic() < end:
        children = psutil.Process(worker.pid).children()
        if children and children[0].pid != child.pid and b"ready." in worker.log.read_bytes(
        ).split(b"stopped unasked")[-1]:  # fmt: skip
            break
        time.sleep(0.1)
    assert "stopped unasked (signal 9 (SIGKILL))" in worker.log.read_text()
    digits = load_digits_split().test_x[:8]
    with FarmClient(farm.settings) as client:
        result = client.submit(digits, BatchSpec(model="lenet5", codec="berrut", n=12, s=2,
                                                 queues=("pb",), deadline=10.0))  # fmt: skip
    assert result.outcome == "decoded", result.record.error
    assert np.isfinite(result.predictions).all()


@pytest.mark.slow
def test_a_plain_celery_worker_of_the_app_is_guarded_too(redis_server, model_cache):
    """`celery -A codedfarm.worker.celery_engine worker`, without `codedfarm worker`: the
    app's own signals guard kombu and announce the worker."""
    env = dict(os.environ, CODEDFARM_REDIS_URL=redis_server.url, CODEDFARM_KEY_PREFIX="pl",
               CODEDFARM_CACHE_DIR=str(model_cache))  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "codedfarm.worker.celery_engine", "worker",
         "-Q", "plain", "-c", "1", "-P", "solo", "-l", "warning", "--without-heartbeat",
         "--without-gossip", "--without-mingle"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_server.url)
    try:
        end = time.monotonic() + 60
        while client.zcard("pl:live:queue:plain") == 0:
            assert process.poll() is None and time.monotonic() < end, "the worker did not start"
            time.sleep(0.2)
        client.lpush("plain", b"\xff junk", b"[]")
        while client.llen("plain") and time.monotonic() < end:
            time.sleep(0.1)
        time.sleep(0.5)
        assert client.llen("plain") == 0 and process.poll() is None
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert "refused a message on queue plain (not_json" in output
    assert "refused a message on queue plain (bad_envelope" in output
