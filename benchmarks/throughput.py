"""Sustained coded-task throughput on this machine, with a no-op model.

Run:  .venv/bin/python benchmarks/throughput.py [--seconds 20] [--clients 4]

A private Redis and worker processes with the no-op model; several client processes each
submit batches (k = 8, n = 24, berrut) back to back, collecting in-process, so many batches
are in flight at once. Reports coded tasks completed per second for Celery worker layouts
and batch-engine layouts (``codedfarm worker --engine batch``), all measured in this one
run, and the ratio of the best of each kind. Everything shares this machine's cores:
clients, collector loops, workers and Redis.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import time
from dataclasses import replace

import numpy as np

from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec
from codedfarm.local import LocalFarm
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

N, K = 24, 8


def client(settings: Settings, queues: tuple[str, ...], seconds: float, out: mp.Queue) -> None:
    x = np.random.default_rng(0).random((K, 1, 32, 32)).astype(np.float32)
    spec = BatchSpec(model="noop", codec="berrut", n=N, s=0, queues=queues, deadline=20.0)
    done = decoded = 0
    with FarmClient(settings) as farm:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            result = farm.submit(x, spec)
            done += 1
            decoded += result.outcome == "decoded"
    out.put((done, decoded))


def measure(layout: str, workers: list[WorkerOptions], clients: int, seconds: float) -> float:
    queues = tuple(dict.fromkeys(w.queues for w in workers))
    with LocalFarm(workers, settings=Settings(key_ttl=120)) as farm:
        settings = replace(farm.settings)
        warm: mp.Queue = mp.Queue()
        client(settings, queues, 1.0, warm)  # warm up
        out: mp.Queue = mp.Queue()
        procs = [mp.Process(target=client, args=(settings, queues, seconds, out))
                 for _ in range(clients)]  # fmt: skip
        start = time.monotonic()
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.monotonic() - start
        batches = decoded = 0
        for _ in procs:
            b, d = out.get()
            batches, decoded = batches + b, decoded + d
    rate = batches * N / wall
    print(f"{layout:34} {batches:7d} {decoded:7d} {rate:12.0f}", flush=True)
    return rate


GOAL = 1500.0  # coded tasks per second


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    args = parser.parse_args()
    print(f"{args.clients} client processes, {args.seconds:g} s each, n={N} coded tasks per batch")
    print(f"{'worker layout':34} {'batches':>7} {'decoded':>7} {'tasks/s':>12}")
    celery = {
        "celery: 2 x prefork(2)": [
            WorkerOptions(queues=("t0",), concurrency=2, preload=("noop",)),
            WorkerOptions(queues=("t1",), concurrency=2, preload=("noop",)),
        ],
        "celery: 3 x solo": [
            WorkerOptions(queues=(f"t{i}",), concurrency=1, pool="solo", preload=("noop",))
            for i in range(3)
        ],
        "celery: 2 x threads(4)": [
            WorkerOptions(queues=(f"t{i}",), concurrency=4, pool="threads", preload=("noop",))
            for i in range(2)
        ],
    }
    batch = {
        "batch: 1 x batch(64)": [
            WorkerOptions(queues=("t0",), concurrency=64, preload=("noop",), engine="batch")
        ],
        "batch: 2 x batch(32)": [
            WorkerOptions(queues=(f"t{i}",), concurrency=32, preload=("noop",), engine="batch")
            for i in range(2)
        ],
    }
    best_celery = max(measure(n, w, args.clients, args.seconds) for n, w in celery.items())
    best_batch = max(measure(n, w, args.clients, args.seconds) for n, w in batch.items())
    print(f"best celery layout: {best_celery:.0f} tasks/s; best batch engine: {best_batch:.0f}"
          f" tasks/s; ratio {best_batch / best_celery:.2f}")  # fmt: skip
    for name, rate in (("celery", best_celery), ("batch engine", best_batch)):
        verdict = "met" if rate >= GOAL else "missed"
        print(f"goal >= {GOAL:.0f} coded tasks/s, {name}: {verdict} ({rate / GOAL:.2f} x goal)")


if __name__ == "__main__":
    main()
