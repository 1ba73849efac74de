"""Markdown for ``codedfarm eval``'s table.md: the ratios to Berrut with their intervals,
and the wrong-results table."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from codedfarm.evaluation.robustness import RobustnessRow

__all__ = ["ratio_table", "robustness_table"]


def ratio_table(summary: dict[str, Any]) -> str:
    """MSE / Berrut's MSE per method and model: the ratio of S-averaged MSE with its 95%
    bootstrap interval over batches, then the per-S ratios."""
    lines = [
        "| Method | model | MSE / berrut (ratio of S-averaged MSE, 95% CI) | per S |",
        "|---|---|---|---|",
    ]
    for model, values in summary["models"].items():
        for label, r in values.get("over_berrut", {}).items():
            low, high = r["ci95"]
            per_s = ", ".join(f"{x:.2f}" for x in r["per_s"])
            lines.append(f"| {label} | {model} | {r['ratio']:.3f} [{low:.3f}, {high:.3f}] | "
                         f"{per_s} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def robustness_table(rows: Sequence[RobustnessRow]) -> str:
    """MSE and RelAcc against the number of corrupt results A, plain and with byzantine."""
    if not rows:
        return ""
    lines = [
        "| model | codec | corruption | A | MSE plain | MSE byzantine | MSE results absent | "
        "byzantine / absent | byzantine / clean plain | RelAcc plain | RelAcc byzantine | "
        "found | honest rejected per decode |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.model} | {r.codec} | {r.mode} | {r.a} | {r.mse_plain:.3g} | "
            f"{r.mse_byzantine:.3g} | {r.mse_absent:.3g} | {r.mse_byzantine / r.mse_absent:.3f} | "
            f"{r.mse_byzantine / r.mse_clean:.3f} | {r.rel_acc_plain:.3f} | "
            f"{r.rel_acc_byzantine:.3f} | {r.found:.2f} | {r.false_rejections:.2f} |"
        )
    return "\n".join(lines) + "\n"
