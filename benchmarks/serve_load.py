"""An open-loop load on `codedfarm serve` in front of a local farm, per codec.

Run:  .venv/bin/python benchmarks/serve_load.py [--rate 100] [--seconds 60]
      [--codec spline --codec berrut ...] [--stragglers none,fixed]

For every (codec, stragglers) pair: a private Redis and 2 batch-engine workers of 40 slots
(LeNet5), a fresh `codedfarm serve` (groups of K=8 single-image requests, a queue delay of
``--max-queue-delay`` ms, ``--groups-in-flight``, N=24, S=4; uncoded: N=K), then
`codedfarm loadgen` (Poisson arrivals, keep-alive) at ``--rate`` requests/s for
``--seconds``. Every task sleeps 50 ms of simulated compute;
``fixed`` makes 4 random tasks of each group sleep 500 ms (10x) instead. Prints per-request
p50/p95/p99/max, errors and the achieved rate, one row per pair.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from codedfarm.local import LocalFarm
from codedfarm.local.loadgen import LoadConfig, run_load
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

STRAGGLE = {
    "none": "exp:shift=0.05,rate=1e9",  # every task: 50 ms of simulated compute
    "fixed": "exp:shift=0.05,rate=1e9+fixed:S=4,delay=0.45",  # 4 of them: 500 ms
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_args(codec: str, port: int, stragglers: str, delay_ms: float = 5.0,
               in_flight: int = 8) -> list[str]:  # fmt: skip
    coded = ["-n", "24", "-s", "4"] if codec != "uncoded" else ["-n", "8", "-s", "0"]
    straggle = STRAGGLE[stragglers]
    if codec == "uncoded" and stragglers == "fixed":  # the same 1 in 6 slow tasks, of 8
        straggle = "exp:shift=0.05,rate=1e9+fixed:S=1,delay=0.45"
    return [sys.executable, "-m", "codedfarm", "serve", "--port", str(port), "-Q", "sl0,sl1",
            "--group-size", "8", "--max-queue-delay", str(delay_ms), "--codec", codec, *coded,
            "--straggle", straggle, "--max-queue", "2048", "--groups-in-flight",
            str(in_flight)]  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--codec", action="append", default=None)
    parser.add_argument("--stragglers", default="none,fixed")
    parser.add_argument("--max-queue-delay", type=float, default=5.0, help="milliseconds")
    parser.add_argument("--groups-in-flight", type=int, default=8)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    codecs = args.codec or ["spline", "berrut", "uncoded"]
    workers = [WorkerOptions((f"sl{i}",), concurrency=40, preload=("lenet5",)) for i in range(2)]
    rows = []
    with LocalFarm(workers, settings=Settings(key_prefix="sl")) as farm:
        for stragglers in args.stragglers.split(","):
            for codec in codecs:
                port = free_port()
                argv = serve_args(codec, port, stragglers, args.max_queue_delay,
                                  args.groups_in_flight)  # fmt: skip
                server = subprocess.Popen(argv, env=farm.env())
                try:
                    for _ in range(300):
                        try:
                            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready",
                                                   timeout=1).close()  # fmt: skip
                            break
                        except OSError:
                            time.sleep(0.1)
                    config = LoadConfig(url=f"http://127.0.0.1:{port}", model="lenet5",
                                        rate=args.rate, seconds=args.seconds)  # fmt: skip
                    run_load(LoadConfig(url=config.url, rate=20, seconds=1))  # warm up
                    report = run_load(config)
                finally:
                    server.terminate()
                    server.wait(60)
                lat = report.latency_ms
                row = {"stragglers": stragglers, "codec": codec, "sent": report.sent,
                       "ok": report.ok, "errors": report.errors,
                       "achieved_rate": report.achieved_rate, **lat}  # fmt: skip
                rows.append(row)
                print(json.dumps(row), flush=True)
    print(
        f"\n{args.rate:g} requests/s for {args.seconds:g} s, single LeNet5 images, K=8, "
        f"queue delay {args.max_queue_delay:g} ms, {args.groups_in_flight} groups in flight\n"
    )
    print("| stragglers | codec | p50 ms | p95 ms | p99 ms | max ms | ok/sent | errors |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stragglers']} | {r['codec']} | {r.get('p50', 0):.1f} | "
              f"{r.get('p95', 0):.1f} | {r.get('p99', 0):.1f} | {r.get('max', 0):.1f} | "
              f"{r['ok']}/{r['sent']} | {r['errors'] or 'none'} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
