"""CPU per coded task on the worker side: Celery's own floor, the Celery engine, the batch engine.

Run:  .venv/bin/python benchmarks/worker_cost.py [--batches 200]

A private Redis; the queue is filled with ``--batches`` batches of 24 no-op tasks before
one worker starts, so the worker drains it alone, without clients competing for the CPU.
Measured for each worker, in this one run: tasks drained per second and CPU seconds per
task (the worker's processes, and Redis). The first row is the floor of any Celery
worker here: a bare Celery app whose task does nothing, with late acks, on the same
Redis transport.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import redis

from codedfarm.coordinator.dispatch import BatchSpec, Dispatcher
from codedfarm.local.redis_server import LocalRedis
from codedfarm.protocol import task_envelope
from codedfarm.settings import Settings

N = 24
WARM_UP = 240  # tasks a worker runs before the clock starts
CLIENT: redis.Redis
SERVER: psutil.Process
BARE_APP = """
import os
from celery import Celery
app = Celery("bare", broker=os.environ["BARE_URL"])
app.conf.update(task_serializer="json", accept_content=["json"], task_ignore_result=True,
                task_acks_late=True, worker_prefetch_multiplier=1,
                worker_hijack_root_logger=False, worker_send_task_events=False)
@app.task(name="bare.noop", ignore_result=True)
def noop(**kwargs):
    return None
"""


def cpu_seconds(procs: list[psutil.Process]) -> float:
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.Error:
            pass
    return total


def drain(
    name: str, argv: list[str], env: dict[str, str], queue: str, count: int, log: Path
) -> tuple[float, float]:
    """Start the worker; time the drain of the queue after its first ``WARM_UP`` tasks
    (imports, first forward pass); returns (tasks per second, worker CPU s per task)."""
    with open(log, "ab") as out:
        worker = subprocess.Popen(
            argv, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        while CLIENT.llen(queue) > count - WARM_UP:
            assert worker.poll() is None, log.read_text()[-2000:]
            time.sleep(0.002)
        root = psutil.Process(worker.pid)
        procs = [root, *root.children(recursive=True)]
        left, start = CLIENT.llen(queue), time.monotonic()
        cpu0, redis0 = cpu_seconds(procs), cpu_seconds([SERVER])
        while CLIENT.llen(queue) > 0 or CLIENT.zcard("unacked_index") > 0:
            time.sleep(0.002)
        wall = time.monotonic() - start
        cpu, redis_cpu = cpu_seconds(procs) - cpu0, cpu_seconds([SERVER]) - redis0
    finally:
        os.killpg(worker.pid, 9)
        worker.wait(10)
    rate, ms, redis_ms = left / wall, 1000 * cpu / left, 1000 * redis_cpu / left
    print(f"{name:32} {rate:10.0f} {ms:12.3f} {redis_ms:12.3f}", flush=True)
    return rate, cpu / left


def main() -> None:
    global CLIENT, SERVER
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    count = args.batches * N
    tmp = Path(tempfile.mkdtemp(prefix="codedfarm-cost-"))
    (tmp / "bare_app.py").write_text(BARE_APP)
    print(f"{count} tasks per row, drained by one worker process")
    print(f"{'worker':32} {'tasks/s':>10} {'CPU ms/task':>12} {'Redis ms/task':>12}")
    with LocalRedis() as server:
        CLIENT = client = redis.Redis.from_url(server.url)
        assert server.process is not None
        SERVER = psutil.Process(server.process.pid)
        settings = Settings(redis_url=server.url, key_ttl=600.0)
        env = {**os.environ, "CODEDFARM_REDIS_URL": server.url, "BARE_URL": server.url,
               "PYTHONPATH": str(tmp), "CODEDFARM_KEY_TTL": "600"}  # fmt: skip
        # the floor: any Celery worker's per-message work, the task itself doing nothing
        for i in range(0, count, 500):
            client.lpush("bare", *[task_envelope("bare.noop", {"i": j}, "bare")
                                   for j in range(i, min(count, i + 500))])  # fmt: skip
        bare = [sys.executable, "-m", "celery", "-A", "bare_app", "worker", "-P", "solo", "-Q",
                "bare", "-l", "warning", "--without-gossip", "--without-mingle",
                "--without-heartbeat"]  # fmt: skip
        floor_name = "bare Celery no-op task (floor)"
        rows = {floor_name: drain(floor_name, bare, env, "bare", count, tmp / "bare.log")}
        dispatcher = Dispatcher(settings, client)
        x = np.random.default_rng(0).random((8, 1, 32, 32)).astype(np.float32)
        spec = BatchSpec(model="noop", codec="berrut", n=N, queues=("cost",), deadline=500.0)
        workers = {
            "codedfarm --engine celery (solo)": ["--engine", "celery", "--pool", "solo",
                                                 "--concurrency", "1"],
            "codedfarm --engine batch (64)": ["--engine", "batch", "--concurrency", "64"],
        }  # fmt: skip
        for name, extra in workers.items():
            for _ in range(args.batches):
                dispatcher.dispatch(dispatcher.prepare(x, spec), "cf:inbox:cost")
            argv = [sys.executable, "-m", "codedfarm", "worker", "--queues", "cost",
                    "--preload", "noop", *extra]  # fmt: skip
            rows[name] = drain(name, argv, env, "cost", count, tmp / "worker.log")
            client.delete("cf:inbox:cost")
    floor = rows[floor_name]
    batch = rows["codedfarm --engine batch (64)"]
    celery = rows["codedfarm --engine celery (solo)"]
    print(f"batch engine / Celery engine, tasks per second: {batch[0] / celery[0]:.1f}")
    print(f"Celery floor CPU per task / batch engine CPU per task: {floor[1] / batch[1]:.1f}")
    print(
        f"CPU-bound ceiling on 2 cores, worker side only: Celery floor "
        f"{2 / floor[1]:.0f} tasks/s, batch engine {2 / batch[1]:.0f} tasks/s"
    )


if __name__ == "__main__":
    main()
