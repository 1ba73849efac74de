"""An open-loop load on `codedfarm serve` in front of a local farm, per codec and rate.

Run:  .venv/bin/python benchmarks/serve_load.py [--rate 100 ...] [--seconds 60]
      [--codec spline --codec berrut ...] [--stragglers none,fixed] [--capacity]

For every (stragglers, codec) pair: a fresh `codedfarm serve` (groups of K=8 single-image
requests, a queue delay of ``--max-queue-delay`` ms, ``--groups-in-flight``; N=24, S=4;
uncoded N=K; replication N=24, three copies, decoding at the first copy of each input) in
front of one private Redis and 2 batch-engine workers of 40 slots (LeNet5), then
`codedfarm loadgen` (Poisson arrivals, keep-alive, the same arrival times for every pair) at
each ``--rate`` requests/s for ``--seconds``. Every task sleeps 50 ms of simulated
compute; ``fixed`` makes 4 tasks of each group's 24 (1 of uncoded's 8) sleep 500 ms (10x)
instead, drawn with the server's ``--straggle-seed``: group i of every run has the same
draw. Prints per-request p50/p95/p99/max, errors and the achieved rate, one row per run,
then the ratios the serving issue asks for.

``--capacity``: the rates are a search, in the order given. The first is the light load;
the search stops at the first rate whose p99 is over twice the light-load p99 or that
has errors, and the capacity is the highest rate before it.
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
from typing import Any

from codedfarm.local import LocalFarm
from codedfarm.local.loadgen import LoadConfig, run_load
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

COMPUTE = "exp:shift=0.05,rate=1e9"  # every task: 50 ms of simulated compute
SLOW = {"uncoded": "fixed:S=1,delay=0.45"}  # the others: 4 of 24 tasks take 500 ms
SLOW_CODED = "fixed:S=4,delay=0.45"
CODE = {"uncoded": ["-n", "8", "-s", "0"]}  # the others: N=24, S=4


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def serve_args(codec: str, port: int, stragglers: str, args: argparse.Namespace) -> list[str]:
    straggle = COMPUTE
    if stragglers == "fixed":
        straggle += "+" + SLOW.get(codec, SLOW_CODED)
    return [sys.executable, "-m", "codedfarm", "serve", "--port", str(port), "-Q", "sl0,sl1",
            "--group-size", "8", "--max-queue-delay", str(args.max_queue_delay),
            "--codec", codec, *CODE.get(codec, ["-n", "24", "-s", "4"]),
            "--straggle", straggle, "--straggle-seed", str(args.straggle_seed),
            "--max-queue", "4096", "--groups-in-flight", str(args.groups_in_flight)]  # fmt: skip


def wait_ready(port: int) -> None:
    for _ in range(300):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server on port {port} never became ready")


def run_pair(farm: LocalFarm, codec: str, stragglers: str,
             args: argparse.Namespace) -> list[dict[str, Any]]:  # fmt: skip
    rows: list[dict[str, Any]] = []
    for rate in args.rate:
        port = free_port()  # a fresh server per run: no state carries over
        server = subprocess.Popen(serve_args(codec, port, stragglers, args), env=farm.env())
        try:
            wait_ready(port)
            url = f"http://127.0.0.1:{port}"
            run_load(LoadConfig(url=url, rate=20, seconds=1, seed=1))  # warm up
            report = run_load(LoadConfig(url=url, model="lenet5", rate=rate,
                                         seconds=args.seconds))  # fmt: skip
        finally:
            server.terminate()
            server.wait(60)
        row = {"stragglers": stragglers, "codec": codec, "rate": rate, "sent": report.sent,
               "ok": report.ok, "errors": report.errors,
               "achieved_rate": report.achieved_rate, **report.latency_ms}  # fmt: skip
        rows.append(row)
        print(json.dumps(row), flush=True)
        if (
            args.capacity
            and len(rows) > 1
            and (row["errors"] or row.get("p99", 0) > 2 * rows[0].get("p99", 0))
        ):
            break
    return rows


def capacity(rows: list[dict[str, Any]]) -> float | None:
    """The highest rate before the first that broke the 2x-p99 or no-error rule."""
    light = rows[0].get("p99", 0)
    best = None
    for row in rows:
        if row["errors"] or row.get("p99", 0) > 2 * light:
            break
        best = row["rate"]
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", default=None)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--codec", action="append", default=None)
    parser.add_argument("--stragglers", default="none,fixed")
    parser.add_argument("--max-queue-delay", type=float, default=20.0, help="milliseconds")
    parser.add_argument("--groups-in-flight", type=int, default=16)
    parser.add_argument("--straggle-seed", type=int, default=0)
    parser.add_argument("--capacity", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.rate = args.rate or [100.0]
    codecs = args.codec or ["spline", "berrut", "uncoded", "replication"]
    workers = [WorkerOptions((f"sl{i}",), concurrency=40, preload=("lenet5",)) for i in range(2)]
    rows: list[dict[str, Any]] = []
    with LocalFarm(workers, settings=Settings(key_prefix="sl")) as farm:
        for stragglers in args.stragglers.split(","):
            for codec in codecs:
                rows += run_pair(farm, codec, stragglers, args)
    print(
        f"\n{args.seconds:g} s per run, single LeNet5 images, K=8, queue delay "
        f"{args.max_queue_delay:g} ms, {args.groups_in_flight} groups in flight\n"
    )
    print("| stragglers | codec | rate /s | p50 ms | p95 ms | p99 ms | max ms | ok/sent | errors |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['stragglers']} | {r['codec']} | {r['rate']:g} | {r.get('p50', 0):.1f} | "
              f"{r.get('p95', 0):.1f} | {r.get('p99', 0):.1f} | {r.get('max', 0):.1f} | "
              f"{r['ok']}/{r['sent']} | {r['errors'] or 'none'} |")  # fmt: skip
    p99 = {(r["stragglers"], r["codec"], r["rate"]): r.get("p99") for r in rows}
    print()
    for rate in args.rate if not args.capacity else []:
        for codec in codecs:
            fixed, none = p99.get(("fixed", codec, rate)), p99.get(("none", codec, rate))
            if fixed and none:
                print(f"{codec} at {rate:g}/s: p99 with stragglers / without = "
                      f"{fixed / none:.2f} (target <= 1.2 for coded)")  # fmt: skip
        base = p99.get(("fixed", "uncoded", rate))
        for codec in codecs:
            own = p99.get(("fixed", codec, rate))
            if base and own and codec != "uncoded":
                print(f"uncoded p99 / {codec} p99 with stragglers at {rate:g}/s = "
                      f"{base / own:.2f} (target >= 5 for coded)")  # fmt: skip
    if args.capacity:
        for stragglers in args.stragglers.split(","):
            for codec in codecs:
                mine = [r for r in rows if (r["stragglers"], r["codec"]) == (stragglers, codec)]
                if mine:
                    print(
                        f"capacity of {codec}, stragglers {stragglers}: {capacity(mine)} "
                        f"requests/s (light-load p99 {mine[0].get('p99', 0):.1f} ms)"
                    )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
