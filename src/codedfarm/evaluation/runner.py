"""``codedfarm eval``: fidelity, lambda sweep, convergence and coded-sample pictures."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from codedfarm.codecs import plan_codec
from codedfarm.errors import ConfigError
from codedfarm.evaluation import plots
from codedfarm.evaluation.compare import toy_model
from codedfarm.evaluation.convergence import ConvergenceCurve, convergence
from codedfarm.evaluation.fidelity import FidelityRow, Model, batches, build_codec, measure_fidelity
from codedfarm.evaluation.loading import load_eval_model
from codedfarm.evaluation.redundancy import (
    DEFAULT_CODECS,
    DEFAULT_GROUP_SIZES,
    DEFAULT_REDUNDANCY,
    STRAGGLE_RATES,
    check_settings,
)
from codedfarm.evaluation.reporting import ratio_table, robustness_table
from codedfarm.evaluation.robustness import RobustnessRow, measure_robustness
from codedfarm.evaluation.tuning import DEFAULT_LAM_DEC, DEFAULT_LAM_ENC, LambdaGrid, grid_search
from codedfarm.settings import check_float, check_int

BASELINE = "berrut"  # the label of the row every ratio is taken against (NeRCC's Table 1)

__all__ = ["OUTPUT_SPACES", "EvalConfig", "run_evaluation"]

OUTPUT_SPACES = ("probs", "logits")
ROBUST_SHAPE = (8, 24, 4)  # (K, n, S) of the wrong-results table
BOOTSTRAP = 2000


@dataclass(frozen=True)
class EvalConfig:
    """Defaults follow NeRCC's scale: K = 20 inputs on N = 100 workers, S up to 60."""

    models: tuple[str, ...] = ("lenet5", "repvgg", "vit_small")
    dataset: str = "digits"
    data_dir: Path | None = None
    k: int = 20
    n: int = 100
    stragglers: tuple[int, ...] = (0, 10, 20, 30, 40, 50, 60)
    batches: int = 12  # held-out batches per model
    tune_batches: int = 6  # tuning batches per model (disjoint images)
    patterns: int = 8  # straggler patterns per (batch, S)
    lam_enc: tuple[float, ...] = DEFAULT_LAM_ENC
    lam_dec: tuple[float, ...] = tuple(DEFAULT_LAM_DEC)
    convergence_ns: tuple[int, ...] = (25, 50, 100, 200, 400)
    convergence_s: int = 3
    noise: float = 0.01
    seed: int = 0
    output_space: str = "probs"  # probs: the network with its softmax (NeRCC's); or logits
    robust_batches: int = 30  # wrong-results table: batches per model, at K=8, n=24, S=4
    robust_patterns: int = 8  # straggler and corruption draws per batch there
    corrupt: tuple[int, ...] = (0, 1, 2)  # corrupt results A
    byzantine: int = 2
    # decoded rows against redundancy (run_decoded_rows; batches and patterns as above)
    decoded_rows: bool = False  # run that report instead of the fidelity suite
    redundancy: tuple[float, ...] = DEFAULT_REDUNDANCY  # R: n = K + max(1, ceil((R-1) K))
    group_sizes: tuple[int, ...] = DEFAULT_GROUP_SIZES  # K
    redundancy_codecs: tuple[str, ...] = DEFAULT_CODECS
    straggle_rates: tuple[float, ...] = STRAGGLE_RATES  # each task lost with probability p

    @classmethod
    def quick(cls) -> EvalConfig:
        """A small run (LeNet5 only, K = 8, N = 40) for a first look and for tests."""
        return cls(
            models=("lenet5",),
            k=8,
            n=40,
            stragglers=(0, 8, 16, 24),
            batches=3,
            tune_batches=2,
            patterns=3,
            lam_enc=(0.0, 1e-5, 1e-3),
            lam_dec=(0.0, 1e-7, 1e-5, 1e-3, 1e-1),
            convergence_ns=(20, 40, 80, 160),
            robust_batches=3,
            robust_patterns=3,
        )

    def __post_init__(self) -> None:
        """Checks every field: a bad value raises :class:`ConfigError` naming it. Lists
        become tuples."""
        for name in ("models", "stragglers", "lam_enc", "lam_dec", "convergence_ns", "corrupt"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
                raise ConfigError(f"{name} must be a non-empty list, got {value!r}")
            object.__setattr__(self, name, tuple(value))
        for name in ("k", "n", "batches", "tune_batches", "patterns", "convergence_s", "seed",
                     "robust_batches", "robust_patterns", "byzantine"):  # fmt: skip
            check_int(getattr(self, name), name)
        if not 1 <= self.k <= self.n:
            raise ConfigError(f"need 1 <= k <= n, got k={self.k}, n={self.n}")
        if any(not 0 <= s < self.n for s in self.stragglers):
            raise ConfigError(f"stragglers must be in [0, n={self.n}), got {self.stragglers}")
        for name in ("batches", "tune_batches", "patterns", "robust_batches", "robust_patterns"):
            check_int(getattr(self, name), name, minimum=1)
        check_int(self.convergence_s, "convergence_s", minimum=0)
        if any(isinstance(v, bool) or not isinstance(v, int) or v < 1
               for v in self.convergence_ns):  # fmt: skip
            raise ConfigError(
                f"convergence_ns must be positive integers, got {self.convergence_ns}"
            )
        object.__setattr__(self, "noise", check_float(self.noise, "noise", minimum=0))
        _, n, s = ROBUST_SHAPE
        if not 1 <= self.byzantine <= (n - s - 1) // 2:
            raise ConfigError(f"byzantine must be in [1, {(n - s - 1) // 2}] (n={n}, S={s})")
        if any(not 0 <= a <= n - s - 1 for a in self.corrupt):
            raise ConfigError(f"corrupt results A must be in [0, {n - s - 1}], got {self.corrupt}")
        if not isinstance(self.decoded_rows, bool):
            raise ConfigError(f"decoded_rows must be true or false, got {self.decoded_rows!r}")
        checked = check_settings(self.redundancy, self.group_sizes, self.redundancy_codecs,
                                 self.straggle_rates)  # fmt: skip
        for name, value in zip(("redundancy", "group_sizes", "redundancy_codecs",
                                "straggle_rates"), checked, strict=True):  # fmt: skip
            object.__setattr__(self, name, value)
        if self.output_space not in OUTPUT_SPACES:
            raise ConfigError(
                f"output space must be one of {', '.join(OUTPUT_SPACES)}, got {self.output_space!r}"
            )


def _load(name: str, config: EvalConfig, cache_dir: Path) -> tuple[Model, Any, dict[str, Any]]:
    return load_eval_model(name, cache_dir, dataset=config.dataset, data_dir=config.data_dir,
                           output_space=config.output_space)  # fmt: skip


def run_evaluation(
    config: EvalConfig,
    out_dir: Path,
    cache_dir: Path,
    *,
    echo: Callable[[str], None] = print,
    progress: Callable[[int], None] = lambda _: None,
) -> dict[str, Any]:
    """Run every experiment and write results.json, fidelity.csv, table.md and PNGs."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(config.seed)
    started = time.time()
    rows: list[FidelityRow] = []
    grids: dict[str, LambdaGrid] = {}
    training: dict[str, Any] = {}
    chosen: dict[str, dict[str, str]] = {}
    samples: dict[str, np.ndarray] = {}
    robust: list[RobustnessRow] = []
    for name in config.models:
        echo(f"[{name}] preparing model and data ...")
        model, data, meta = _load(name, config, cache_dir)
        training[name] = meta
        images, labels = data.test_x, data.test_y
        half = len(images) // 2
        tune = batches(model, images[:half], labels[:half], config.k, config.tune_batches, rng)
        held = batches(model, images[half:], labels[half:], config.k, config.batches, rng)
        echo(f"[{name}] lambda grid on the tuning split ...")
        grid = grid_search(
            model, tune, n=config.n, stragglers=config.stragglers, patterns=config.patterns,
            rng=rng, lam_enc=config.lam_enc, lam_dec=config.lam_dec, progress=progress,
        )  # fmt: skip
        grids[name] = grid
        best_dec, _ = grid.best_dec(0.0) if 0.0 in grid.lam_enc else grid.best_dec(grid.best[0])
        codecs = {
            "berrut": "berrut",
            "spline (lam=0)": "spline:lam_enc=0,lam_dec=0",
            "spline (tuned)": grid.spec(),
            "spline (best lam_dec, lam_enc=0)": f"spline:lam_enc=0,lam_dec={best_dec:g}",
            "spline (lam_dec=auto)": "spline:lam_enc=0,lam_dec=auto",
            "letcc": "letcc",
            "mds": "mds",
        }
        if config.output_space == "probs":
            codecs["spline (log space)"] = LOG_SPLINE
            codecs["berrut (log space)"] = "berrut:space=log"
        if config.n % config.k == 0:
            codecs["replication"] = "replication"
        chosen[name] = codecs
        echo(f"[{name}] fidelity on the held-out split: {len(codecs)} codecs ...")
        unique = list(dict.fromkeys(codecs.values()))  # e.g. tuned may equal lam=0
        model_rows = measure_fidelity(
            name, model, held, unique, n=config.n, stragglers=config.stragglers,
            patterns=config.patterns, rng=np.random.default_rng([config.seed, 1]),
            progress=progress,
        )  # fmt: skip
        rows += [
            replace(r, extra={**r.extra, "label": label})
            for label, spec in codecs.items()
            for r in model_rows
            if r.codec == spec
        ]
        echo(f"[{name}] wrong results: A in {config.corrupt}, byzantine={config.byzantine} ...")
        k, n, s = ROBUST_SHAPE
        robust_data = batches(model, images[half:], labels[half:], k, config.robust_batches, rng)
        robust += measure_robustness(
            name, model, robust_data, _robust_codecs(config), n=n, s=s, corrupt=config.corrupt,
            byzantine=config.byzantine, patterns=config.robust_patterns, seed=config.seed,
            progress=progress,
        )  # fmt: skip
        if name == config.models[0]:
            x = held[0].x
            samples = {"original": x}
            for label, spec in (("berrut", "berrut"), ("spline (tuned)", grid.spec())):
                samples[f"{label} coded"] = build_codec(spec, config.k, config.n, 0).encode(x)
    echo("convergence in N ...")
    curves = _convergence(config, cache_dir, rng)
    summary = _summary(rows, grids, curves, np.random.default_rng([config.seed, 2]))
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "training": training,
        "codecs": chosen,
        "fidelity": [asdict(r) for r in rows],
        "lambda_grids": {
            m: {"lam_enc": g.lam_enc, "lam_dec": g.lam_dec, "mse": g.mse.tolist(), "best": g.best}
            for m, g in grids.items()
        },
        "convergence": [{**asdict(c), "slope": c.slope} for c in curves],
        "robustness": [asdict(r) for r in robust],
        "summary": summary,
        "seconds": round(time.time() - started, 1),
    }
    _write(out_dir, result, rows, grids, curves, samples, robust)
    return result


LOG_SPLINE = "spline:lam_enc=0,lam_dec=0,space=log"


def _robust_codecs(config: EvalConfig) -> list[str]:
    specs = ["berrut", "spline:lam_enc=0,lam_dec=auto"]
    if config.output_space == "probs":
        specs.append(LOG_SPLINE)
    return specs


def _convergence(
    config: EvalConfig, cache_dir: Path, rng: np.random.Generator
) -> list[ConvergenceCurve]:
    specs = ["berrut", "spline:lam_enc=0,lam_dec=0", "letcc"]
    k = 6
    smooth = toy_model("tanh", in_dim=16, out_dim=4)
    xs = [rng.standard_normal((k, 16)) for _ in range(4)]
    curves = convergence("smooth tanh", smooth, xs, specs, ns=config.convergence_ns,
                         s=config.convergence_s, patterns=config.patterns, rng=rng)  # fmt: skip
    curves += convergence(
        "smooth tanh", smooth, xs, [*specs[:2], "spline:lam_enc=0,lam_dec=auto",
                                   "letcc"],
        ns=config.convergence_ns, s=config.convergence_s, patterns=config.patterns, rng=rng,
        noise=config.noise,
    )  # fmt: skip
    if "lenet5" in config.models:
        model, data, _ = _load("lenet5", config, cache_dir)
        images = data.test_x
        lenet_x = [images[rng.choice(len(images), k, replace=False)] for _ in range(4)]
        curves += convergence(
            "lenet5", model, lenet_x, specs, ns=config.convergence_ns,
            s=config.convergence_s, patterns=config.patterns, rng=rng,
        )  # fmt: skip
    return curves


def _over_s(rows: list[FidelityRow], model: str, label: str, attr: str = "mse") -> float:
    values = [getattr(r, attr) for r in rows if r.model == model and r.extra["label"] == label]
    return float(np.nanmean(values)) if values else float("nan")


def _per_s_ratio(rows: list[FidelityRow], model: str) -> float:
    """Mean over S of MSE(tuned spline) / MSE(berrut): every S weighs the same."""
    by = {(r.extra["label"], r.s): r.mse for r in rows if r.model == model}
    ratios = [by["spline (tuned)", s] / by[BASELINE, s] for (label, s) in by if label == BASELINE]
    return float(np.mean(ratios))


def ratio_with_ci(
    rows: list[FidelityRow], model: str, label: str, rng: np.random.Generator
) -> dict[str, Any]:
    """MSE(label) / MSE(berrut) the paper's way (ratio of S-averaged MSE), its 95% bootstrap
    interval over batches (the batches are the independent draws; every codec sees the same
    ones), and the per-S ratios."""

    def per_batch(lab: str) -> np.ndarray:  # (S, batches)
        sel = sorted((r for r in rows if r.model == model and r.extra["label"] == lab),
                     key=lambda r: r.s)  # fmt: skip
        return np.array([r.extra["batch_mse"] for r in sel])

    mine, base = per_batch(label), per_batch("berrut")
    ratio = float(np.nanmean(mine) / np.nanmean(base))
    draws = rng.integers(0, mine.shape[1], (BOOTSTRAP, mine.shape[1]))
    boot = np.nanmean(mine[:, draws], axis=(0, 2)) / np.nanmean(base[:, draws], axis=(0, 2))
    low, high = np.nanpercentile(boot, [2.5, 97.5])
    per_s = np.nanmean(mine, axis=1) / np.nanmean(base, axis=1)
    return {"ratio": ratio, "ci95": [float(low), float(high)], "per_s": per_s.tolist()}


def _summary(
    rows: list[FidelityRow],
    grids: dict[str, LambdaGrid],
    curves: list[ConvergenceCurve],
    rng: np.random.Generator,
) -> dict[str, Any]:
    out: dict[str, Any] = {"models": {}}
    for model, grid in grids.items():
        berrut = _over_s(rows, model, "berrut")
        tuned = _over_s(rows, model, "spline (tuned)")
        auto = _over_s(rows, model, "spline (lam_dec=auto)")
        best_fixed = _over_s(rows, model, "spline (best lam_dec, lam_enc=0)")
        out["models"][model] = {
            "tuned_pair": {"lam_enc": grid.best[0], "lam_dec": grid.best[1]},
            "tuned_over_berrut": tuned / berrut,
            "tuned_over_berrut_per_s_mean": _per_s_ratio(rows, model),
            "target_tuned_over_berrut": 0.77,
            "auto_over_best_fixed": auto / best_fixed,
            "target_auto_over_best_fixed": 1.05,
            "over_berrut": {  # every approximate row against the baseline's
                label: ratio_with_ci(rows, model, label, rng)
                for label, spec in dict.fromkeys(
                    (r.extra["label"], r.codec) for r in rows if r.model == model
                )
                if label != BASELINE and not plan_codec(spec).exact_for_any_model
            },
        }
    smooth = [c for c in curves if c.function == "smooth tanh" and not c.noise]
    out["slopes"] = {
        f"{c.function}{' noisy' if c.noise else ''}: {c.codec}": c.slope for c in curves
    }
    spline = [c for c in smooth if c.codec == "spline:lam_enc=0,lam_dec=0"]
    out["noiseless_spline_slope"] = spline[0].slope if spline else None
    out["target_slope"] = -2.5
    return out


def _write(
    out_dir: Path,
    result: dict[str, Any],
    rows: list[FidelityRow],
    grids: dict[str, LambdaGrid],
    curves: list[ConvergenceCurve],
    samples: dict[str, np.ndarray],
    robust: list[RobustnessRow],
) -> None:
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=float))
    with open(out_dir / "fidelity.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "codec", "label", "k", "n", "s", "trials", "decoded", "mse",
                         "mse_std", "rel_acc", "rel_acc_std"])  # fmt: skip
        for r in rows:
            writer.writerow([r.model, r.codec, r.extra["label"], r.k, r.n, r.s, r.trials,
                             r.decoded, r.mse, r.mse_std, r.rel_acc, r.rel_acc_std])  # fmt: skip
    (out_dir / "table.md").write_text(
        markdown_table(rows) + "\n" + ratio_table(result["summary"]) + "\n"
        + robustness_table(robust)
    )  # fmt: skip
    plots.metric_vs_s_png(rows, "mse", out_dir / "mse_vs_s.png")
    plots.metric_vs_s_png(rows, "rel_acc", out_dir / "relacc_vs_s.png")
    plots.lambda_sweep_png(grids, out_dir / "lambda_sweep.png")
    plots.convergence_png(curves, out_dir / "mse_vs_n.png")
    if samples:
        plots.coded_samples_png(samples, out_dir / "coded_samples.png")


def markdown_table(rows: list[FidelityRow]) -> str:
    """NeRCC Table 1: MSE and RelAcc (mean ± std over the S range) per model and method."""
    models = list(dict.fromkeys(r.model for r in rows))
    labels = list(dict.fromkeys(r.extra["label"] for r in rows))
    head = "| Method | " + " | ".join(f"{m} MSE | {m} RelAcc" for m in models) + " |"
    sep = "|---|" + "---|---|" * len(models)
    lines = [head, sep]
    for label in labels:
        cells = []
        for m in models:
            sel = [r for r in rows if r.model == m and r.extra["label"] == label]
            mse = np.array([r.mse for r in sel])
            acc = np.array([r.rel_acc for r in sel])
            decoded = sum(r.decoded for r in sel) / max(sum(r.trials for r in sel), 1)
            note = f" (decoded {decoded:.0%})" if sel and decoded < 1 else ""
            cells.append(f"{np.nanmean(mse):.3g} ± {np.nanstd(mse):.2g}{note}" if sel else "–")
            cells.append(f"{np.nanmean(acc):.3f} ± {np.nanstd(acc):.3f}" if sel else "–")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
