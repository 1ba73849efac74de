"""The obvious alternative to the farm: coded serving with Ray tasks and ``ray.wait``.

Run:  .venv/bin/python benchmarks/peer_ray.py [--batches 100] [--stragglers none,fixed]
      [--schemes berrut,spline] [--seed 0] [--out peer_ray.json]

The same workload as ``codedfarm bench`` (``codedfarm.local.bench``): K=8 digit images per
batch picked with the same seed, N=24 coded tasks, S=4, the same per-batch straggler draws
(``_worker_fates``; under ``fixed`` 4 random tasks of 24 take 10x the 50 ms compute). The
driver encodes with the farm's codec, submits one Ray task per coded input (the task sleeps
its fate's delay, then runs the trained model's forward on its row), takes the first N−S
results with ``ray.wait(refs, num_returns=n - s)``, decodes them, and ``ray.cancel``s
(force=False: interrupts the sleep) the tasks still running 50 ms later, as a farm straggler
gives its slot back within its 50 ms poll. ``uncoded`` sends K tasks and waits for all K.
Ray gets N + K one-CPU slots (``--slots``; the farm's bench has 40 thread slots in 2
processes, but a Ray slot is a process with its own torch, ~350 MB), all started and warmed
before timing (~1-1.5 min on 2 cores). Latency is end to end, from before the encode to
after the decode, as the farm's ``timings.end_to_end``. Printed per (stragglers, scheme):
p50/p95/p99/max/mean ms, batches decoded, and p50 minus the simulated compute.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from codedfarm.codecs import Codec, plan_codec
from codedfarm.errors import ConfigError
from codedfarm.local.bench import STRAGGLER_MODELS, BenchConfig, _worker_fates
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate

__all__ = ["PEER_SCHEMES", "markdown_table", "run_ray_peer"]

PEER_SCHEMES = ("uncoded", "mds", "berrut", "spline")
CANCEL_GRACE_S = 0.05  # a farm worker notices a decoded batch within 50 ms (CANCEL_POLL_S)
INSTALL_HINT = "install the bench extra: pip install 'codedfarm[bench]'"
Array = npt.NDArray[np.float32]
_MODELS: dict[str, Any] = {}  # per Ray worker process: models loaded by its first task


def _infer(model: str, cache_dir: str, x: Array, delay: float, fail: bool) -> tuple[Array, int]:
    """One Ray task: sleep the fate's delay (the simulated compute), then the real forward;
    returns the output row and this worker's pid (the warm-up counts processes with it)."""
    time.sleep(delay)
    if fail:
        raise RuntimeError("injected failure")
    import torch

    module = _MODELS.get(model)
    if module is None:
        from codedfarm.models.registry import load_model

        torch.set_num_threads(1)
        module = _MODELS[model] = load_model(model, Path(cache_dir), train=False)
    with torch.inference_mode():
        out: Array = module(torch.from_numpy(np.array(x[None]))).numpy()[0]
    return out, os.getpid()


def _serve(ray: Any, task: Any, codec: Codec, wait_for: int, model: str, cache: str,
           x: Array, plan: list[TaskFate], deadline: float) -> tuple[float, bool]:  # fmt: skip
    """One batch: encode, N tasks, wait for the first ``wait_for``, decode, cancel the rest."""
    start = time.perf_counter()
    coded = codec.encode(x)
    refs = [task.remote(model, cache, coded[j], plan[j].delay, plan[j].fail)
            for j in range(codec.n)]  # fmt: skip
    index = {ref: j for j, ref in enumerate(refs)}
    results: dict[int, Array] = {}
    pending = refs
    while len(results) < wait_for and pending:  # one round unless a task failed
        left = start + deadline - time.perf_counter()
        if left <= 0:
            break
        want = min(wait_for - len(results), len(pending))
        ready, pending = ray.wait(pending, num_returns=want, timeout=left)
        try:
            results.update((index[r], y) for r, (y, _) in zip(ready, ray.get(ready), strict=True))
        except ray.exceptions.RayError:
            for ref in ready:
                with contextlib.suppress(ray.exceptions.RayError):
                    results[index[ref]] = ray.get(ref)[0]
    decoded = len(results) >= codec.min_results
    if decoded:
        workers = sorted(results)
        codec.decode_report(np.stack([results[w] for w in workers]), workers)
    elapsed = time.perf_counter() - start
    if pending:  # cancel only tasks still running a poll period (as the farm's) later:
        # cancelling a task as it completes can abort the driver (Ray 2.60, ray#54846)
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=CANCEL_GRACE_S)
    for ref in pending:
        ray.cancel(ref, force=False)
    return elapsed, decoded


def _row(config: BenchConfig, model: str, scheme: str, lat: list[float], ok: int) -> dict[str, Any]:
    def ms(q: float) -> float:
        return float(np.quantile(lat, q)) * 1e3

    return {
        "engine": "ray",
        "stragglers": model,
        "scheme": scheme,
        "p50_ms": ms(0.5),
        "p95_ms": ms(0.95),
        "p99_ms": ms(0.99),
        "max_ms": max(lat) * 1e3,
        "mean_ms": statistics.fmean(lat) * 1e3,
        "decoded": f"{ok}/{len(lat)}",
        "overhead_p50_ms": ms(0.5) - config.compute * 1e3,
    }


def run_ray_peer(
    config: BenchConfig,
    *,
    settings: Settings | None = None,
    slots: int | None = None,
    echo: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run ``config.schemes`` (of :data:`PEER_SCHEMES`) under ``config.stragglers`` on Ray
    tasks, with the farm bench's inputs and straggler draws; one row per (stragglers, scheme).

    ``slots``: Ray CPUs, one per task (default N + K: a batch's N tasks, and K more for
    cancelled stragglers still winding down; each is a worker process). Starts Ray
    unless it is already initialized (then uses it, and leaves it running). Raises
    ModuleNotFoundError without ray, :class:`ConfigError` for a scheme Ray does not serve."""
    config.validate()
    unknown = sorted(set(config.schemes) - set(PEER_SCHEMES))
    if unknown:
        raise ConfigError(f"the Ray peer serves {', '.join(PEER_SCHEMES)}; not {unknown}")
    import ray

    from codedfarm.models.digits import load_digits_split
    from codedfarm.models.registry import load_model
    from codedfarm.models.training import trained_lenet5

    cache_dir = (settings or Settings()).cache_dir
    trained_lenet5(cache_dir)
    if "mds" in config.schemes:
        load_model("linear", cache_dir)  # trains and caches it once, before the workers
    data = load_digits_split()
    rng = np.random.default_rng(config.seed)
    inputs = [data.test_x[rng.choice(len(data.test_x), config.k, replace=False)]
              for _ in range(config.batches)]  # fmt: skip
    slots = slots or config.n + config.k
    own = not ray.is_initialized()
    if own:
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        # start the slots' workers at once (default: 2 at a time on 2 cores, with warnings)
        os.environ.setdefault("RAY_worker_maximum_startup_concurrency", str(slots))
        started = time.perf_counter()
        ray.init(num_cpus=slots, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)  # fmt: skip
        echo(f"ray.init with {slots} CPUs: {time.perf_counter() - started:.1f} s")
    if __name__ != "__main__":  # imported: ship _infer by value, workers cannot import us
        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    task = ray.remote(num_cpus=1, max_retries=0)(_infer)
    cache = str(cache_dir)
    rows: list[dict[str, Any]] = []
    try:
        started = time.perf_counter()
        names = sorted({"linear" if s == "mds" else "lenet5" for s in config.schemes})
        for attempt in range(12):  # until one round of 1 s tasks runs on `slots` processes
            name = names[attempt % len(names)]
            got = ray.get([task.remote(name, cache, inputs[0][0], 1.0, False)
                           for _ in range(slots)])  # fmt: skip
            if len({pid for _, pid in got}) >= slots and attempt >= len(names) - 1:
                break
        warm = plan_codec("berrut").codec(config.k, config.n, config.s)
        for x in inputs[:3]:  # as run_bench: three warm-up batches
            _serve(ray, task, warm, config.n - config.s, "lenet5", cache, x,
                   [TaskFate(0.0)] * config.n, config.deadline)  # fmt: skip
        echo(f"warmed {slots} Ray workers up: {time.perf_counter() - started:.1f} s")
        for model in config.stragglers:
            draw = np.random.default_rng([config.seed, STRAGGLER_MODELS.index(model)])
            persistent = set(draw.choice(config.n, config.s, replace=False).tolist())
            plans = [_worker_fates(config, model, draw, persistent) for _ in inputs]
            for scheme in config.schemes:
                echo(f"  {model:9} {scheme}")
                if scheme == "uncoded":
                    codec, wait_for = plan_codec("uncoded").codec(config.k, config.k), config.k
                else:
                    codec = plan_codec(scheme).codec(config.k, config.n, config.s)
                    wait_for = config.n - config.s
                name = "linear" if scheme == "mds" else "lenet5"
                lat, ok = [], 0
                for x, plan in zip(inputs, plans, strict=True):
                    elapsed, decoded = _serve(ray, task, codec, wait_for, name, cache, x, plan,
                                              config.deadline)  # fmt: skip
                    lat.append(elapsed)
                    ok += decoded
                rows.append(_row(config, model, scheme, lat, ok))
    finally:
        if own:
            ray.shutdown()
    return rows


def markdown_table(rows: list[dict[str, Any]], config: BenchConfig) -> str:
    lines = [
        f"Ray tasks + ray.wait: K={config.k}, N={config.n}, S={config.s}, {config.batches} "
        f"batches per row, compute {config.compute * 1e3:g} ms per task, stragglers "
        f"{config.slow_factor:g}x compute",
        "",
        "| stragglers | scheme | p50 ms | p95 ms | p99 ms | max ms | mean ms | decoded "
        "| overhead over compute at p50 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['stragglers']} | {r['scheme']} | {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['max_ms']:.1f} | {r['mean_ms']:.1f} | {r['decoded']} | "
            f"{r['overhead_p50_ms']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--stragglers", default="none,fixed", help="comma-separated models")
    parser.add_argument("--schemes", default="berrut,spline", help=", ".join(PEER_SCHEMES))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--slots", type=int, default=None, help="Ray CPUs (default N+K)")
    parser.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = parser.parse_args(argv)
    if importlib.util.find_spec("ray") is None:
        print(INSTALL_HINT, file=sys.stderr)
        return 2
    try:
        config = BenchConfig(
            batches=args.batches,
            stragglers=tuple(args.stragglers.split(",")),
            schemes=tuple(args.schemes.split(",")),
            seed=args.seed,
        )
        rows = run_ray_peer(config, slots=args.slots)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(markdown_table(rows, config), end="")
    if args.out:
        report = {"config": asdict(config), "slots": args.slots, "rows": rows}
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
