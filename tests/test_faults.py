"""Faults on real processes: failures beyond S, Redis restarts, dead workers, pickle, auth."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import redis

from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec
from codedfarm.errors import (
    ConfigError,
    FarmUnavailableError,
    InputWarning,
    RedisUnavailableError,
)
from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import LocalRedis
from codedfarm.models.digits import load_digits_split
from codedfarm.protocol import INFER_TASK, Keys, TaskMessage
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions
from codedfarm.worker.celery_engine import make_celery
from codedfarm.worker.kombu_guards import survive_connection_loss

QUEUES = ("f1", "f2")


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits_split().test_x[:6]


@pytest.fixture(scope="module")
def fault_farm(model_cache):
    base = Settings(key_prefix="flt", key_ttl=60.0, deadline=10.0, cache_dir=model_cache,
                    visibility_timeout=3.0)  # fmt: skip
    workers = [
        WorkerOptions(queues=("f1",), engine="celery", concurrency=8, preload=("lenet5",)),
        WorkerOptions(queues=("f2",), concurrency=8, preload=("lenet5",)),  # the batch engine
    ]
    with LocalFarm(workers, settings=base) as farm:
        yield farm


def submit(settings: Settings, x, retries: int = 1, **spec):
    with FarmClient(settings, retries=retries) as client:
        start = time.perf_counter()
        spec.setdefault("queues", QUEUES)
        result = client.submit(x, BatchSpec(model="lenet5", **spec))
        return result, time.perf_counter() - start


@pytest.mark.slow
def test_more_than_s_failures_answer_by_the_deadline(fault_farm, digits):
    result, elapsed = submit(fault_farm.settings, digits, codec="spline", n=16, s=2,
                             straggle="fail:p=0.5", seed=3, deadline=1.0)  # fmt: skip
    failed = sum(d["fail"] for d in result.record.slowed)
    assert failed > 2  # more than S
    assert result.outcome == "deadline_decoded" and result.predictions.shape == (6, 10)
    assert len(result.record.workers_used) == 16 - failed
    # a failed task sends nothing, so the deadline ends the batch (the outcome says it
    # fired); only a clock shows it did not fire early: a one-sided bound, load only delays
    assert elapsed >= 1.0, elapsed
    with pytest.warns(InputWarning, match="model lenet5 is not declared a polynomial"):
        result, elapsed = submit(fault_farm.settings, digits, codec="mds", n=8, s=2,
                                 straggle="fail:p=0.6", seed=4, deadline=1.0)  # fmt: skip
    assert result.outcome == "timeout" and result.predictions is None
    assert result.record.results_received < 6 and elapsed >= 1.0


@pytest.mark.slow
def test_a_killed_workers_unacked_task_is_not_lost(fault_farm, digits):
    victim = fault_farm.add_worker(
        WorkerOptions(
            queues=("acks",), concurrency=1, preload=("lenet5",), straggle="exp:shift=2,rate=100"
        )
    )
    results = []

    def run() -> None:
        results.append(submit(fault_farm.settings, digits[:1], codec="uncoded", deadline=20.0,
                              queues=("acks",)))  # fmt: skip

    thread = threading.Thread(target=run)
    thread.start()
    time.sleep(0.8)  # the task is sleeping inside the victim
    victim.kill()
    fault_farm.add_worker(
        WorkerOptions(queues=("acks",), concurrency=1, preload=("lenet5",))
    )  # a fresh node
    thread.join(30)
    ((result, elapsed),) = results
    # acks_late: the message stayed unacked, came back after the visibility timeout (3 s)
    # and ran on the new worker
    # before its 20 s deadline (the outcome says so); only a clock shows it was the
    # redelivery, and the bound is one-sided: it cannot come back sooner
    assert result.outcome == "decoded", (result.record.error, result.record.results_received)
    assert elapsed > 3.0, elapsed


@pytest.mark.slow
def test_pickle_messages_are_refused(fault_farm):
    settings = fault_farm.settings
    sender = make_celery(settings)
    sender.conf.accept_content = ["json", "pickle"]
    inbox = Keys(settings.key_prefix).inbox("pickle-test")
    message = TaskMessage(batch="p", index=0, model="lenet5", input_key="none", offset=0,
                          nbytes=4096, dtype="float32", shape=[1, 32, 32],
                          output_key="none", inbox=inbox, ttl=60.0)  # fmt: skip
    sender.send_task(INFER_TASK, kwargs=message.to_dict(), queue="f1", serializer="pickle")
    time.sleep(2.0)
    client = redis.Redis.from_url(settings.redis_url)
    assert client.llen("f1") == 0  # consumed ...
    assert client.llen(inbox) == 0  # ... but never executed
    log = "".join(w.log.read_text(errors="replace") for w in fault_farm.workers)
    assert "pickle" in log.lower() and "refus" in log.lower()


@pytest.mark.slow
def test_redis_restart_mid_run_ends_batches_clearly_and_farm_recovers(fault_farm, digits):
    settings = fault_farm.settings
    outcomes = []
    # listening before Redis restarts (a collector that cannot reach Redis at start exits)
    collector = fault_farm.start_collector("flt")

    def run(retries: int) -> None:
        outcomes.append((retries, submit(settings, digits, retries, codec="spline", n=12, s=2,
                                         straggle="fixed:S=12,delay=3", deadline=8.0)))  # fmt: skip

    threads = [threading.Thread(target=run, args=(retries,)) for retries in (0, 1)]
    for thread in threads:
        thread.start()
    time.sleep(0.7)
    assert fault_farm.redis_server is not None
    fault_farm.redis_server.restart()  # no persistence: every key and queued task is gone
    restarted = time.monotonic()
    for thread in threads:
        thread.join(20)
    by_retries = {retries: result for retries, (result, _) in outcomes}
    # without retries the batch ends clearly; with one (the default) it is sent again once
    # Redis and the workers are back, and decodes within its deadline
    failed = by_retries[0]
    assert failed.outcome == "failed" and "lost Redis" in failed.record.error
    assert failed.record.retries == 0
    retried = by_retries[1]
    assert retried.outcome == "decoded", retried.record.error
    assert retried.record.retries == 1
    # workers and clients reconnect: a new batch succeeds within 10 s of the restart
    while True:
        try:
            result, _ = submit(settings, digits, codec="berrut", n=12, s=2, deadline=2.0)
        except FarmUnavailableError:  # Redis, or workers not yet re-announced
            result = None
        if result is not None and result.outcome == "decoded":
            break
        assert time.monotonic() - restarted < 10.0, "farm did not recover within 10 s"
    # the collector service reconnected too: a batch through it succeeds
    try:
        while True:
            spec = BatchSpec(model="lenet5", codec="berrut", n=12, s=2, queues=QUEUES,
                             deadline=2.0)  # fmt: skip
            with FarmClient(settings, collector="flt") as client:
                result = client.submit(digits, spec)
            if result.outcome == "decoded":
                break
            assert time.monotonic() - restarted < 15.0, result.record
    finally:
        collector.terminate()
        collector.wait(10)


def test_an_ack_on_a_channel_closed_by_a_restart_is_a_connection_error():
    # kombu would fail with AttributeError ("Unrecoverable error": the worker stops); a
    # connection error is what Celery logs and survives ("Couldn't ack")
    from kombu.transport import redis as kombu_redis

    survive_connection_loss()
    survive_connection_loss()  # idempotent: the methods are wrapped once
    qos = kombu_redis.QoS.__new__(kombu_redis.QoS)
    qos.channel = SimpleNamespace(connection=None)
    for method in (qos.ack, qos.reject):
        with pytest.raises(redis.ConnectionError, match="tag-1 stays unacked"):
            method("tag-1")
    assert kombu_redis.QoS.restore_at_shutdown is False


@pytest.mark.slow
def test_farm_through_a_password_protected_redis(model_cache, digits):
    with LocalRedis(extra_args=("--requirepass", "s3cret pass")) as server:
        url = f"redis://:s3cret%20pass@127.0.0.1:{server.port}/0"
        base = Settings(key_prefix="auth", key_ttl=60.0, cache_dir=model_cache)
        with LocalFarm(
            [WorkerOptions(queues=("a1",), concurrency=4, preload=("lenet5",))],
            redis_url=url,
            settings=base,
        ) as farm:
            result, _ = submit(replace(farm.settings), digits, codec="berrut", n=8, s=1,
                               queues=("a1",))  # fmt: skip
            assert result.outcome == "decoded"
        wrong = replace(base, redis_url=f"redis://:nope@127.0.0.1:{server.port}/0")
        with pytest.raises(RedisUnavailableError, match=r"redis://:\*\*\*@127.0.0.1") as info:
            FarmClient(wrong)
        assert "nope" not in str(info.value)


def _make_certs(folder: Path) -> None:
    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=folder, check=True, capture_output=True)

    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "2",
        "-subj",
        "/CN=codedfarm-test-ca",
    )
    run(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    )
    (folder / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext")  # fmt: skip


@pytest.mark.slow
def test_farm_over_tls(model_cache, digits, tmp_path):
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make test certificates")
    _make_certs(tmp_path)
    try:
        server = LocalRedis(tls_dir=tmp_path).start()
    except ConfigError as exc:
        pytest.skip(f"this redis-server has no TLS support: {exc}")
    try:
        base = Settings(key_prefix="tls", key_ttl=60.0, cache_dir=model_cache)
        with LocalFarm(
            [WorkerOptions(queues=("t1",), concurrency=4, preload=("lenet5",))],
            redis_url=server.url,
            settings=base,
        ) as farm:
            assert farm.settings.redis_url.startswith("rediss://")
            result, _ = submit(farm.settings, digits, codec="berrut", n=8, s=1, queues=("t1",))
            assert result.outcome == "decoded"
        plain = replace(base, redis_url=f"redis://127.0.0.1:{server.port}/0")
        with pytest.raises(RedisUnavailableError, match="cannot reach Redis"):
            FarmClient(plain)  # a TLS-only server refuses plain connections
    finally:
        server.close()
