"""PNG figures of the evaluation (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from codedfarm.evaluation.convergence import ConvergenceCurve
from codedfarm.evaluation.fidelity import FidelityRow
from codedfarm.evaluation.tuning import LambdaGrid

__all__ = [
    "coded_samples_png",
    "convergence_png",
    "headless_pyplot",
    "lambda_sweep_png",
    "metric_vs_s_png",
]


def headless_pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def metric_vs_s_png(rows: Sequence[FidelityRow], metric: str, path: Path) -> None:
    """One panel per model: ``metric`` (mse or rel_acc) against S, a line per codec."""
    plt = headless_pyplot()
    models = sorted({r.model for r in rows}, key=[r.model for r in rows].index)
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4), squeeze=False)
    for ax, model in zip(axes[0], models, strict=True):
        exact = []
        labels = dict.fromkeys(r.extra.get("label", r.codec) for r in rows if r.model == model)
        for label in labels:
            pts = [
                (r.s, getattr(r, metric))
                for r in rows
                if r.model == model and r.extra.get("label", r.codec) == label
            ]
            if metric == "mse" and all(v < 1e-9 for _, v in pts):
                exact.append(label)  # ~0 on a log axis would squash every other line
                continue
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=label)
        ax.set_title(model + (f" (exact, not shown: {', '.join(exact)})" if exact else ""),
                     fontsize=9)  # fmt: skip
        ax.set_xlabel("stragglers S")
        ax.set_ylabel("MSE" if metric == "mse" else "RelAcc")
        if metric == "mse":
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def lambda_sweep_png(grids: dict[str, LambdaGrid], path: Path) -> None:
    """MSE against lam_dec, a line per lam_enc (NeRCC's smoothness-effect figure)."""
    plt = headless_pyplot()
    fig, axes = plt.subplots(1, len(grids), figsize=(5 * len(grids), 4), squeeze=False)
    for ax, (model, grid) in zip(axes[0], grids.items(), strict=True):
        xs = np.array(grid.lam_dec)
        shown = np.where(xs == 0, xs[xs > 0].min() / 10, xs)
        for i, le in enumerate(grid.lam_enc):
            ax.plot(shown, grid.mse[i], marker=".", label=f"lam_enc={le:g}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("lam_dec (leftmost point: 0)")
        ax.set_ylabel("MSE (mean over S)")
        ax.set_title(model)
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def convergence_png(curves: Sequence[ConvergenceCurve], path: Path) -> None:
    plt = headless_pyplot()
    groups = list(dict.fromkeys((c.function, c.noise) for c in curves))
    fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 4), squeeze=False)
    for ax, (function, noise) in zip(axes[0], groups, strict=True):
        for c in curves:
            if (c.function, c.noise) == (function, noise):
                ax.plot(c.ns, c.mse, marker="o", label=f"{c.codec} (slope {c.slope:.2f})")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("workers N")
        ax.set_ylabel("MSE")
        ax.set_title(f"{function}, S={curves[0].s}" + (f", noise {noise:g}" if noise else ""))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def coded_samples_png(images: dict[str, np.ndarray], path: Path, columns: int = 8) -> None:
    """Rows of images: the originals, then each codec's coded inputs, ``(B, C, H, W)``."""
    plt = headless_pyplot()
    fig, axes = plt.subplots(
        len(images), columns, figsize=(1.3 * columns, 1.4 * len(images)), squeeze=False
    )
    for row, (label, batch) in enumerate(images.items()):
        for col in range(columns):
            ax = axes[row][col]
            ax.axis("off")
            if col < len(batch):
                ax.imshow(batch[col].mean(0), cmap="gray")
        axes[row][0].set_title(label, fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
