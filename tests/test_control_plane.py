"""Both engines on Celery's control plane: `celery inspect`/`control`, events, Flower.

Real Redis, real worker processes, Celery's own command line and the real `flower` package.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from codedfarm.coordinator import BatchSpec, FarmClient
from codedfarm.local import LocalFarm
from codedfarm.protocol import INFER_TASK
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate
from codedfarm.worker import WorkerOptions
from codedfarm.worker.celery_engine import make_celery

pytestmark = pytest.mark.slow  # a live farm, Celery's control plane and Flower

APP = "codedfarm.worker.celery_engine"


@pytest.fixture(scope="module")
def control_farm(model_cache) -> Iterator[LocalFarm]:
    """A batch engine started with --events, one without, and a Celery worker without."""
    base = Settings(key_prefix="cp", key_ttl=60.0, deadline=10.0, cache_dir=model_cache)
    workers = [
        WorkerOptions(queues=("ev",), concurrency=8, preload=("lenet5",), events=True),
        WorkerOptions(queues=("quiet",), concurrency=8, preload=("lenet5",)),
        WorkerOptions(queues=("cel",), engine="celery", concurrency=2, preload=("lenet5",)),
    ]
    with LocalFarm(workers, settings=base) as farm:
        yield farm


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    from codedfarm.models.digits import load_digits_split

    return load_digits_split().test_x[:4]


def names(farm: LocalFarm) -> tuple[str, str, str]:
    events, quiet, celery = (w.hostname for w in farm.workers[:3])
    return events, quiet, celery


class EventLog:
    """Celery's event receiver (what `celery events` and Flower run), in a thread."""

    def __init__(self, farm: LocalFarm) -> None:
        self.app = make_celery(farm.settings)
        self.events: list[dict[str, Any]] = []
        self._receiver: Any = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._listening = threading.Event()

    def _run(self) -> None:
        with self.app.connection() as conn:
            self._receiver = self.app.events.Receiver(conn, handlers={"*": self.events.append})
            self._listening.set()
            self._receiver.capture(limit=None, timeout=None, wakeup=False)

    def __enter__(self) -> EventLog:
        self._thread.start()
        assert self._listening.wait(10)
        time.sleep(0.3)  # the receiver's SUBSCRIBE reaches Redis
        return self

    def __exit__(self, *_: object) -> None:
        self._receiver.should_stop = True
        self._thread.join(5)

    def of(self, kind: str, hostname: str | None = None) -> list[dict[str, Any]]:
        return [e for e in list(self.events)
                if e["type"] == kind and hostname in (None, e["hostname"])]  # fmt: skip


def submit(farm: LocalFarm, digits: np.ndarray, queue: str, n: int = 4, **spec: Any) -> Any:
    with FarmClient(farm.settings) as client:
        return client.submit(
            digits[:n], BatchSpec(model="lenet5", codec="uncoded", queues=(queue,), **spec)
        )


def wait_until(condition: Any, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.05)
    return bool(condition())


def test_celery_inspect_ping_is_answered_by_a_batch_engine_worker_within_2s(control_farm):
    batch_worker = names(control_farm)[0]
    app = make_celery(control_farm.settings)
    start = time.monotonic()
    replies = app.control.ping(destination=[batch_worker], timeout=2.0)
    assert replies == [{batch_worker: {"ok": "pong"}}]
    assert time.monotonic() - start < 2.0
    # Celery's own command line, as an operator types it
    out = subprocess.run(
        [sys.executable, "-m", "celery", "-A", APP, "inspect", "ping", "--timeout", "2",
         "--destination", batch_worker],
        env=control_farm.env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert f"->  {batch_worker}: OK" in out.stdout and "pong" in out.stdout


def test_inspect_answers_in_celerys_shapes_from_both_engines(control_farm, digits):
    events, quiet, celery = names(control_farm)
    app = make_celery(control_farm.settings)
    inspect = app.control.inspect(timeout=2.0, destination=[events, quiet, celery])
    assert set(inspect.ping() or {}) >= {events, quiet, celery}
    queues = inspect.active_queues() or {}
    assert [q["name"] for q in queues[events]] == ["ev"]
    assert [q["name"] for q in queues[celery]] == ["cel"]
    assert queues[events][0].keys() == queues[celery][0].keys()  # the same shape
    registered = inspect.registered() or {}
    assert registered[events] == registered[celery] == [INFER_TASK]
    before = (inspect.stats() or {})[quiet]
    assert submit(control_farm, digits, "quiet").outcome == "decoded"
    stats = (inspect.stats() or {})[quiet]
    assert stats["pool"]["max-concurrency"] == 8 and stats["pid"] > 0
    assert stats["total"][INFER_TASK] == before["total"][INFER_TASK] + 4
    assert "password" not in stats["broker"]


def test_inspect_active_lists_a_batch_engines_straggling_tasks(control_farm, digits):
    quiet = names(control_farm)[1]
    inspect = make_celery(control_farm.settings).control.inspect(timeout=1.0)
    done: list[Any] = []
    plan = (TaskFate(3.0), TaskFate(3.0))
    thread = threading.Thread(
        target=lambda: done.append(submit(control_farm, digits, "quiet", n=2, plan=plan))
    )
    thread.start()

    def held() -> list[dict[str, Any]]:
        return list((inspect.active() or {}).get(quiet, []))

    try:
        assert wait_until(lambda: len(held()) == 2, 10)
        tasks = held()
        assert {t["name"] for t in tasks} == {INFER_TASK}
        assert len({t["kwargs"]["batch"] for t in tasks}) == 1
        assert sorted(t["kwargs"]["index"] for t in tasks) == [0, 1]
        assert all(t["hostname"] == quiet and t["id"] for t in tasks)
    finally:
        thread.join(20)
    active = make_celery(control_farm.settings).control.inspect(timeout=1.0).active() or {}
    assert active.get(quiet) == []  # finished: nothing held any more
    assert done and done[0].outcome == "decoded"


def test_a_worker_started_with_events_sends_celerys_task_events(control_farm, digits):
    events_worker, quiet, _ = names(control_farm)
    with EventLog(control_farm) as log:
        assert submit(control_farm, digits, "ev").outcome == "decoded"
        assert submit(control_farm, digits, "quiet").outcome == "decoded"
        assert wait_until(lambda: len(log.of("task-succeeded", events_worker)) >= 4, 5)
        assert wait_until(lambda: log.of("worker-heartbeat", quiet), 5)  # heartbeats: always
    ids = {e["uuid"] for e in log.of("task-received", events_worker)}
    assert len(ids) == 4
    assert {e["uuid"] for e in log.of("task-started", events_worker)} == ids
    succeeded = log.of("task-succeeded", events_worker)
    assert {e["uuid"] for e in succeeded} == ids
    assert all(e["runtime"] >= 0 and e["result"] == "'ok'" for e in succeeded)
    assert not [e for e in log.events if e["type"].startswith("task-") and e["hostname"] == quiet]


def test_remote_enable_events_turns_task_events_on(control_farm, digits):
    quiet = names(control_farm)[1]
    app = make_celery(control_farm.settings)
    with EventLog(control_farm) as log:
        reply = app.control.enable_events(destination=[quiet], reply=True, timeout=2)
        assert reply == [{quiet: {"ok": "task events enabled"}}]
        try:
            assert submit(control_farm, digits, "quiet").outcome == "decoded"
            assert wait_until(lambda: len(log.of("task-succeeded", quiet)) >= 4, 5)
        finally:
            app.control.disable_events(destination=[quiet], reply=True, timeout=2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_json(url: str, timeout: float = 60) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def test_flower_lists_celery_and_batch_engine_workers_and_their_tasks(control_farm, digits):
    events_worker, quiet, celery = names(control_farm)
    port = free_port()
    env = {**control_farm.env(), "FLOWER_UNAUTHENTICATED_API": "true"}
    log_path = control_farm.log_dir / "flower.log"
    with open(log_path, "wb") as log_file:
        flower = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", APP, "flower", f"--port={port}",
             "--address=127.0.0.1"],
            env=env, stdout=log_file, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"

        def listening() -> bool:
            try:
                with urllib.request.urlopen(f"{base}/healthcheck", timeout=2) as response:
                    return bool(response.status == 200)
            except OSError:
                return False

        assert wait_until(listening, 60), log_path.read_text()
        start = time.monotonic()
        workers = get_json(f"{base}/api/workers?refresh=1")
        assert time.monotonic() - start < 30  # it hung past 120 s with broker_pool_limit=4
        assert {events_worker, quiet, celery} <= set(workers)
        assert workers[events_worker]["stats"]["pool"]["max-concurrency"] == 8
        assert [q["name"] for q in workers[celery]["active_queues"]] == ["cel"]
        assert submit(control_farm, digits, "ev").outcome == "decoded"

        def tasks_of(worker: str) -> list[str]:
            tasks = get_json(f"{base}/api/tasks")
            return [t["state"] for t in tasks.values() if t.get("worker") == worker]

        assert wait_until(lambda: tasks_of(events_worker).count("SUCCESS") >= 4, 10)
    finally:
        flower.terminate()
        flower.wait(15)


def test_remote_shutdown_stops_a_batch_engine_worker_for_good(control_farm):
    worker = control_farm.add_worker(WorkerOptions(queues=("bye",), concurrency=2))
    app = make_celery(control_farm.settings)
    assert app.control.ping(destination=[worker.hostname], timeout=2.0)
    app.control.shutdown(destination=[worker.hostname])
    assert wait_until(lambda: not worker.alive(), 15), "the worker did not stop"
    assert worker.process.returncode == 0  # a requested stop: the supervisor does not restart
    assert not app.control.ping(destination=[worker.hostname], timeout=1.0)
