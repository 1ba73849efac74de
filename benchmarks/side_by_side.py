"""The farm's two worker engines and the Ray peer on one workload, in one run.

Run:  .venv/bin/python benchmarks/side_by_side.py [--batches 100] [--out-dir docs/bench/side]

Workload (the issue's): K=8 digit images, N=24 coded tasks, S=4, LeNet5 with 50 ms of
simulated compute per task, ``none`` and ``fixed`` stragglers (4 of 24 tasks 10x slower),
the same inputs and straggler draws for every path. Paths, one after the other on the same
machine: ``codedfarm bench`` on two batch-engine workers (the default), on two Celery
workers, and ``benchmarks/peer_ray.py`` (Ray tasks + ``ray.wait`` for the first N−S, the
farm's codecs for the encode and decode; needs the ``bench`` extra). Prints and writes
``side_by_side.md`` and ``.json``: p50 and p99 per path, the p50 overhead over the simulated
compute, the batch engine's critical-path stages, and the issue's two targets as ratios
measured in this run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from codedfarm.local.bench import BenchConfig, run_bench
from codedfarm.settings import Settings

SCHEMES = ("berrut", "spline")
STRAGGLERS = ("none", "fixed")


def _rows(report: dict[str, Any], path: str) -> list[dict[str, Any]]:
    return [{**row, "path": path} for row in report["rows"]]


def _table(rows: list[dict[str, Any]], config: BenchConfig) -> list[str]:
    lines = [
        "| stragglers | scheme | path | p50 ms | p95 ms | p99 ms | max ms | decoded "
        "| p50 overhead over compute ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for model in STRAGGLERS:
        for scheme in config.schemes:
            for r in rows:
                if r["stragglers"] == model and r["scheme"] == scheme:
                    lines.append(
                        f"| {model} | {scheme} | {r['path']} | {r['p50_ms']:.1f} | "
                        f"{r['p95_ms']:.1f} | {r['p99_ms']:.1f} | {r['max_ms']:.1f} | "
                        f"{r['decoded']} | {r['p50_ms'] - config.compute * 1e3:.1f} |"
                    )
    return lines


def _targets(rows: list[dict[str, Any]], config: BenchConfig) -> dict[str, float]:
    def find(path: str, model: str, scheme: str) -> dict[str, Any]:
        return next(r for r in rows if (r["path"], r["stragglers"], r["scheme"]) ==
                    (path, model, scheme))  # fmt: skip

    out: dict[str, float] = {}
    for scheme in config.schemes:
        batch, ray = find("batch engine", "fixed", scheme), find("Ray peer", "fixed", scheme)
        out[f"{scheme}: batch-engine p99 / Ray p99, fixed stragglers (<= 0.8)"] = (
            batch["p99_ms"] / ray["p99_ms"]
        )
        for model in STRAGGLERS:
            row = find("batch engine", model, scheme)
            out[f"{scheme}, {model}: batch-engine p50 overhead over compute, ms (<= 3)"] = (
                row["p50_ms"] - config.compute * 1e3
            )
            stages = row.get("stage_p50_ms") or {}
            if stages:
                out[f"{scheme}, {model}: ... less the model's own forward pass, ms"] = (
                    row["p50_ms"] - config.compute * 1e3 - stages["compute"]
                )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--out-dir", type=Path, default=Path("side-by-side"))
    args = parser.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import ray  # noqa: F401 - fail before the long farm runs

        from peer_ray import run_ray_peer
    except ModuleNotFoundError:
        print("install the bench extra: pip install 'codedfarm[bench]'", file=sys.stderr)
        return 2
    config = BenchConfig(batches=args.batches, stragglers=STRAGGLERS, schemes=SCHEMES)
    settings = Settings.from_env()
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    markdown: list[str] = []
    for engine, path in (("batch", "batch engine"), ("celery", "Celery engine")):
        print(f"== {path}")
        report = run_bench(replace(config, engine=engine), args.out_dir / engine, settings)
        rows += _rows(report, path)
        bench_md = (args.out_dir / engine / "bench.md").read_text()
        markdown += [f"### {path}: critical path", "", bench_md.split("\n\n")[-1].strip(), ""]
    print("== Ray peer")
    rows += [{**r, "path": "Ray peer"} for r in run_ray_peer(config, settings=settings)]
    targets = _targets(rows, config)
    text = "\n".join([
        f"K={config.k}, N={config.n}, S={config.s}, {config.batches} batches per row, "
        f"{config.compute * 1e3:g} ms simulated compute per task, stragglers "
        f"{config.slow_factor:g}x compute; wall time {time.perf_counter() - started:.0f} s",
        "", *_table(rows, config), "", "| target | measured |", "|---|---|",
        *(f"| {name} | {value:.2f} |" for name, value in targets.items()), "", *markdown,
    ])  # fmt: skip
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "side_by_side.md").write_text(text)
    (args.out_dir / "side_by_side.json").write_text(
        json.dumps({"config": asdict(config), "rows": rows, "targets": targets}, indent=2)
    )
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
