"""Worker metrics are a plugin: the engines report to the installed
:class:`~codedfarm.monitoring.hooks.WorkerHooks` (no-ops by default, Prometheus metrics
with ``--metrics-port``, also in the processes Celery's prefork pool forks)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from codedfarm import BatchSpec, FarmClient
from codedfarm.errors import ConfigError
from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import LocalRedis, free_port
from codedfarm.models.digits import load_digits_split
from codedfarm.monitoring.hooks import WorkerHooks
from codedfarm.protocol import INFER_TASK, TaskMessage, task_envelope
from codedfarm.settings import Settings
from codedfarm.worker.batch_engine import BatchEngine
from codedfarm.worker.celery_engine import make_celery
from codedfarm.worker.options import WorkerOptions
from codedfarm.worker.state import WorkerState, install_worker_hooks, worker_hooks
from live_processes import get


class Recorder(WorkerHooks):
    def __init__(self) -> None:
        self.calls: list[tuple[object, ...]] = []

    def observe(self, queue: str, model: str, status: str, seconds: float, delay: float) -> None:
        self.calls.append(("observe", queue, model, status, seconds, delay))

    def refused(self, reason: str) -> None:
        self.calls.append(("refused", reason))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    previous = worker_hooks()
    installed = Recorder()
    install_worker_hooks(installed)
    yield installed
    install_worker_hooks(previous)


def test_the_default_hooks_are_no_ops():
    hooks = worker_hooks()
    assert type(hooks) is WorkerHooks
    hooks.engine_started("batch")
    hooks.observe("q", "lenet5", "ok", 0.01, 0.0)
    hooks.refused("not_json")


def test_the_batch_engine_reports_to_the_installed_hooks(recorder, tmp_path):
    queue = "hooks"
    with LocalRedis() as server:
        settings = Settings(redis_url=server.url, key_prefix="hk", key_ttl=60.0,
                            cache_dir=tmp_path)  # fmt: skip
        worker = WorkerState(settings, WorkerOptions(queues=(queue,), engine="batch"))
        # a task whose inputs are gone (its batch finished): skipped, no model needed
        task = TaskMessage(batch="gone", index=0, model="lenet5", input_key="hk:none", offset=0,
                           nbytes=16, dtype="float32", shape=[4], output_key="hk:out",
                           inbox="hk:inbox", ttl=60.0, queue=queue).to_dict()  # fmt: skip
        worker.redis.lpush(queue, b"not json at all", task_envelope(INFER_TASK, task, queue))
        with make_celery(settings).connection_for_read() as connection:
            engine = BatchEngine(worker, [queue], 4, kombu_connection=connection)
            deadline = time.monotonic() + 10
            while len(recorder.calls) < 2 and time.monotonic() < deadline:
                engine.step()
        worker.redis.close()
    assert ("refused", "not_json") in recorder.calls
    observed = [c for c in recorder.calls if c[0] == "observe"]
    assert len(observed) == 1, recorder.calls
    _, q, model, status, seconds, delay = observed[0]
    assert (q, model, status, delay) == (queue, "lenet5", "skipped", 0.0)
    assert isinstance(seconds, float) and 0.0 <= seconds < 10.0


def test_a_batch_engine_without_slots_is_a_config_error(tmp_path):
    worker = WorkerState(Settings(cache_dir=tmp_path), WorkerOptions())
    with pytest.raises(ConfigError, match="slots must be >= 1"):
        BatchEngine(worker, ["q"], 0, kombu_connection=None)


def test_the_prometheus_hooks_count_what_they_are_told():
    from prometheus_client import CollectorRegistry

    from codedfarm.monitoring.worker_metrics import WorkerMetrics

    registry = CollectorRegistry()
    metrics = WorkerMetrics(registry)
    assert isinstance(metrics, WorkerHooks)
    metrics.engine_started("celery")
    metrics.observe("q", "lenet5", "ok", 0.5, 0.2)
    metrics.observe("q", "lenet5", "cancelled", 0.3, 0.3)
    metrics.refused("serializer")
    labels = {"queue": "q", "model": "lenet5", "engine": "celery"}
    assert registry.get_sample_value("codedfarm_worker_tasks_total",
                                     {**labels, "status": "ok"}) == 1.0  # fmt: skip
    assert registry.get_sample_value("codedfarm_worker_task_seconds_count", labels) == 2.0
    assert registry.get_sample_value("codedfarm_worker_task_work_seconds_count", labels) == 1.0
    assert registry.get_sample_value("codedfarm_worker_task_work_seconds_sum",
                                     labels) == pytest.approx(0.3)  # fmt: skip
    assert registry.get_sample_value("codedfarm_messages_refused_total",
                                     {"reason": "serializer"}) == 1.0  # fmt: skip


@pytest.mark.slow
def test_metrics_reach_metrics_port_from_either_engines_processes(model_cache: Path):
    """The Celery engine runs tasks in prefork pool processes, the batch engine in the
    supervised child: both inherit the installed metrics and report through the parent."""
    ports = {"celery": free_port(), "batch": free_port()}
    base = Settings(key_prefix="wh", key_ttl=60.0, deadline=20.0, cache_dir=model_cache)
    workers = [WorkerOptions(queues=(f"wh{engine}",), engine=engine, concurrency=2,
                             preload=("lenet5",), metrics_port=port)
               for engine, port in ports.items()]  # fmt: skip
    digits = load_digits_split().test_x[:4].astype(np.float32)
    with LocalFarm(workers, settings=base) as farm, FarmClient(farm.settings) as client:
        for engine in ports:
            spec = BatchSpec(model="lenet5", codec="uncoded", queues=(f"wh{engine}",))
            assert client.submit(digits, spec).outcome == "decoded"
        for engine, port in ports.items():
            _, text = get(port, "/metrics")
            found = re.search(rf'codedfarm_worker_tasks_total{{[^}}]*engine="{engine}"'
                              rf'[^}}]*status="ok"}} (\S+)', text)  # fmt: skip
            assert found and float(found.group(1)) >= 4.0, (engine, text[-2000:])
