"""``codedfarm soak --chaos`` and the chaos test: steady load on a local farm of both worker
engines and a collector service while faults are injected, one every few seconds:

- ``kill-celery`` / ``kill-batch``: SIGKILL a worker's engine process (its supervisor
  restarts it; its unacked tasks come back after the visibility timeout);
- ``stop-worker``: SIGSTOP a whole worker for a while, then SIGCONT (a frozen node);
- ``kill-collector``: SIGKILL the collector service, then start another;
- ``restart-redis``: restart Redis (no persistence: every key and queued task is gone);
- ``poison``: push junk, JSON of the wrong shape and pickle messages onto every queue.

Every batch must end with an outcome (never lost, never an exception but a clear refusal),
and every decoded answer must equal a replay of the codec on the results it used, computed
here from the same model. At the end every process must still be alive.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import psutil
import redis

from codedfarm.codecs import plan_codec
from codedfarm.coordinator import BatchResult, BatchSpec, FarmClient
from codedfarm.errors import FarmUnavailableError
from codedfarm.local.farm import LocalFarm
from codedfarm.protocol import INFER_TASK, task_envelope
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

__all__ = ["FAULTS", "ChaosConfig", "ChaosReport", "run_chaos"]

FAULTS = ("kill-celery", "kill-batch", "stop-worker", "kill-collector", "restart-redis", "poison")
QUEUES = ("chaos-c", "chaos-b0", "chaos-b1")


@dataclass(frozen=True)
class ChaosConfig:
    seconds: float = 60.0
    clients: int = 3  # client threads, each submitting one batch after another
    pause: float = 0.1  # seconds between a client's batches
    every: float = 4.0  # seconds between faults
    faults: tuple[str, ...] = FAULTS
    codec: str = "berrut"
    n: int = 12
    s: int = 3
    deadline: float = 8.0
    model: str = "lenet5"
    seed: int = 0


@dataclass
class ChaosReport:
    config: ChaosConfig
    outcomes: Counter[str] = field(default_factory=Counter)
    refused: list[str] = field(default_factory=list)
    retried: int = 0
    replay_mismatches: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # of batches that failed or timed out
    faults: list[tuple[float, str]] = field(default_factory=list)
    dead_processes: list[str] = field(default_factory=list)
    worst_replay_error: float = 0.0

    @property
    def batches(self) -> int:
        return sum(self.outcomes.values())

    def to_dict(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "batches": self.batches,
                "outcomes": dict(self.outcomes), "refused": len(self.refused),
                "refusals": self.refused[:10], "retried": self.retried,
                "replay_mismatches": self.replay_mismatches[:10],
                "errors": self.errors[:10],
                "worst_replay_error": self.worst_replay_error,
                "faults": [{"t": round(t, 2), "fault": f} for t, f in self.faults],
                "dead_processes": self.dead_processes}  # fmt: skip


def _poison(queue: str) -> list[bytes]:
    kwargs = {"batch": "poison", "index": 0, "model": "noop", "input_key": "none",
              "offset": 0, "nbytes": 4096, "dtype": "float32", "shape": [1, 32, 32],
              "output_key": "none", "inbox": "none", "ttl": 60.0}  # fmt: skip
    pickled = json.loads(task_envelope(INFER_TASK, kwargs, queue))
    pickled["content-type"] = "application/x-python-serialize"
    pickled["body"] = base64.b64encode(b"\x80\x04cos\nsystem\n.").decode()
    return [b"\xff not json", b"[1, 2]", b'{"properties": 7}', json.dumps(pickled).encode()]


class _Faults:
    """Injects one fault at a time into ``farm``."""

    def __init__(self, farm: LocalFarm, echo: Callable[[str], None]) -> None:
        self.farm = farm
        self.echo = echo
        self.collector = farm.start_collector("chaos")

    def inject(self, fault: str) -> None:
        farm = self.farm
        if fault in ("kill-celery", "kill-batch"):
            worker = farm.workers[0 if fault == "kill-celery" else 1]
            engine = psutil.Process(worker.pid).children()
            if engine:
                os.kill(engine[0].pid, signal.SIGKILL)  # the supervisor restarts it
        elif fault == "stop-worker":
            worker = farm.workers[2]
            worker.signal_group(signal.SIGSTOP)
            threading.Timer(2.0, worker.signal_group, (signal.SIGCONT,)).start()
        elif fault == "kill-collector":
            self.collector.kill()
            self.collector.wait(10)
            self.collector = farm.start_collector("chaos")
        elif fault == "restart-redis":
            assert farm.redis_server is not None
            farm.redis_server.restart()
        elif fault == "poison":
            client = redis.Redis.from_url(farm.settings.redis_url)
            for queue in QUEUES:
                client.lpush(queue, *_poison(queue))
        self.echo(f"fault: {fault}")


def _replay(result: BatchResult, x: np.ndarray, config: ChaosConfig, model: Any) -> float:
    """Largest relative difference between the answer and the codec's decode of the same
    workers' results, computed here."""
    import torch

    record = result.record
    codec = plan_codec(config.codec).codec(record.k, record.n, record.s)
    coded = codec.encode(x.astype(np.float32))
    with torch.inference_mode():
        outputs = model(torch.from_numpy(np.ascontiguousarray(coded))).numpy()
    workers = record.workers_used
    expected = codec.decode(outputs[workers], workers)
    assert result.predictions is not None
    scale = float(np.abs(expected).max()) or 1.0
    return float(np.abs(result.predictions - expected).max()) / scale


def run_chaos(
    config: ChaosConfig, settings: Settings, echo: Callable[[str], None] = print
) -> ChaosReport:
    """Run the load with faults for ``config.seconds``; returns what happened."""
    from codedfarm.models.digits import load_digits_split
    from codedfarm.models.registry import load_model

    for fault in config.faults:
        if fault not in FAULTS:
            from codedfarm.errors import ConfigError

            raise ConfigError(f"unknown fault {fault!r}; choose from {', '.join(FAULTS)}")
    model = load_model(config.model, settings.cache_dir)
    images = load_digits_split().test_x
    base = Settings(**{**asdict(settings), "visibility_timeout": 3.0, "key_ttl": 60.0})
    workers = [
        WorkerOptions(queues=(QUEUES[0],), engine="celery", concurrency=4,
                      preload=(config.model,)),
        WorkerOptions(queues=(QUEUES[1],), engine="batch", concurrency=16,
                      preload=(config.model,)),
        WorkerOptions(queues=(QUEUES[2],), engine="batch", concurrency=16,
                      preload=(config.model,)),
    ]  # fmt: skip
    report = ChaosReport(config)
    lock = threading.Lock()
    with LocalFarm(workers, settings=base) as farm:
        faults = _Faults(farm, echo)
        stop = threading.Event()
        spec = BatchSpec(model=config.model, codec=config.codec, n=config.n, s=config.s,
                         queues=QUEUES, deadline=config.deadline)  # fmt: skip

        def client_loop(index: int) -> None:
            rng = np.random.default_rng([config.seed, index])
            collector = "chaos" if index % 2 else ""
            with FarmClient(farm.settings, collector=collector, retries=3) as client:
                while not stop.is_set():
                    x = images[rng.choice(len(images), 4, replace=False)]
                    try:
                        result = client.submit(x, spec)
                    except FarmUnavailableError as exc:
                        with lock:
                            report.refused.append(str(exc))
                        time.sleep(0.2)
                        continue
                    error = 0.0
                    if result.predictions is not None:
                        error = _replay(result, x, config, model)
                    with lock:
                        report.outcomes[result.outcome] += 1
                        if result.predictions is None:
                            report.errors.append(f"{result.outcome}: {result.record.error}")
                        report.retried += result.record.retries > 0
                        report.worst_replay_error = max(report.worst_replay_error, error)
                        if error > 1e-3:
                            report.replay_mismatches.append(f"{result.record.batch}: {error:.2e}")
                    time.sleep(config.pause)

        threads = [threading.Thread(target=client_loop, args=(i,), daemon=True)
                   for i in range(config.clients)]  # fmt: skip
        start = time.monotonic()
        for thread in threads:
            thread.start()
        turn = 0
        while (elapsed := time.monotonic() - start) < config.seconds:
            time.sleep(min(config.every, max(0.0, config.seconds - elapsed)))
            if time.monotonic() - start >= config.seconds - 1.0:
                break
            fault = config.faults[turn % len(config.faults)]
            turn += 1
            faults.inject(fault)
            report.faults.append((time.monotonic() - start, fault))
        time.sleep(2.5)  # let the last fault heal (a stopped worker resumes)
        stop.set()
        for thread in threads:
            thread.join(config.deadline + 30)
        for worker in farm.workers:
            if not worker.alive() or not psutil.Process(worker.pid).children():
                report.dead_processes.append(worker.hostname)
        if faults.collector.poll() is not None:
            report.dead_processes.append("collector")
    return report
