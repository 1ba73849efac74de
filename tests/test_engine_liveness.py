"""Liveness from the engine itself: the engine stamps each turn of its loop, the supervisor
answers /livez from those stamps (503 with a JSON reason once the loop stops turning), kills
and restarts a hung engine, and counts its restarts; a whole stopped group is no hang."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from types import SimpleNamespace

import numpy as np
import psutil
import pytest
import redis
from prometheus_client import CollectorRegistry

from codedfarm import BatchSpec, FarmClient
from codedfarm.errors import ConfigError
from codedfarm.heartbeat import Heartbeat
from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.models.digits import load_digits_split
from codedfarm.monitoring.health import serve_health_and_metrics
from codedfarm.monitoring.worker_metrics import EngineCollector
from codedfarm.protocol import TaskMessage
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate
from codedfarm.worker import WorkerOptions, liveness
from codedfarm.worker.liveness import (
    DEFAULT_TIMEOUT_S,
    TIMEOUT_VARIABLE,
    EngineProgress,
    EngineWatch,
)
from codedfarm.worker.options import ENV_PREFIX
from codedfarm.worker.state import WorkerState
from live_processes import get

TIMEOUT_S = 3.0  # the live worker's bound (--liveness-timeout)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(liveness, "time", SimpleNamespace(monotonic=fake.monotonic))
    return fake


def test_the_bound_comes_from_its_option_and_variable():
    def bound(environ: dict[str, str]) -> float:
        return WorkerOptions.from_env(environ).liveness_timeout

    assert bound({}) == DEFAULT_TIMEOUT_S == WorkerOptions().liveness_timeout == 15.0
    assert bound({TIMEOUT_VARIABLE: ""}) == DEFAULT_TIMEOUT_S
    assert bound({TIMEOUT_VARIABLE: "3"}) == 3.0
    assert f"{ENV_PREFIX}LIVENESS_TIMEOUT" == TIMEOUT_VARIABLE  # codedfarm worker's vocabulary
    with pytest.raises(ConfigError, match=f"{TIMEOUT_VARIABLE} must be a number"):
        bound({TIMEOUT_VARIABLE: "soon"})
    with pytest.raises(ConfigError, match=f"liveness_timeout must be >= 2 seconds.*"
                                          f"{TIMEOUT_VARIABLE}"):  # fmt: skip
        bound({TIMEOUT_VARIABLE: "0.5"})
    assert WorkerOptions(liveness_timeout=4).argv()[-2:] == ["--liveness-timeout", "4.0"]


def _advance(clock: Clock, watch: EngineWatch, seconds: float) -> dict[str, object] | None:
    """Let ``seconds`` pass with the supervisor's checks every half second; the last one."""
    why = None
    for _ in range(round(seconds / 0.5)):
        clock.now += 0.5
        why = watch.hung()
    return why


def test_the_rule_no_turn_for_t_and_no_task_within_its_bound(clock: Clock):
    watch = EngineWatch(15.0)
    progress = watch.progress
    assert watch.hung() is None and watch.loop_age() is None
    assert _advance(clock, watch, 600) is None  # a start is not judged
    progress.turn()
    assert _advance(clock, watch, 15) is None
    why = _advance(clock, watch, 0.5)
    assert why is not None and why["status"] == "hung"
    assert "has not turned for 15.5 s (allowed: 15.0 s" in str(why["reason"])
    assert watch.not_ready() == why["reason"] and watch.loop_age() == 15.5
    progress.turn()
    assert watch.hung() is None
    progress.busy(100.0)  # a forward pass whose batch lives 100 s more
    assert _advance(clock, watch, 100) is None
    assert "allowed: 100.0 s" in str((_advance(clock, watch, 0.5) or {})["reason"])
    progress.idle()
    progress.turn()
    assert _advance(clock, watch, 15) is None
    watch.starting()  # a new engine: not judged until it turns
    assert _advance(clock, watch, 100) is None


def test_time_the_supervisor_was_stopped_does_not_count_against_the_engine(clock: Clock):
    watch = EngineWatch(15.0)
    watch.progress.turn()
    assert _advance(clock, watch, 5) is None
    clock.now += 60  # no check for a minute: the supervisor (the whole group) was stopped
    assert watch.hung() is None  # the engine gets T again from now
    assert _advance(clock, watch, 15) is None
    assert _advance(clock, watch, 0.5) is not None  # T passed after the pause, and no turn
    watch.judging = False  # asked to stop: a slow shutdown is no hang
    assert watch.hung() is None


def test_livez_fails_with_a_json_reason_and_metrics_count_restarts(clock: Clock):
    watch = EngineWatch(3.0)
    watch.progress.set_pid(4321)
    registry = CollectorRegistry()
    registry.register(EngineCollector(watch))
    port = free_port()
    httpd = serve_health_and_metrics(port, "127.0.0.1", watch.not_ready, registry,
                                     live=watch.hung)  # fmt: skip
    try:
        assert get(port, "/livez") == (200, "ok\n")
        _, text = get(port, "/metrics")
        assert 'codedfarm_worker_engine_restarts_total{reason="hung"} 0.0' in text
        assert "codedfarm_worker_engine_loop_age_seconds " not in text  # not started
        watch.progress.turn()
        for _ in range(2):
            clock.now += 1.5
            assert get(port, "/livez") == (200, "ok\n")
        clock.now += 1.0
        status, body = get(port, "/livez")
        assert status == 503
        why = json.loads(body)
        assert why["status"] == "hung" and why["engine_pid"] == 4321
        assert why["seconds_since_turn"] == 4.0 and why["allowed_seconds"] == 3.0
        assert "has not turned for 4.0 s" in why["reason"]
        assert get(port, "/readyz") == (503, f"not ready: {why['reason']}\n")
        watch.restarted("hung")
        watch.restarted("exited")
        watch.restarted("hung")
        _, text = get(port, "/metrics")
        assert 'codedfarm_worker_engine_restarts_total{reason="hung"} 2.0' in text
        assert 'codedfarm_worker_engine_restarts_total{reason="exited"} 1.0' in text
        assert "codedfarm_worker_engine_loop_age_seconds 4.0" in text
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_batch_engines_forward_pass_may_hold_the_loop_while_its_batch_lives(
    redis_server, monkeypatch: pytest.MonkeyPatch
):
    from codedfarm.worker import batch_engine
    from codedfarm.worker.celery_engine import make_celery

    settings = Settings(redis_url=redis_server.url, key_prefix="lb")
    progress = EngineProgress(2.0)
    monkeypatch.setattr(liveness, "_progress", progress)
    worker = WorkerState(settings, WorkerOptions(queues=("lb",)))
    kombu = make_celery(settings).connection_for_read()
    engine = batch_engine.BatchEngine(worker, ["lb"], 4, kombu_connection=kombu)
    seen: list[float] = []

    def forward(_worker: object, _model: str, x: np.ndarray, _version: object = None):
        seen.append(progress.busy_until - time.monotonic())
        return np.zeros((len(x), 2), np.float32), 0.001

    monkeypatch.setattr(batch_engine, "predict", forward)
    redis.Redis.from_url(redis_server.url).set("lb:in", np.ones(4, np.float32).tobytes())
    msg = TaskMessage(batch="b", index=0, model="m", input_key="lb:in", offset=0, nbytes=16,
                      dtype="float32", shape=[4], output_key="lb:out", inbox="lb:inbox",
                      ttl=60.0)  # fmt: skip
    received = time.time() - 10  # received 10 s ago: its batch lives 50 s more
    task = batch_engine._Task(time.monotonic(), 0, "tag", msg, TaskFate(), time.perf_counter(),
                              "id", received)  # fmt: skip
    assert engine._execute([task]) == 1
    (left,) = seen
    assert 49 < left <= 50  # the loop may be silent that long: no hang meanwhile
    assert progress.busy_until == 0.0  # and no longer once the pass is over


def test_a_heartbeat_pauses_while_the_engine_is_stuck(redis_server):
    client = redis.Redis.from_url(redis_server.url)
    healthy = [True]
    beat = Heartbeat(lambda: client, ["t:live:queue:q"], "w@h", interval=0.05,
                     healthy=lambda: healthy[0]).start()  # fmt: skip
    try:
        time.sleep(0.2)
        healthy[0] = False
        time.sleep(0.1)
        stale = client.zscore("t:live:queue:q", "w@h")
        time.sleep(0.3)
        assert client.zscore("t:live:queue:q", "w@h") == stale  # no beat: clients look away
        healthy[0] = True
        time.sleep(0.2)
        assert (client.zscore("t:live:queue:q", "w@h") or 0) > (stale or 0)
    finally:
        beat.stop()


SUPERVISED = """
import json, sys, time
from pathlib import Path
from codedfarm.worker.liveness import EngineWatch, engine_progress, install_progress
from codedfarm.worker.supervisor import supervise
runs, mode = Path(sys.argv[1]), sys.argv[2]
watch = EngineWatch(2.0)
install_progress(watch.progress)

def target():
    count = int(runs.read_text()) if runs.exists() else 0
    runs.write_text(str(count + 1))
    progress = engine_progress()
    if mode == "hang":
        if count > 0:
            sys.exit(0)  # the restarted engine ends (a requested stop)
        for _ in range(5):
            progress.turn()
            time.sleep(0.1)
        time.sleep(3600)  # hung: alive, and its loop turns no more
    while True:
        progress.turn()
        time.sleep(0.1)

code = supervise(target, delay=0.05, watch=watch)
print(json.dumps({"code": code, "restarts": watch.restart_counts()}), flush=True)
"""


def test_the_supervisor_kills_a_hung_engine_restarts_it_and_counts_it(tmp_path):
    runs = tmp_path / "runs"
    start = time.monotonic()
    done = subprocess.run([sys.executable, "-c", SUPERVISED, str(runs), "hang"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    took = time.monotonic() - start
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"code": 0, "restarts": {"exited": 0, "hung": 1}}
    assert runs.read_text() == "2"
    pattern = (
        r"engine loop has not turned for \d\.\d s \(allowed: 2\.0 s; "
        rf"{TIMEOUT_VARIABLE}=2\): killing the worker process"
    )
    assert re.search(pattern, done.stderr), done.stderr
    assert "the worker process hung; restarting in 0.05 s (restart 1)" in done.stderr
    assert took < 30


def test_a_whole_stopped_process_group_is_no_hung_engine(tmp_path):
    """SIGSTOP of the supervisor and its engine together (a frozen node, the chaos test's
    stop-worker) for longer than the bound: after SIGCONT, no restart."""
    runs = tmp_path / "runs"
    process = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(runs), "turn"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)  # fmt: skip
    try:
        end = time.monotonic() + 30
        while not runs.exists() and time.monotonic() < end:
            time.sleep(0.05)
        time.sleep(0.5)
        os.killpg(process.pid, signal.SIGSTOP)
        time.sleep(2.0 + 1.0 + 1.0)  # the bound, the confirmation and a margin
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(1.5)
    finally:
        os.killpg(process.pid, signal.SIGCONT)
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert json.loads(out) == {"code": 0, "restarts": {"exited": 0, "hung": 0}}, err
    assert runs.read_text() == "1"


# ----- a live worker: SIGSTOP its engine ---------------------------------------------------
@pytest.fixture(scope="module")
def live_worker(model_cache) -> Iterator[tuple[LocalFarm, int]]:
    port = free_port()
    base = Settings(key_prefix="lvz", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    options = WorkerOptions(queues=("lvz",), engine="batch", concurrency=8, preload=("lenet5",),
                            metrics_port=port, liveness_timeout=TIMEOUT_S)  # fmt: skip
    with LocalFarm([options], settings=base) as farm:
        assert f"--liveness-timeout {TIMEOUT_S!r}" in " ".join(farm.workers[0].options.argv())
        yield farm, port


def _engine(farm: LocalFarm) -> psutil.Process:
    (engine,) = psutil.Process(farm.workers[0].pid).children()  # the batch engine: one child
    return engine


def _restarts(port: int) -> dict[str, float]:
    _, text = get(port, "/metrics")
    found = re.findall(r'codedfarm_worker_engine_restarts_total\{reason="(\w+)"\} (\S+)', text)
    return {reason: float(value) for reason, value in found}


def _until_livez(port: int, status: int, within: float) -> tuple[float, str]:
    """Poll /livez every 20 ms until it answers ``status``; returns when, and the body."""
    start = time.monotonic()
    while time.monotonic() - start < within:
        got, body = get(port, "/livez")
        if got == status:
            return time.monotonic() - start, body
        time.sleep(0.02)
    raise AssertionError(f"/livez did not answer {status} within {within:g} s")


def _serves_a_batch(farm: LocalFarm) -> None:
    digits = load_digits_split().test_x[:8]
    with FarmClient(farm.settings) as client:
        result = client.submit(digits, BatchSpec(model="lenet5", codec="berrut", n=12, s=2,
                                                 queues=("lvz",), deadline=20.0))  # fmt: skip
    assert result.outcome == "decoded", result.record.error
    assert np.isfinite(result.predictions).all()


@pytest.mark.slow
def test_a_stopped_engine_fails_livez_and_recovers_after_sigcont(live_worker):
    farm, port = live_worker
    engine = _engine(farm)
    assert get(port, "/livez") == (200, "ok\n")
    assert _restarts(port) == {"exited": 0.0, "hung": 0.0}
    engine.send_signal(signal.SIGSTOP)
    try:
        # the engine's last turn was at most ~1 s before the stop: /livez fails within T
        took, body = _until_livez(port, 503, TIMEOUT_S + 2.0)
    finally:
        engine.send_signal(signal.SIGCONT)  # within the supervisor's confirmation second
    assert took <= TIMEOUT_S + 1.0, took  # T, and a probe's latency on a busy machine
    why = json.loads(body)
    assert why["engine_pid"] == engine.pid and why["allowed_seconds"] == TIMEOUT_S
    _until_livez(port, 200, 2.0)
    time.sleep(1.5)
    assert _engine(farm).pid == engine.pid  # continued in time: recovered, not restarted
    assert _restarts(port) == {"exited": 0.0, "hung": 0.0}
    _serves_a_batch(farm)


@pytest.mark.slow
def test_a_hung_engine_is_killed_restarted_and_counted(live_worker):
    farm, port = live_worker
    worker = farm.workers[0]
    engine = _engine(farm)
    log_before = len(worker.log.read_bytes())
    engine.send_signal(signal.SIGSTOP)  # never continued: the supervisor restarts it
    stopped = time.monotonic()
    took, body = _until_livez(port, 503, TIMEOUT_S + 2.0)
    assert took <= TIMEOUT_S + 1.0 and json.loads(body)["engine_pid"] == engine.pid
    _until_livez(port, 200, 5.0)  # killed: a new engine is starting (not judged)
    end = time.monotonic() + 90
    while b" ready." not in worker.log.read_bytes()[log_before:]:
        assert time.monotonic() < end, worker.log.read_text()[-2000:]
        time.sleep(0.1)
    restarted = time.monotonic() - stopped
    log = worker.log.read_bytes()[log_before:].decode()
    assert "engine loop has not turned for" in log and "killing the worker process" in log
    assert "the worker process hung; restarting in 1 s (restart 1)" in log
    assert not engine.is_running()  # killed and reaped
    assert _engine(farm).pid != engine.pid
    assert _restarts(port) == {"exited": 0.0, "hung": 1.0}
    assert get(port, "/livez") == (200, "ok\n")
    _serves_a_batch(farm)
    print(f"/livez failed {took:.2f} s after SIGSTOP; ready again after {restarted:.1f} s")
