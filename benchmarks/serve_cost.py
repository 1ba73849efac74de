"""What coded serving costs with real compute: latency, worker CPU and tasks per request.

Run:  .venv/bin/python benchmarks/serve_cost.py [--rate 20 ...] [--seconds 20] [--workers 2]
      [--row uncoded ...] [--stragglers none,late,slow] [--quick] [--out docs/serve/cost.json]

Model: a CNN on sklearn's digits at 28x28 (4 conv layers, ``--width`` 64: ~120 MFLOP, 3-5
ms a row on one core here; random conv weights from ``--seed``, the head trained for seconds,
softmax outputs), exported with ``torch.export`` and added by ``codedfarm models add`` to a
temporary model repository; a private Redis and ``--workers`` (4) batch-engine workers (a
queue each, ``--preload``, torch threads 1; the server sends a group's tasks round-robin over
them, and hedged copies to the next queue) serve it. For each (stragglers, row, rate): a fresh
``codedfarm serve`` (K=8) and open-loop Poisson single-row requests from this process,
latency from the scheduled arrival. Stragglers: ``none``; ``late``: the server injects
``late:p=0.05,delay=D``, 5% of tasks 10x late (D = 9x the per-task compute measured first;
``--straggle-seed``); ``slow``: the first worker has ``--slowdown 10``. Rows: ``uncoded``;
``hedged`` (``--hedge-after`` = the p95 worker task latency of the straggler-free uncoded run
at that rate); ``default`` (no codec flags: the product's defaults); ``replication-x2``;
systematic Berrut at redundancy 1.25, 1.5, 2 and spline at 1.5; ``spline-3K`` (N=24, any 8);
``parm-1.5`` and ``parm-1.25``: learned parity models for 2 and 4 rows (trained first from
the CNN's weights, ``--parity-epochs``, and preloaded by the workers).

Per run: p50/p99/p99.9/max ms, errors, achieved rate; worker CPU-s per answered request
(utime+stime of the workers' process groups, /proc); worker tasks per answered request
(``codedfarm_worker_tasks_total``: ok+error+failed computed, cancelled+skipped did not);
agreement with the model run here (argmax; max |difference|; answers off by > 1e-4), and on
decoded rows: per answer where a response says (a ``decoded``/``path`` parameter), else from
``codedfarm_server_rows_total{path="decoded"}`` (own rows are exact, so every disagreement is
a decoded row's), else n/a; ratios to uncoded; a JSON file and a plot (``--plot``). Default
rates: in a probe here (no stragglers, 5 s a rate) uncoded's p99 stayed flat to 100/s and
passed 4 s at 150/s; spline-3K's p50 was 0.1 s at 60/s, 0.7 s at 80/s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

ROWS: dict[str, dict[str, Any]] = {
    "uncoded": {"codec": "uncoded"},
    "hedged": {"codec": "uncoded"},  # + --hedge-after, measured
    "default": {},
    "replication-x2": {"codec": "replication", "redundancy": 2.0},
    "berrut-sys-1.25": {"codec": "berrut:systematic=true", "redundancy": 1.25},
    "berrut-sys-1.5": {"codec": "berrut:systematic=true", "redundancy": 1.5},
    "berrut-sys-2": {"codec": "berrut:systematic=true", "redundancy": 2.0},
    "spline-sys-1.5": {"codec": "spline:systematic=true", "redundancy": 1.5},
    "spline-3K": {"codec": "spline", "redundancy": 3.0},
    "parm-1.5": {"codec": "parm", "redundancy": 1.5},  # learned parity per 2 rows (ParM)
    "parm-1.25": {"codec": "parm", "redundancy": 1.25},  # per 4 rows
}
QUICK_ROWS = ["uncoded", "hedged", "default", "berrut-sys-1.5"]
SCENARIOS = ("none", "late", "slow")
MODEL, QUEUE, K = "cnn", "sc", 8


def build_model(repo: Path, width: int, seed: int) -> tuple[Any, np.ndarray, np.ndarray]:
    """Export the CNN and add it to ``repo``; returns (its exported module, test rows, probs)."""
    import torch
    from torch import nn

    from codedfarm.models.digits import load_digits_split

    torch.manual_seed(seed)
    c = width
    features = nn.Sequential(
        nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.Conv2d(c, 2 * c, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2), nn.Conv2d(2 * c, 4 * c, 3, padding=1), nn.ReLU(),
        nn.Conv2d(4 * c, 4 * c, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3), nn.Flatten(),
    ).eval()  # fmt: skip
    data = load_digits_split(shape=(1, 28, 28))
    with torch.no_grad():
        feats = features(torch.from_numpy(data.train_x))
        scale = float(feats.std()) or 1.0
        feats /= scale
    head = nn.Linear(feats.shape[1], 10)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(300):  # the head only: a few seconds
        opt.zero_grad()
        nn.functional.cross_entropy(head(feats), torch.from_numpy(data.train_y)).backward()
        opt.step()
    with torch.no_grad():
        head.weight /= scale
    model = nn.Sequential(features, head, nn.Softmax(dim=1)).eval()
    path, batch = repo.parent / "cnn.pt2", torch.export.Dim("batch")
    exported = torch.export.export(model, (torch.zeros(2, 1, 28, 28),),
                                   dynamic_shapes=({0: batch},))  # fmt: skip
    torch.export.save(exported, str(path))
    subprocess.run([sys.executable, "-m", "codedfarm", "models", "add", MODEL, str(path),
                    "--input-shape", "1,28,28", "--description", f"digits CNN width {c}"],
                   check=True, env={**os.environ, "CODEDFARM_MODEL_REPOSITORY": str(repo)},
                   stdout=subprocess.DEVNULL)  # fmt: skip
    module = torch.export.load(str(path)).module()
    with torch.inference_mode():
        probs = module(torch.from_numpy(data.test_x)).numpy()
    print(f"model: digits CNN width {c}, test accuracy "
          f"{(probs.argmax(1) == data.test_y).mean():.3f}", flush=True)  # fmt: skip
    return module, data.test_x, probs


def train_parity_models(repo: Path, epochs: int, seed: int) -> list[str]:
    """The CNN's parity models for k = 2 and 4 (``codedfarm parity train``, from its own
    weights); their names, for the workers to preload."""
    from codedfarm.models.parity import ParityTraining, train_parity

    names = []
    for k in (2, 4):
        start = time.perf_counter()
        trained = train_parity(ParityTraining(MODEL, k, epochs=epochs, seed=seed), repo,
                               repo.parent / "cache")  # fmt: skip
        names.append(trained.model.name)
        print(f"parity model {trained.model.name}: {epochs} epochs in "
              f"{time.perf_counter() - start:.0f} s, held-out agreement of rebuilt rows "
              f"{trained.info.heldout_agreement:.3f}", flush=True)  # fmt: skip
    return names


def compute_ms(module: Any, x: np.ndarray) -> tuple[float, float]:
    """ms of a one-row forward pass, and per row in a pass of K rows (1 thread; the 10th
    percentile of repeats, not their median: the machine may have a noisy neighbour)."""
    import torch

    torch.set_num_threads(1)
    out = []
    for rows in (1, K):
        times = []
        with torch.inference_mode():
            for _ in range(50 if rows == 1 else 10):
                start = time.perf_counter()
                module(torch.from_numpy(x[:rows]))
                times.append(time.perf_counter() - start)
        out.append(float(np.percentile(times, 10)) * 1e3 / rows)
    return out[0], out[1]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A /metrics page as {(sample name, labels): value}; {} when it cannot be read."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {}
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}  # fmt: skip


def total(metrics: dict, name: str, by: str) -> Counter[str]:
    """The samples called ``name``, summed by the label ``by``."""
    out: Counter[str] = Counter()
    for (sample, labels), value in metrics.items():
        if sample == name:
            out[dict(labels).get(by, "")] += value
    return out


def quantile_ms(buckets: Counter[str], q: float) -> float:
    """Prometheus's histogram_quantile over cumulative buckets {le: count}, in ms."""
    edges = sorted((float(le), n) for le, n in buckets.items())
    if not edges or edges[-1][1] <= 0:
        return float("nan")
    rank, prev_le, prev_n = q * edges[-1][1], 0.0, 0.0
    for le, n in edges:
        if n >= rank and le != float("inf"):
            return (prev_le + (le - prev_le) * (rank - prev_n) / max(n - prev_n, 1e-9)) * 1e3
        prev_le, prev_n = (prev_le, prev_n) if le == float("inf") else (le, n)
    return prev_le * 1e3


def group_cpu(pgids: set[int]) -> float:
    """CPU-seconds (user+system, reaped children too) of every process in ``pgids``."""
    ticks = 0
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) in pgids:  # pgrp; utime, stime, cutime, cstime are 11..14
            ticks += sum(int(v) for v in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


def decoded_flag(response: dict[str, Any]) -> bool | None:
    """Whether the server says this answer was decoded (not its own task's), if it says."""
    params = {**response.get("parameters", {}), **response["outputs"][0].get("parameters", {})}
    value = params.get("decoded", params.get("path"))
    value = value[0] if isinstance(value, list) and value else value
    return value if isinstance(value, bool) else (
        value == "decoded" if isinstance(value, str) else None)  # fmt: skip


async def open_loop(url: str, x: np.ndarray, rate: float, seconds: float, seed: int) -> dict:
    """Poisson arrivals of single rows; per answer (row, latency s, response JSON)."""
    import httpx

    tensor = {"name": "input__0", "shape": [1, *x.shape[1:]], "datatype": "FP32",
              "parameters": {"binary_data_size": x[0].nbytes}}  # fmt: skip
    head = json.dumps({"inputs": [tensor]}).encode()
    order = np.random.default_rng(seed).permutation(len(x))
    bodies = [(int(i), head + x[i].tobytes()) for i in order]
    headers = {"Inference-Header-Content-Length": str(len(head))}
    gaps = np.random.default_rng(seed + 1).exponential(1 / rate, int(rate * seconds * 1.5) + 16)
    arrivals = np.cumsum(gaps)[np.cumsum(gaps) < seconds]
    answers: list[tuple[int, float, dict]] = []
    errors: Counter[str] = Counter()
    gc.collect()
    gc.freeze()  # torch's objects: a full collection would stall this loop (loadgen.py)
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=512)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:

        async def one(n: int, due: float) -> None:
            row, body = bodies[n % len(bodies)]
            try:
                r = await client.post(f"{url}/v2/models/{MODEL}/infer", content=body,
                                      headers=headers)  # fmt: skip
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
                return
            if r.status_code == 200:
                answers.append((row, time.perf_counter() - due, r.json()))
            else:
                errors[str(r.status_code)] += 1

        start, tasks = time.perf_counter(), []
        for n, at in enumerate(arrivals):
            await asyncio.sleep(max(0.0, start + float(at) - time.perf_counter()))
            tasks.append(asyncio.create_task(one(n, start + float(at))))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    gc.unfreeze()
    return {"sent": len(tasks), "answers": answers, "errors": dict(errors), "elapsed": elapsed}


def serve_argv(row: str, port: int, scenario: str, hedge_ms: float | None,
               args: argparse.Namespace) -> list[str]:  # fmt: skip
    flags = ROWS[row]
    queues = ",".join(f"{QUEUE}{i}" for i in range(args.workers))
    argv = [sys.executable, "-m", "codedfarm", "serve", "--port", str(port), "-Q", queues,
            "--group-size", str(K), "--max-queue-delay", str(args.max_queue_delay)]  # fmt: skip
    argv += ["--codec", flags["codec"]] if "codec" in flags else []
    argv += ["--redundancy", str(flags["redundancy"])] if "redundancy" in flags else []
    argv += ["--hedge-after", f"{hedge_ms:.1f}"] if row == "hedged" else []
    if scenario == "late":
        argv += ["--straggle", f"late:p=0.05,delay={args.late_delay:.4f}",
                 "--straggle-seed", str(args.straggle_seed)]  # fmt: skip
    return argv


def wait_ready(port: int, server: subprocess.Popen, log: Path) -> None:
    for _ in range(600):
        if server.poll() is not None:
            raise SystemExit(f"codedfarm serve exited:\n{log.read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"the server on port {port} never became ready")


def one_run(farm: LocalFarm, ports: list[int], row: str, scenario: str, rate: float,
            hedge_ms: float | None, ref: dict, args: argparse.Namespace) -> dict:  # fmt: skip
    port = free_port()  # a fresh server per run: no state carries over
    log = farm.log_dir / f"serve-{row}-{scenario}-{rate:g}.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(serve_argv(row, port, scenario, hedge_ms, args), env=farm.env(),
                                  start_new_session=True, stdout=out, stderr=out)  # fmt: skip
    groups = {w.pid for w in farm.workers}

    def snapshot() -> tuple[list[dict], dict, float, float]:
        return ([scrape(p) for p in ports], scrape(port), group_cpu(groups),
                group_cpu({server.pid}))  # fmt: skip

    try:
        wait_ready(port, server, log)
        url = f"http://127.0.0.1:{port}"
        asyncio.run(open_loop(url, ref["x"], 10, 1.0, seed=99))  # warm up, not counted
        before = snapshot()
        load = asyncio.run(open_loop(url, ref["x"], rate, args.seconds, seed=args.seed))
        time.sleep(0.3 + (args.late_delay if scenario == "late" else 0))  # stragglers settle
        after = snapshot()
    finally:
        os.killpg(server.pid, 15)
        server.wait(60)
    tasks: Counter[str] = Counter()
    buckets: Counter[str] = Counter()
    for b, a in zip(before[0], after[0], strict=True):
        tasks.update(total(a, "codedfarm_worker_tasks_total", "status"))
        tasks.subtract(total(b, "codedfarm_worker_tasks_total", "status"))
        buckets.update(total(a, "codedfarm_worker_task_seconds_bucket", "le"))
        buckets.subtract(total(b, "codedfarm_worker_task_seconds_bucket", "le"))
    paths = total(after[1], "codedfarm_server_rows_total", "path")
    paths.subtract(total(before[1], "codedfarm_server_rows_total", "path"))
    answers, ok = load["answers"], len(load["answers"])
    ms = np.array([a[1] for a in answers] or [np.nan]) * 1e3
    served = np.array([a[2]["outputs"][0]["data"] for a in answers], float).reshape(ok, 10)
    wanted = ref["probs"][[a[0] for a in answers]]
    agree = served.argmax(1) == wanted.argmax(1) if ok else np.zeros(0, bool)
    flags = [decoded_flag(a[2]) for a in answers]
    decoded = [bool(g) for f, g in zip(flags, agree, strict=True) if f]
    if not any(f is not None for f in flags) and paths["decoded"] > 0:
        # own rows are the model's exact output: every disagreement is a decoded row's
        decoded_agree = 1 - float((~agree).sum()) / paths["decoded"]
    else:
        decoded_agree = float(np.mean(decoded)) if decoded else None
    per = max(ok, 1)
    result = {
        "stragglers": scenario, "row": row, "rate": rate, "sent": load["sent"], "ok": ok,
        "errors": load["errors"], "achieved_rate": ok / load["elapsed"],
        **{f"p{q}": float(np.percentile(ms, q)) for q in (50, 99, 99.9)},
        "max": float(ms.max()), "worker_cpu_per_req": (after[2] - before[2]) / per,
        "server_cpu_per_req": (after[3] - before[3]) / per,
        "tasks_per_req": (tasks["ok"] + tasks["error"] + tasks["failed"]) / per,
        "not_computed_per_req": (tasks["cancelled"] + tasks["skipped"]) / per,
        "task_statuses": {k: v for k, v in tasks.items() if v},
        "task_p95_ms": quantile_ms(buckets, 0.95),
        "agreement": float(agree.mean()) if ok else None,
        "max_abs_diff": float(np.abs(served - wanted).max()) if ok else None,
        "inexact": int((np.abs(served - wanted).max(1, initial=0) > 1e-4).sum()),
        "rows_by_path": {k: v for k, v in paths.items() if v} or None,
        "decoded_answers": len(decoded) if any(f is not None for f in flags) else None,
        "decoded_agreement": decoded_agree,
        "hedge_after_ms": hedge_ms if row == "hedged" else None,
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    return result


def resolved(row: str, repo: Path) -> str:
    """A full group's codec, N, S and wait under the row's flags, as the server resolves them."""
    try:
        from codedfarm.models.resolve import resolve_model
        from codedfarm.server.farm import ServeConfig, group_settings

        config = ServeConfig(**ROWS[row], hedge_after=0.01 if row == "hedged" else None)
        gs = group_settings(Settings(model_repository=repo), config,
                            resolve_model(MODEL, repo), K)  # fmt: skip
        return f"{gs.codec.spec} N={gs.n} S={gs.s} wait={gs.wait_for}"
    except Exception as exc:  # informative only: the server's API may move
        return f"? ({type(exc).__name__}: {exc})"


def fmt(v: Any, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def report(rows: list[dict[str, Any]]) -> None:
    print("| stragglers | row | rate /s | p50 | p99 | p99.9 | max ms | errors | ok/s | "
          "worker CPU-s/req | tasks/req | not computed/req | agree | max abs diff | inexact | "
          "decoded rows | decoded agree |\n" + "|---" * 17 + "|")  # fmt: skip
    for r in rows:
        print(f"| {r['stragglers']} | {r['row']} | {r['rate']:g} | {r['p50']:.1f} | "
              f"{r['p99']:.1f} | {r['p99.9']:.1f} | {r['max']:.1f} | "
              f"{sum(r['errors'].values()) or 'none'} | {r['achieved_rate']:.1f} | "
              f"{r['worker_cpu_per_req']:.4f} | {r['tasks_per_req']:.2f} | "
              f"{r['not_computed_per_req']:.2f} | {fmt(r['agreement'], '.4f')} | "
              f"{fmt(r['max_abs_diff'], '.2g')} | {r['inexact']} | "
              f"{fmt(r['rows_by_path'] and r['rows_by_path'].get('decoded', 0), '.0f')} | "
              f"{fmt(r['decoded_agreement'], '.4f')} |")  # fmt: skip
    base = {(r["stragglers"], r["rate"]): r for r in rows if r["row"] == "uncoded"}
    print("\nAgainst uncoded at the same stragglers and rate:\n\n| stragglers | row | "
          "rate /s | p50 ratio | (p99.9-p50) ratio | CPU ratio | tasks/req |\n"
          + "|---" * 7 + "|")  # fmt: skip
    for r in rows:
        u = base.get((r["stragglers"], r["rate"]))
        if u is None or r["row"] == "uncoded":
            continue
        tail = (r["p99.9"] - r["p50"]) / max(u["p99.9"] - u["p50"], 1e-9)
        cpu = r["worker_cpu_per_req"] / max(u["worker_cpu_per_req"], 1e-9)
        print(f"| {r['stragglers']} | {r['row']} | {r['rate']:g} | {r['p50'] / u['p50']:.2f} | "
              f"{tail:.2f} | {cpu:.2f} | {r['tasks_per_req']:.2f} |")  # fmt: skip


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r["stragglers"] for r in rows))
    fig, axes = plt.subplots(len(scenarios), 3, figsize=(15, 4 * len(scenarios)), squeeze=False)
    for i, scenario in enumerate(scenarios):
        for name in dict.fromkeys(r["row"] for r in rows):
            mine = [r for r in rows if (r["stragglers"], r["row"]) == (scenario, name)]
            for j, key in enumerate(("p50", "p99.9", "worker_cpu_per_req")):
                axes[i][j].plot([r["rate"] for r in mine], [r[key] for r in mine], marker="o",
                                label=name)  # fmt: skip
        for j, label in enumerate(("p50 ms", "p99.9 ms", "worker CPU-s / request")):
            axes[i][j].set(xlabel="requests/s", ylabel=label, title=f"stragglers: {scenario}",
                           yscale="log" if j < 2 else "linear")  # fmt: skip
        axes[i][0].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, action="append", default=None)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--row", action="append", choices=list(ROWS), default=None)
    parser.add_argument("--stragglers", default="none,late,slow", help="of none,late,slow")
    parser.add_argument("--width", type=int, default=64, help="conv channels (cost per row)")
    parser.add_argument("--hedge-after", type=float, default=None, help="ms (default: p95)")
    parser.add_argument("--max-queue-delay", type=float, default=20.0, help="milliseconds")
    parser.add_argument("--straggle-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one rate, 5 s, four rows")
    parser.add_argument("--out", type=Path, default=Path("docs/serve/cost.json"))
    parser.add_argument("--plot", type=Path, default=Path("docs/serve/cost.png"))
    parser.add_argument("--parity-epochs", type=int, default=5,
                        help="epochs of the parm rows' parity models (k=2 and 4)")  # fmt: skip
    args = parser.parse_args()
    # a stopped run (SIGTERM) stops its farm and servers too (LocalFarm's exit)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.quick:
        args.rate, args.seconds = args.rate or [20.0], min(args.seconds, 5.0)
    args.rate = sorted(args.rate or [20.0, 50.0, 80.0])
    rows = args.row or (QUICK_ROWS if args.quick else list(ROWS))
    scenarios = [s for s in SCENARIOS if s in args.stragglers.split(",")]
    if "hedged" in rows and args.hedge_after is None:  # its p95 comes from these runs
        rows = ["uncoded", *[r for r in rows if r != "uncoded"]]
        scenarios = ["none", *[s for s in scenarios if s != "none"]]
    if "slow" in scenarios and args.workers < 2:
        print("stragglers 'slow' needs --workers >= 2: skipped")
        scenarios.remove("slow")
    tmp = tempfile.TemporaryDirectory(prefix="serve-cost-")
    repo = Path(tmp.name) / "repository"
    module, x, probs = build_model(repo, args.width, args.seed)
    preload = [MODEL]
    if any(ROWS[row].get("codec", "").startswith("parm") for row in rows):
        preload += train_parity_models(repo, args.parity_epochs, args.seed)
    one_ms, batch_ms = compute_ms(module, x)
    args.late_delay = 9 * one_ms / 1e3
    print(f"per-task compute: {one_ms:.2f} ms for one row ({batch_ms:.2f} ms/row in a pass of "
          f"{K}); late stragglers: p=0.05, delay {args.late_delay * 1e3:.1f} ms (9x)")  # fmt: skip
    settings = {row: resolved(row, repo) for row in rows}
    print("".join(f"  {row}: {text}\n" for row, text in settings.items()), flush=True)
    ref, hedge, results = {"x": x, "probs": probs}, {}, []
    for scenario in scenarios:
        ports = [free_port() for _ in range(args.workers)]
        workers = [WorkerOptions((f"{QUEUE}{i}",), preload=tuple(preload), torch_threads=1,
                                 metrics_port=p,
                                 slowdown=10.0 if scenario == "slow" and i == 0 else 1.0)
                   for i, p in enumerate(ports)]  # fmt: skip
        with LocalFarm(workers, settings=Settings(key_prefix="sc", model_repository=repo)) as farm:
            for row in rows:
                for rate in args.rate:
                    ms = args.hedge_after or hedge.get(rate)
                    results.append(one_run(farm, ports, row, scenario, rate, ms, ref, args))
                    if (scenario, row) == ("none", "uncoded"):
                        hedge[rate] = round(results[-1]["task_p95_ms"], 1)
                        print(f"hedge-after at {rate:g}/s: {hedge[rate]} ms (p95 task latency)")
    print(f"\n{args.seconds:g} s per run, {args.workers} workers, single rows, K={K}, per-task "
          f"compute {one_ms:.2f} ms, late delay {args.late_delay * 1e3:.1f} ms, hedge-after "
          f"{args.hedge_after or hedge} ms\n")  # fmt: skip
    report(results)
    setup = {"model": f"digits CNN width {args.width}", "per_task_compute_ms": one_ms,
             "per_row_in_pass_of_k_ms": batch_ms, "late_delay_s": args.late_delay,
             "hedge_after_ms": args.hedge_after or hedge, "workers": args.workers,
             "seconds": args.seconds, "k": K, "settings": settings}  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"setup": setup, "rows": results}, indent=2))
    plot(results, args.plot)
    print(f"\nwrote {args.out} and {args.plot}")
    tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
