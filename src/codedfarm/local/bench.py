"""``codedfarm bench``: end-to-end latency of the schemes on a live farm, at equal worker count.

Every scheme serves the same batches on N logical workers with the same straggler draws:
task j of a scheme runs on logical worker j (hedged copies of task j on worker K + j), and
worker w's fate for a batch (its delay, or a failure) is drawn once per batch. Compute is
simulated by sleeping ``compute`` seconds in every task (the real LeNet5 forward is ~1 ms
on this CPU), so "stragglers 10x slower than compute" means they sleep 10 x ``compute``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from codedfarm.codecs import CodecPlan, plan_codec
from codedfarm.coordinator import BatchSpec, FarmClient
from codedfarm.errors import ConfigError
from codedfarm.local.farm import LocalFarm
from codedfarm.protocol import TIMELINE_STAGES
from codedfarm.settings import Settings, check_float, check_int
from codedfarm.stragglers import TaskFate
from codedfarm.worker import WorkerOptions

__all__ = ["STRAGGLER_MODELS", "BenchConfig", "SchemeResult", "run_bench"]

STRAGGLER_MODELS = ("none", "fixed", "exp", "pareto", "fail", "slownode")
SCHEMES = ("uncoded", "replication", "hedged", "mds", "berrut", "spline")
"""The default schemes; ``parm`` (learned parity models) may be asked for too: it needs the
model's parity model in the repository (``codedfarm parity train lenet5 --k K``)."""
KNOWN_SCHEMES = (*SCHEMES, "parm")


@dataclass(frozen=True)
class BenchConfig:
    k: int = 8
    n: int = 24
    s: int = 4
    batches: int = 100
    compute: float = 0.05  # seconds every task sleeps (simulated compute)
    slow_factor: float = 10.0  # stragglers take this many times the compute
    stragglers: tuple[str, ...] = ("none", "fixed", "exp")
    schemes: tuple[str, ...] = SCHEMES
    deadline: float = 20.0
    seed: int = 0
    engine: str = "batch"  # worker engine: 2 batch engines, or 2 Celery workers, of N/2+k slots

    def __post_init__(self) -> None:
        """Checks every field: a bad value raises :class:`ConfigError` naming it."""
        for name in ("k", "n", "s", "batches", "seed"):
            check_int(getattr(self, name), name)
        if self.k < 1 or self.n < self.k or not 0 <= self.s < self.n - self.k + 1:
            raise ConfigError(
                f"need 1 <= k <= n and 0 <= s <= n - k, got k={self.k}, n={self.n}, s={self.s} "
                "(replication uses the whole copies of each input that fit in n)"
            )
        for name in ("stragglers", "schemes"):
            value = getattr(self, name)
            if isinstance(value, str) or not value:
                raise ConfigError(f"{name} must be a non-empty list of names, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        unknown = set(self.stragglers) - set(STRAGGLER_MODELS)
        if unknown:
            raise ConfigError(f"unknown straggler model(s) {sorted(unknown)}; "
                              f"choose from {', '.join(STRAGGLER_MODELS)}")  # fmt: skip
        unknown = set(self.schemes) - set(KNOWN_SCHEMES)
        if unknown:
            raise ConfigError(
                f"unknown scheme(s) {sorted(unknown)}; choose from {', '.join(KNOWN_SCHEMES)}"
            )
        if self.batches < 5:
            raise ConfigError(f"need batches >= 5, got {self.batches}")
        object.__setattr__(self, "compute", check_float(self.compute, "compute", above=0))
        object.__setattr__(self, "slow_factor",
                           check_float(self.slow_factor, "slow_factor", minimum=1))  # fmt: skip
        object.__setattr__(self, "deadline", check_float(self.deadline, "deadline", above=0))
        if self.engine not in ("celery", "batch"):
            raise ConfigError(f"engine must be celery or batch, got {self.engine!r}")

    def validate(self) -> BenchConfig:
        """Returns self: a BenchConfig is checked when it is built (kept for old callers)."""
        return self


@dataclass(frozen=True)
class SchemeResult:
    stragglers: str
    scheme: str
    latencies: list[float]
    outcomes: list[str]
    tasks_per_prediction: float
    mse: float
    theory_mean: float | None
    timelines: list[dict[str, float]] = field(default_factory=list)  # critical paths, s

    def quantile(self, q: float) -> float:
        return float(np.quantile(self.latencies, q))

    def stage_medians(self) -> dict[str, float] | None:
        """Median seconds of every critical-path stage (None: no batch had a timeline)."""
        if not self.timelines:
            return None
        return {s: float(np.median([t[s] for t in self.timelines])) for s in TIMELINE_STAGES}

    def row(self) -> dict[str, Any]:
        decoded = sum(o in ("decoded", "deadline_decoded") for o in self.outcomes)
        return {
            "stragglers": self.stragglers,
            "scheme": self.scheme,
            "p50_ms": self.quantile(0.5) * 1e3,
            "p95_ms": self.quantile(0.95) * 1e3,
            "p99_ms": self.quantile(0.99) * 1e3,
            "max_ms": max(self.latencies) * 1e3,
            "mean_ms": statistics.fmean(self.latencies) * 1e3,
            "theory_mean_ms": None if self.theory_mean is None else self.theory_mean * 1e3,
            "decoded": f"{decoded}/{len(self.outcomes)}",
            "tasks_per_prediction": self.tasks_per_prediction,
            "mse_vs_uncoded": self.mse,
            "stage_p50_ms": {k: v * 1e3 for k, v in (self.stage_medians() or {}).items()},
        }


def _worker_fates(config: BenchConfig, model: str, rng: np.random.Generator,
                  persistent: set[int]) -> list[TaskFate]:  # fmt: skip
    """Fates of the N + K logical workers for one batch (K spares host hedged copies)."""
    w = config.n + config.k
    c = config.compute
    if model == "none":
        return [TaskFate(c)] * w
    if model in ("fixed", "slownode"):
        slow = persistent if model == "slownode" else set(rng.choice(config.n, config.s, False))
        return [TaskFate(c * config.slow_factor if i in slow else c) for i in range(w)]
    if model == "exp":  # shifted exponential (Lee et al.): shift c, mean extra c
        return [TaskFate(float(d)) for d in c + rng.exponential(c, w)]
    if model == "pareto":  # heavy tail, minimum c
        return [TaskFate(float(d)) for d in c * (1 + rng.pareto(1.5, w))]
    if model == "fail":
        fails = rng.random(w) < config.s / config.n
        return [TaskFate(c, bool(f)) for f in fails]
    raise AssertionError(model)


def _plan(scheme: str) -> CodecPlan:
    """The codec of a scheme: its own name, except ``hedged`` (uncoded, re-sent)."""
    return plan_codec("uncoded" if scheme == "hedged" else scheme)


def _parity_models(config: BenchConfig, settings: Settings) -> list[str]:
    """The parity models the schemes' batches run (``parm``), resolved before the farm
    starts: a missing one is the resolver's clear error now, not a failed run later."""
    from codedfarm.coordinator.resolution import resolve_batch

    found: list[str] = []
    for scheme in config.schemes:
        spec = _spec(config, scheme, [TaskFate()] * (config.n + config.k), config.compute)
        model = resolve_batch(spec, config.k, settings).parity_model
        if model is not None and model.ref not in found:
            found.append(model.ref)
    return found


def _model_of(scheme: str) -> str:
    """LeNet5, or the linear model for a code exact only on polynomials (MDS)."""
    return "linear" if _plan(scheme).exact_degree is not None else "lenet5"


def _theory(config: BenchConfig, model: str, scheme: str) -> float | None:
    """Expected order statistics for the shifted-exponential model (compute + Exp(mean c))."""
    if model != "exp" or scheme == "hedged":
        return None
    c, k = config.compute, config.k
    plan = _plan(scheme)
    n, s = plan.fit_workers(k, config.n, config.s)

    def harmonic(m: int) -> float:
        return sum(1.0 / i for i in range(1, m + 1))

    if plan.exact_for_any_model:  # r copies of each input (uncoded: 1): the last of k minima
        return c + c / (n // k) * harmonic(k)
    return c + c * (harmonic(n) - harmonic(s))  # the (n-s)-th of n


def _spec(config: BenchConfig, scheme: str, fates: list[TaskFate], hedge: float) -> BatchSpec:
    """A scheme's batch within the bench's budget of n workers tolerating s (each code fits
    itself into it: uncoded one task per input, replication its whole copies)."""
    plan = _plan(scheme)
    n, s = plan.fit_workers(config.k, config.n, config.s)
    hedged = scheme == "hedged"
    return BatchSpec(
        model=_model_of(scheme), codec=plan.spec, n=n, s=s, plan=tuple(fates[:n]),
        queues=("bench0", "bench1"), deadline=config.deadline,
        hedge_after=hedge if hedged else None,
        hedge_plan=tuple(fates[config.n : config.n + config.k]) if hedged else None,
    )  # fmt: skip


def run_bench(
    config: BenchConfig,
    out_dir: Path,
    settings: Settings,
    *,
    echo: Callable[[str], None] = print,
    progress: Callable[[int], None] = lambda _: None,
) -> dict[str, Any]:
    """Start a local farm of N slots, run every scheme under every straggler model, write
    bench.json, bench.md and latency_cdf.png; returns the results with the target ratios."""
    import torch

    from codedfarm.models.digits import load_digits_split
    from codedfarm.models.registry import load_model
    from codedfarm.models.training import trained_lenet5

    out_dir.mkdir(parents=True, exist_ok=True)
    trained_lenet5(settings.cache_dir)
    data = load_digits_split()
    rng = np.random.default_rng(config.seed)
    inputs = [data.test_x[rng.choice(len(data.test_x), config.k, replace=False)]
              for _ in range(config.batches)]  # fmt: skip
    truth = {}
    for name in ("lenet5", "linear"):
        module = load_model(name, settings.cache_dir)
        with torch.inference_mode():
            truth[name] = [module(torch.from_numpy(x)).numpy() for x in inputs]
    half = -(-config.n // 2) + config.k  # slots for N tasks plus hedged copies
    preload = ("lenet5", "linear", *_parity_models(config, settings))
    workers = [WorkerOptions((f"bench{i}",), config.engine, half, preload=preload)
               for i in range(2)]  # fmt: skip
    results: list[SchemeResult] = []
    echo(f"starting a farm with {2 * half} slots ...")
    with LocalFarm(workers, settings=settings) as farm, FarmClient(farm.settings) as client:
        for x in inputs[:3]:  # warm every slot up
            client.submit(x, BatchSpec(model="lenet5", codec="berrut", n=config.n,
                                       queues=("bench0", "bench1")))  # fmt: skip
        for model in config.stragglers:
            draw = np.random.default_rng([config.seed, STRAGGLER_MODELS.index(model)])
            persistent = set(draw.choice(config.n, config.s, replace=False).tolist())
            plans = [_worker_fates(config, model, draw, persistent) for _ in inputs]
            sample = [f.delay for p in plans for f in p[: config.n] if not f.fail]
            hedge = float(np.quantile(sample, 0.95)) if sample else config.compute
            for scheme in config.schemes:
                echo(f"  {model:9} {scheme}")
                latencies, outcomes, errors, sent, timelines = [], [], [], 0, []
                for x, plan, ref_l, ref_m in zip(inputs, plans, truth["lenet5"], truth["linear"],
                                                 strict=True):  # fmt: skip
                    result = client.submit(x, _spec(config, scheme, plan, hedge))
                    latencies.append(result.record.timings.end_to_end)
                    if (timeline := result.record.timings.timeline()) is not None:
                        timelines.append(timeline)
                    outcomes.append(result.outcome)
                    sent += result.record.tasks_sent
                    if result.predictions is not None:
                        ref = ref_m if _model_of(scheme) == "linear" else ref_l
                        errors.append(float(np.mean(np.sum((result.predictions - ref) ** 2, 1))))
                    progress(1)
                results.append(SchemeResult(
                    model, scheme, latencies, outcomes, sent / (config.k * len(inputs)),
                    float(np.mean(errors)) if errors else math.nan, _theory(config, model, scheme),
                    timelines,
                ))  # fmt: skip
    summary = _targets(results)
    report = {"config": asdict(config), "rows": [r.row() for r in results], "targets": summary}
    (out_dir / "bench.json").write_text(json.dumps(report, indent=2, default=float))
    (out_dir / "bench.md").write_text(markdown(results, summary, config))
    _cdf_png(results, out_dir / "latency_cdf.png")
    return report


def _p99(results: list[SchemeResult], model: str, scheme: str) -> float | None:
    for r in results:
        if r.stragglers == model and r.scheme == scheme:
            return r.quantile(0.99)
    return None


def _targets(results: list[SchemeResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for coded in ("berrut", "spline"):
        free, slowed = _p99(results, "none", coded), _p99(results, "fixed", coded)
        uncoded, repl = _p99(results, "fixed", "uncoded"), _p99(results, "fixed", "replication")
        if free and slowed:
            out[f"{coded}: p99 with S stragglers / straggler-free p99 (<= 1.15)"] = slowed / free
        if uncoded and slowed:
            out[f"{coded}: uncoded p99 / coded p99, stragglers 10x compute (>= 5)"] = (
                uncoded / slowed
            )
        if repl and slowed:
            out[f"{coded}: coded p99 / replication p99, equal workers (<= 0.8)"] = slowed / repl
    return out


def markdown(results: list[SchemeResult], targets: dict[str, Any], config: BenchConfig) -> str:
    lines = [
        f"K={config.k}, N={config.n}, S={config.s}, {config.batches} batches per row, compute "
        f"{config.compute * 1e3:g} ms per task, stragglers {config.slow_factor:g}x compute, "
        f"{config.engine} workers",
        "",
        "| stragglers | scheme | p50 ms | p95 ms | p99 ms | max ms | mean ms | theory mean ms "
        "| decoded | tasks/prediction | MSE vs uncoded |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        row = r.row()
        theory = "" if row["theory_mean_ms"] is None else f"{row['theory_mean_ms']:.1f}"
        lines.append(
            f"| {r.stragglers} | {r.scheme} | {row['p50_ms']:.1f} | {row['p95_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {row['max_ms']:.1f} | {row['mean_ms']:.1f} | {theory} | "
            f"{row['decoded']} | {row['tasks_per_prediction']:.2f} | {row['mse_vs_uncoded']:.3g} |"
        )
    lines += ["", "| target | measured |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in targets.items()]
    lines += ["", *timeline_table(results, config)]
    return "\n".join(lines) + "\n"


def timeline_table(results: list[SchemeResult], config: BenchConfig) -> list[str]:
    """Median ms per critical-path stage, per row that has timelines; the overhead is the
    p50 end-to-end minus the simulated compute."""
    rows = [(r, m) for r in results if (m := r.stage_medians()) is not None]
    if not rows:
        return []
    lines = [
        f"Critical path, median ms per stage ({config.engine} workers; the stages of the "
        "result that met the wait policy, see StageTimings):",
        "",
        "| stragglers | scheme | " + " | ".join(s.replace("_", " ") for s in TIMELINE_STAGES)
        + " | sum | p50 end-to-end | p50 overhead over compute |",
        "|---|---|" + "---|" * (len(TIMELINE_STAGES) + 3),
    ]  # fmt: skip
    for r, medians in rows:
        cells = " | ".join(f"{medians[s] * 1e3:.2f}" for s in TIMELINE_STAGES)
        p50 = r.quantile(0.5)
        lines.append(
            f"| {r.stragglers} | {r.scheme} | {cells} | {sum(medians.values()) * 1e3:.1f} | "
            f"{p50 * 1e3:.1f} | {(p50 - config.compute) * 1e3:.1f} |"
        )
    return lines


def _cdf_png(results: list[SchemeResult], path: Path) -> None:
    from codedfarm.evaluation.plots import headless_pyplot

    plt = headless_pyplot()
    models = list(dict.fromkeys(r.stragglers for r in results))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        for r in results:
            if r.stragglers == model:
                xs = np.sort(r.latencies) * 1e3
                ax.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=r.scheme)
        ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (ms)")
        ax.set_ylabel("fraction of batches")
        ax.set_title(f"stragglers: {model}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
