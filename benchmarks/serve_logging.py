"""What logging costs the server: the access log, and debug lines with request ids.

Run:  .venv/bin/python benchmarks/serve_logging.py [--rate 150] [--seconds 20] [--repeats 2]

A private Redis and two batch-engine workers (lenet5, queues a and b) behind a fresh
``codedfarm serve`` (its defaults) per configuration: ``info`` (the default: no line per
request), ``info --access-log`` (a line per request), ``debug --access-log`` (also a line
per coding group in the server, per batch and per task), each in text and JSON. Open-loop
Poisson single-row requests (``codedfarm loadgen``'s engine, in this process) at ``--rate``
for ``--seconds``; configurations alternate ``--repeats`` times so drift falls on all.
Per configuration: the server's CPU-seconds per answered request (utime+stime of its
process), the workers' together, and latency p50/p99; ratios to ``info`` in the same run.
Output streams go to files (not a pipe this process would have to drain).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from codedfarm.local import LocalFarm
from codedfarm.local.loadgen import LoadConfig, run_load
from codedfarm.local.redis_server import free_port
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

CONFIGS: dict[str, tuple[list[str], list[str]]] = {  # name: (global flags, serve flags)
    "info": ([], []),
    "info+access": ([], ["--access-log"]),
    "info+access json": (["--log-format", "json"], ["--access-log"]),
    "debug+access": (["--log-level", "debug"], ["--access-log"]),
    "debug+access json": (["--log-level", "debug", "--log-format", "json"], ["--access-log"]),
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of ``pid`` and its reaped children, seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def tree_cpu(pid: int) -> float:
    import psutil

    root = psutil.Process(pid)
    return sum(cpu_seconds(p.pid) for p in [root, *root.children(recursive=True)])


def run(farm: LocalFarm, name: str, rate: float, seconds: float, logs: Path) -> dict[str, float]:
    global_flags, serve_flags = CONFIGS[name]
    port = free_port()
    env = dict(farm.env())
    for variable in ("CODEDFARM_LOG_LEVEL", "CODEDFARM_LOG_FORMAT"):
        env.pop(variable, None)
    log = logs / f"serve-{name.replace(' ', '-')}-{port}.log"
    with open(log, "wb") as out:
        argv = [sys.executable, "-m", "codedfarm", *global_flags, "serve", "--port", str(port),
                "-Q", "a", "-Q", "b", *serve_flags]  # fmt: skip
        server = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        end = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/v2/health/ready", timeout=1).close()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > end:
                    raise SystemExit(f"no server:\n{log.read_text()[-2000:]}") from None
                time.sleep(0.1)
        run_load(LoadConfig(url=url, rate=rate, seconds=2.0, seed=1))  # warm up
        workers = sum(tree_cpu(w.pid) for w in farm.workers)
        before = cpu_seconds(server.pid)
        report = run_load(LoadConfig(url=url, rate=rate, seconds=seconds, seed=2))
        server_cpu = cpu_seconds(server.pid) - before
        workers = sum(tree_cpu(w.pid) for w in farm.workers) - workers
    finally:
        server.terminate()
        server.wait(30)
    ok = max(report.ok, 1)
    return {"server_ms": server_cpu / ok * 1e3, "workers_ms": workers / ok * 1e3,
            "p50": report.latency_ms.get("p50", float("nan")),
            "p99": report.latency_ms.get("p99", float("nan")),
            "errors": float(sum(report.errors.values())), "ok": float(report.ok),
            "log_bytes": float(log.stat().st_size)}  # fmt: skip


def line_cost_us(fmt: str, lines: int = 20000) -> float:
    """Microseconds a worker's debug line per task costs (:func:`log_task`, formatted and
    written to /dev/null), in ``fmt``."""
    import logging

    from codedfarm.logs import LogConfig, configure_logging
    from codedfarm.protocol import TaskMessage
    from codedfarm.worker.core import log_task

    msg = TaskMessage(batch="5f1c" * 8, index=3, model="lenet5", input_key="k", offset=0,
                      nbytes=4, dtype="float32", shape=[1], output_key="o", inbox="i", ttl=60,
                      requests=[f"req-{i}" for i in range(8)])  # fmt: skip
    saved = sys.stderr
    with open(os.devnull, "w") as sink:
        sys.stderr = sink
        try:
            configure_logging(LogConfig(level="debug", format=fmt, role="worker"))
            start = time.perf_counter()
            for _ in range(lines):
                log_task(msg, "ok", 0.004)
            elapsed = time.perf_counter() - start
        finally:
            sys.stderr = saved
            configure_logging(LogConfig(level="info", role="benchmark"))
            logging.getLogger("codedfarm").setLevel(logging.INFO)
    return elapsed / lines * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--configs", default=",".join(CONFIGS))
    args = parser.parse_args()
    names = args.configs.split(",")
    for fmt in ("text", "json"):
        print(f"a worker's debug line per task ({fmt}): {line_cost_us(fmt):.1f} us",
              file=sys.stderr)  # fmt: skip
    logs = Path(tempfile.mkdtemp(prefix="serve-logging-"))
    base = Settings(key_prefix="logbench", key_ttl=60.0, deadline=10.0)
    workers = [WorkerOptions(queues=(q,), preload=("lenet5",)) for q in ("a", "b")]
    results: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    with LocalFarm(workers, settings=base, log_dir=logs) as farm:
        for repeat in range(args.repeats):
            for name in names:
                result = run(farm, name, args.rate, args.seconds, logs)
                results[name].append(result)
                print(f"[{repeat + 1}/{args.repeats}] {name:18s} server {result['server_ms']:.3f}"
                      f" ms CPU/request, workers {result['workers_ms']:.3f}, p50 "
                      f"{result['p50']:.1f} ms, p99 {result['p99']:.1f} ms, errors "
                      f"{result['errors']:.0f}", file=sys.stderr, flush=True)  # fmt: skip
    mean = {name: {key: sum(r[key] for r in runs) / len(runs) for key in runs[0]}
            for name, runs in results.items()}  # fmt: skip
    base_row = mean[names[0]]
    print(f"\nrate {args.rate:g}/s, {args.seconds:g} s x {args.repeats}; ratios to {names[0]}")
    print(
        f"{'config':18s} {'server CPU ms/req':>17s} {'ratio':>6s} {'workers ms/req':>15s} "
        f"{'ratio':>6s} {'p50 ms':>7s} {'p99 ms':>7s} {'log KiB':>8s} {'errors':>6s}"
    )
    for name in names:
        row = mean[name]
        print(f"{name:18s} {row['server_ms']:17.3f} {row['server_ms'] / base_row['server_ms']:6.2f}"
              f" {row['workers_ms']:15.3f} {row['workers_ms'] / base_row['workers_ms']:6.2f}"
              f" {row['p50']:7.1f} {row['p99']:7.1f} {row['log_bytes'] / 1024:8.0f}"
              f" {row['errors']:6.0f}")  # fmt: skip


if __name__ == "__main__":
    main()
