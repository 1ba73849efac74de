"""Farm data-path costs on a local farm (private Redis, real worker processes).

Run:  .venv/bin/python benchmarks/farm.py [--batches 60]

1. Dispatch cost per coded task, N = 24 and N = 100: the farm's dispatcher (inputs,
   registration and N hand-built task messages in one pipeline) against Celery's
   default ``send_task`` per task and kombu's batched producer, measured in one run.
2. Farm overhead at N = 24, S = 4 (LeNet5, k = 8) per codec: end-to-end minus the moment
   the (N−S)-th worker result was written, median and p90 over the batches.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import redis

from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec, Dispatcher
from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import LocalRedis
from codedfarm.models.digits import load_digits_split
from codedfarm.protocol import INFER_TASK, Keys, task_envelope
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions
from codedfarm.worker.celery_engine import make_celery


def dispatch_costs(repeats: int) -> None:
    with LocalRedis() as server:
        settings = Settings(redis_url=server.url, queues=("bench-null",), key_ttl=120)
        client = redis.Redis.from_url(server.url)
        dispatcher = Dispatcher(settings, client)
        app = make_celery(settings)
        x = load_digits_split().test_x[:8]
        inbox = Keys(settings.key_prefix).inbox("bench")
        print("dispatch cost per coded task (ms), median over batches:")
        print(f"{'N':>5} {'codedfarm':>10} {'send_task':>10} {'kombu batch':>12} {'speedup':>8}")
        for n in (24, 100):
            prepared = dispatcher.prepare(x, BatchSpec(model="lenet5", codec="berrut", n=n))
            ours = []
            for _ in range(repeats):
                ours.append(dispatcher.dispatch(prepared, inbox) / n)
                client.delete("bench-null", inbox)
            kwargs = {"batch": prepared.batch, "index": 0, "model": "lenet5"}

            def send_task(n: int = n, kwargs: dict[str, object] = kwargs) -> None:
                for j in range(n):
                    app.send_task(INFER_TASK, kwargs={**kwargs, "index": j}, queue="bench-null")

            def kombu_batch(n: int = n, kwargs: dict[str, object] = kwargs) -> None:
                with app.producer_or_acquire() as producer, producer.batch():
                    for j in range(n):
                        app.send_task(
                            INFER_TASK,
                            kwargs={**kwargs, "index": j},
                            queue="bench-null",
                            producer=producer,
                        )

            costs = {}
            for name, fn in (("send_task", send_task), ("kombu", kombu_batch)):
                samples = []
                for _ in range(max(3, repeats // 5)):
                    start = time.perf_counter()
                    fn()
                    samples.append((time.perf_counter() - start) / n)
                    client.delete("bench-null")
                costs[name] = statistics.median(samples)
            mine = statistics.median(ours)
            print(
                f"{n:5d} {mine * 1e3:10.4f} {costs['send_task'] * 1e3:10.4f} "
                f"{costs['kombu'] * 1e3:12.4f} {costs['send_task'] / mine:7.1f}x"
            )
        envelope_s = timed_envelope()
        print(f"(building one task message: {envelope_s * 1e6:.1f} us)")


def timed_envelope() -> float:
    kwargs = {"batch": "b" * 32, "index": 7, "model": "lenet5", "input_key": "cf:b:x:in"}
    start = time.perf_counter()
    for _ in range(2000):
        task_envelope(INFER_TASK, kwargs, "gpu0")
    return (time.perf_counter() - start) / 2000


CODECS = ("berrut", "spline:lam_enc=0,lam_dec=1e-4", "spline:lam_dec=auto", "mds")


def farm_overhead(batches: int) -> None:
    workers = [
        WorkerOptions(queues=("gpu0",), concurrency=12, preload=("lenet5",)),
        WorkerOptions(queues=("gpu1",), concurrency=12, preload=("lenet5",)),
    ]
    x = load_digits_split().test_x[:8]
    print(f"\nfarm overhead, N=24 S=4 k=8, LeNet5, {batches} batches per codec (ms):")
    print(f"{'codec':32} {'overhead p50':>12} {'p90':>7} {'end-to-end p50':>15} {'decode p50':>11}")
    with (
        LocalFarm(workers, settings=Settings(key_ttl=120)) as farm,
        FarmClient(farm.settings) as client,
    ):
        for codec in CODECS:
            spec = BatchSpec(model="lenet5", codec=codec, n=24, s=4, queues=("gpu0", "gpu1"))
            for _ in range(5):  # warm up every pool child
                client.submit(x, spec)
            overheads, e2e, decode = [], [], []
            for _ in range(batches):
                result = client.submit(x, spec)
                t = result.record.timings
                assert result.outcome == "decoded" and t.overhead is not None
                overheads.append(t.overhead)
                e2e.append(t.end_to_end)
                decode.append(t.decode)
            p90 = statistics.quantiles(overheads, n=10)[-1]
            print(
                f"{codec:32} {statistics.median(overheads) * 1e3:12.2f} {p90 * 1e3:7.2f} "
                f"{statistics.median(e2e) * 1e3:15.2f} {statistics.median(decode) * 1e3:11.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()
    np.set_printoptions(precision=3)
    dispatch_costs(args.repeats)
    farm_overhead(args.batches)


if __name__ == "__main__":
    main()
