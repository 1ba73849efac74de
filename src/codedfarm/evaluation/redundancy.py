"""``codedfarm eval --decoded-rows``: top-1 accuracy of decoded rows against the redundancy
budget R the server codes its groups with (docs/redundancy.md).

A group of K rows runs on ``n = K + max(1, ceil((R - 1) K))`` tasks (the server's
:func:`~codedfarm.coordinator.resolution.redundancy_workers`), coded with a systematic
code by default: tasks ``0..K-1`` compute the rows themselves, the others parity. Per
(model, codec, K, R), on random batches of the model's test images:

- **lost rows**: ``e`` own results dropped at random (e = 1, and 2 where ``n - K >= 2``),
  every other result in. Scored on the dropped rows: agreement of the decoded row's top-1
  with the model's own (95% bootstrap interval over batches, the independent draws), its
  accuracy against the labels, and the model's own accuracy on the same rows.
- **stragglers**: every task, own or parity, lost independently with probability p (1%,
  5%, 10%). The overall agreement over all K rows (a row whose own result is in is
  exact): ``sum_m Binom(m; n, p) A(m)``, with ``A(m)`` the mean agreement over random
  sets of ``m`` lost tasks, for every ``m`` up to where the binomial tail is below
  ``TAIL`` (the tail counts as total loss). Stratifying on ``m`` measures the rare
  patterns as well as the common ones, and one set of draws serves every p.

A group that cannot be decoded (an exact code with too few results) scores 0 on every row.
A code that is not systematic decodes every row from whatever came back; its "lost rows"
are then the rows of the tasks dropped, and ``agreement_by_lost[1]`` (every row, one
random task of n lost) is ApproxIFER's measure.
"""

from __future__ import annotations

import csv
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from codedfarm.codecs import plan_codec
from codedfarm.codecs.base import Codec
from codedfarm.coordinator.resolution import redundancy_workers
from codedfarm.errors import ConfigError, NotEnoughResultsError
from codedfarm.evaluation.fidelity import Batch, Model, batches
from codedfarm.evaluation.loading import load_eval_model
from codedfarm.evaluation.published import PUBLISHED, published_table

if TYPE_CHECKING:
    from codedfarm.evaluation.runner import EvalConfig

__all__ = [
    "DEFAULT_CODECS",
    "DEFAULT_GROUP_SIZES",
    "DEFAULT_MODELS",
    "DEFAULT_REDUNDANCY",
    "STRAGGLE_RATES",
    "DropScore",
    "RedundancyRow",
    "StraggleScore",
    "check_settings",
    "decoded_rows_table",
    "max_rate",
    "measure_decoded_rows",
    "meets_target",
    "run_decoded_rows",
    "score_codec",
]

DEFAULT_REDUNDANCY = (1.25, 1.5, 2.0)
DEFAULT_GROUP_SIZES = (8,)
DEFAULT_CODECS = ("berrut:systematic=true", "spline:systematic=true")  # space=auto
DEFAULT_MODELS = ("lenet5", "repvgg")
STRAGGLE_RATES = (0.01, 0.05, 0.10)
DROPS = (1, 2)
TARGET_RATE, TARGET_AGREEMENT = 0.05, 0.99  # what the server's defaults are chosen for
TAIL = 1e-6
BOOTSTRAP = 2000


@dataclass(frozen=True)
class DropScore:
    """``lost`` own results dropped per group, scored on the ``rows`` decoded rows."""

    lost: int
    rows: int
    agreement: float  # top-1 of the decoded row == the model's own top-1
    ci95: tuple[float, float]
    accuracy: float  # decoded rows against the labels
    own_accuracy: float  # the model's own outputs on the same rows, against the labels
    accuracy_ci95: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class StraggleScore:
    """Every task lost with probability ``rate``; scores over all K rows."""

    rate: float
    agreement: float
    ci95: tuple[float, float]
    accuracy: float
    accuracy_ci95: tuple[float, float] = (math.nan, math.nan)


@dataclass(frozen=True)
class RedundancyRow:
    model: str
    codec: str
    k: int
    redundancy: float
    n: int
    batches: int
    base_accuracy: float  # the model's own top-1 accuracy on every image of the batches
    drops: tuple[DropScore, ...]
    straggling: tuple[StraggleScore, ...]
    # over all K rows when exactly m random tasks of n are lost, m = 0, 1, ... (the A(m)
    # the straggling scores weigh; m = 1 is ApproxIFER's setting, S = 1)
    agreement_by_lost: tuple[float, ...] = ()
    accuracy_by_lost: tuple[float, ...] = ()


def _numbers(value: Any, name: str) -> tuple[Any, ...]:
    if isinstance(value, str) or not isinstance(value, (tuple, list)) or not value:
        raise ConfigError(f"{name} must be a non-empty list, got {value!r}")
    return tuple(value)


def _real(v: Any) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def check_settings(
    redundancy: Any, group_sizes: Any, codecs: Any, rates: Any
) -> tuple[tuple[float, ...], tuple[int, ...], tuple[str, ...], tuple[float, ...]]:
    """The decoded-rows settings as tuples; a bad one raises :class:`ConfigError` (a codec
    spec that does not parse, the codec's own error)."""
    rs = _numbers(redundancy, "redundancy")
    for r in rs:
        if not (_real(r) and r >= 1):
            raise ConfigError(f"redundancy R must be a number >= 1 (tasks per row), got {r!r}")
    ks = _numbers(group_sizes, "group_sizes")
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ConfigError(f"group size K must be an integer >= 1, got {k!r}")
    ps = _numbers(rates, "straggle_rates")
    for p in ps:
        if not (_real(p) and 0 <= p < 1):
            raise ConfigError(f"a straggle rate must be in [0, 1), got {p!r}")
    specs = _numbers(codecs, "redundancy_codecs")
    for spec in specs:
        plan_codec(str(spec))
    return tuple(float(r) for r in rs), ks, tuple(map(str, specs)), tuple(map(float, ps))


def _max_lost(n: int, rate: float) -> int:
    """The smallest m with P(more than m of n tasks lost) < TAIL at ``rate``."""
    tail = 1.0
    for m in range(n + 1):
        tail -= math.comb(n, m) * rate**m * (1 - rate) ** (n - m)
        if tail < TAIL:
            return m
    return n


def _decode(codec: Codec, results: npt.NDArray[Any], lost: Sequence[int]) -> Any:
    """The decoded ``(k, outputs)`` without the ``lost`` tasks, or None if undecodable."""
    gone = set(lost)
    workers = [w for w in range(len(results)) if w not in gone]
    if not workers:
        return None
    try:
        return codec.decode(results[workers], workers)
    except NotEnoughResultsError:
        return None


def _tops(codec: Codec, results: npt.NDArray[Any], lost: Sequence[int], own_rows: bool) -> Any:
    """Top-1 of each of the ``k`` rows without the ``lost`` tasks (-1: no answer). A group
    that cannot be decoded answers nothing, or with ``own_rows`` (a systematic code) the
    rows whose own results are in, as ``serve`` answers each row the moment it is."""
    values = _decode(codec, results, lost)
    if values is not None:
        return values.argmax(-1)
    top = np.full(codec.k, -1)
    if own_rows and codec.systematic:
        rows = [i for i in range(codec.k) if i not in set(lost)]
        top[rows] = results[rows].argmax(-1)
    return top


def _interval(samples: npt.NDArray[np.float64]) -> tuple[float, float]:
    low, high = np.nanpercentile(samples, [2.5, 97.5])
    return float(low), float(high)


def measure_decoded_rows(
    model_name: str,
    model: Model,
    data: Sequence[Batch],
    spec: str,
    *,
    redundancy: float,
    patterns: int,
    rates: Sequence[float] = STRAGGLE_RATES,
    seed: int = 0,
    progress: Callable[[int], None] = lambda _: None,
) -> RedundancyRow:
    """One row: ``data`` the batches (K rows each), ``spec`` the codec, ``patterns`` the
    draws per batch of each lost-row count and of each number of lost tasks."""
    k = len(data[0].x)
    n = redundancy_workers(k, redundancy)
    codec = plan_codec(spec).codec(k, n, n - k)

    def run(batch: Batch) -> npt.NDArray[Any]:
        return model(codec.encode(batch.x).astype(batch.x.dtype))

    return score_codec(model_name, codec, data, run, spec=spec, redundancy=redundancy,
                       patterns=patterns, rates=rates, seed=seed, progress=progress)  # fmt: skip


def score_codec(
    model_name: str,
    codec: Codec,
    data: Sequence[Batch],
    run: Callable[[Batch], npt.NDArray[Any]],
    *,
    spec: str,
    redundancy: float,
    patterns: int,
    rates: Sequence[float] = STRAGGLE_RATES,
    seed: int = 0,
    progress: Callable[[int], None] = lambda _: None,
    own_rows: bool = False,
) -> RedundancyRow:
    """The scores of :func:`measure_decoded_rows` for a built ``codec`` whose ``n`` task
    results for a batch are ``run(batch)`` (the model on every coded input, or, for
    ``parm``, the parity model on its parity tasks: evaluation/degraded.py). The loss
    patterns depend on ``seed``, K and n only: every codec of the same shape sees the same.
    ``own_rows``: a group that cannot be decoded still answers the rows whose own results
    are in (``serve``'s per-row answers) instead of scoring 0 on every row."""
    k, n = codec.k, codec.n
    rng = np.random.default_rng([seed, k, n])  # the same draws for every codec
    drops = [e for e in DROPS if e <= min(n - k, k)]
    m_max = _max_lost(n, max(rates))
    counts = np.zeros((len(drops), len(data), 4))  # agree, correct, own correct, rows
    mean_agree = np.zeros((len(data), m_max + 1))
    mean_correct = np.zeros((len(data), m_max + 1))
    for b, batch in enumerate(data):
        results = run(batch)
        own, labels = batch.truth.argmax(-1), batch.labels
        for i, e in enumerate(drops):
            for _ in range(patterns):
                missing = rng.choice(k, e, replace=False)
                top = _tops(codec, results, missing.tolist(), own_rows)[missing]
                counts[i, b] += (np.sum(top == own[missing]), np.sum(top == labels[missing]),
                                 np.sum(own[missing] == labels[missing]), e)  # fmt: skip
        for m in range(m_max + 1):
            tops = [_tops(codec, results, rng.choice(n, m, replace=False).tolist(), own_rows)
                    for _ in range(patterns if m else 1)]  # fmt: skip
            mean_agree[b, m] = np.mean([np.mean(t == own) for t in tops])
            mean_correct[b, m] = np.mean([np.mean(t == labels) for t in tops])
        progress(1)
    boot_rng = np.random.default_rng([seed, 2])
    draws_b = boot_rng.integers(0, len(data), (BOOTSTRAP, len(data)))
    drop_scores = []
    for i, e in enumerate(drops):
        c = counts[i]
        boot = c[draws_b, :2].sum(1) / c[draws_b, 3].sum(1)[:, None]  # agree, correct
        drop_scores.append(DropScore(
            e, int(c[:, 3].sum()), float(c[:, 0].sum() / c[:, 3].sum()), _interval(boot[:, 0]),
            float(c[:, 1].sum() / c[:, 3].sum()), float(c[:, 2].sum() / c[:, 3].sum()),
            _interval(boot[:, 1]),
        ))  # fmt: skip
    straggling = []
    for p in rates:
        weights = np.array([math.comb(n, m) * p**m * (1 - p) ** (n - m)
                            for m in range(m_max + 1)])  # fmt: skip
        per_batch = mean_agree @ weights  # the tail beyond m_max scores 0
        correct = mean_correct @ weights
        straggling.append(StraggleScore(
            float(p), float(per_batch.mean()), _interval(per_batch[draws_b].mean(1)),
            float(correct.mean()), _interval(correct[draws_b].mean(1)),
        ))  # fmt: skip
    base = float(np.mean([np.mean(b.truth.argmax(-1) == b.labels) for b in data]))
    return RedundancyRow(
        model_name, spec, k, float(redundancy), n, len(data), base, tuple(drop_scores),
        tuple(straggling), tuple(map(float, mean_agree.mean(0))),
        tuple(map(float, mean_correct.mean(0))),
    )  # fmt: skip


def run_decoded_rows(
    config: EvalConfig,
    out_dir: Path,
    cache_dir: Path,
    *,
    echo: Callable[[str], None] = print,
    progress: Callable[[int], None] = lambda _: None,
) -> dict[str, Any]:
    """Every (model, K, R, codec) row of ``config``; writes results.json, decoded_rows.csv
    and table.md (the table, then the published figures) to ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    rows: list[RedundancyRow] = []
    training: dict[str, Any] = {}
    for name in config.models:
        echo(f"[{name}] preparing model and data ...")
        model, data, training[name] = load_eval_model(
            name, cache_dir, dataset=config.dataset, data_dir=config.data_dir,
            output_space=config.output_space,
        )  # fmt: skip
        for k in config.group_sizes:
            rng = np.random.default_rng([config.seed, k])
            held = batches(model, data.test_x, data.test_y, k, config.batches, rng)
            for r in config.redundancy:
                echo(f"[{name}] K={k}, R={r:g}: n={redundancy_workers(k, r)} tasks ...")
                rows += [
                    measure_decoded_rows(
                        name,
                        model,
                        held,
                        spec,
                        redundancy=r,
                        patterns=config.patterns,
                        rates=config.straggle_rates,
                        seed=config.seed,
                        progress=progress,
                    )
                    for spec in config.redundancy_codecs
                ]
    result = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()},
        "training": training,
        "summary": {
            "rows": [asdict(r) for r in rows],
            "target": {"straggle_rate": TARGET_RATE, "agreement": TARGET_AGREEMENT},
            "meets": meets_target(rows),
            "published": [{**asdict(f), "redundancy": f.redundancy} for f in PUBLISHED],
        },
        "seconds": round(time.time() - started, 1),
    }
    (out_dir / "results.json").write_text(json.dumps(result, indent=2, default=float))
    _write_csv(out_dir / "decoded_rows.csv", rows)
    (out_dir / "table.md").write_text(decoded_rows_table(rows) + "\n" + published_table())
    return result


def meets_target(rows: Sequence[RedundancyRow]) -> list[dict[str, Any]]:
    """Per (model, codec, K): the smallest R whose overall agreement at ``TARGET_RATE``
    stragglers is at least ``TARGET_AGREEMENT`` (None if none), the agreement at every R
    measured, and per R the highest straggle rate that still meets it (``max_rate``, to
    0.1%, at most the highest rate measured)."""
    out = []
    for key in dict.fromkeys((r.model, r.codec, r.k) for r in rows):
        mine = sorted((r for r in rows if (r.model, r.codec, r.k) == key),
                      key=lambda r: r.redundancy)  # fmt: skip
        at = {r.redundancy: _overall(r, TARGET_RATE) for r in mine}
        ok = [red for red, a in at.items() if a is not None and a >= TARGET_AGREEMENT]
        out.append({"model": key[0], "codec": key[1], "k": key[2],
                    "smallest_redundancy": ok[0] if ok else None,
                    "agreement": {f"{red:g}": a for red, a in at.items()},
                    "max_rate": {f"{r.redundancy:g}": max_rate(r) for r in mine}})  # fmt: skip
    return out


def max_rate(row: RedundancyRow, target: float = TARGET_AGREEMENT) -> float | None:
    """The highest straggle rate p (a grid of 0.1%, up to the highest rate measured) below
    which the overall agreement ``sum_m Binom(m; n, p) A(m)`` stays at least ``target``;
    None when not even the lowest step meets it."""
    a = np.array(row.agreement_by_lost)
    top = max((s.rate for s in row.straggling), default=0.0)
    best = None
    for p in np.arange(1, round(top * 1000) + 1) / 1000:
        weights = [math.comb(row.n, m) * p**m * (1 - p) ** (row.n - m) for m in range(len(a))]
        if float(a @ np.array(weights)) < target:
            break
        best = float(p)
    return best


def _overall(row: RedundancyRow, rate: float) -> float | None:
    return next((s.agreement for s in row.straggling if math.isclose(s.rate, rate)), None)


def _ci(low_high: tuple[float, float], digits: int) -> str:
    return f"[{low_high[0]:.{digits}f}, {low_high[1]:.{digits}f}]"


def decoded_rows_table(rows: Sequence[RedundancyRow]) -> str:
    """Markdown: per model, codec, K and R the lost-row scores and the overall agreement
    at each straggle rate."""
    rates = list(dict.fromkeys(s.rate for r in rows for s in r.straggling))
    head = ("| model | codec | K | R | n | model's accuracy | 1 lost: agreement [95% CI] | "
            "1 lost: accuracy (model's) | 2 lost: agreement [95% CI] | 2 lost: accuracy "
            "(model's) | " + " | ".join(f"overall, {p:.0%} stragglers [95% CI]" for p in rates)
            + " |")  # fmt: skip
    lines = [head, "|---" * (10 + len(rates)) + "|"]
    for r in rows:
        cells = [r.model, r.codec, str(r.k), f"{r.redundancy:g}", str(r.n)]
        cells.append(f"{r.base_accuracy:.3f}")
        by = {d.lost: d for d in r.drops}
        for e in DROPS:
            d = by.get(e)
            if d is None:
                cells += ["-", "-"]
                continue
            cells.append(f"{d.agreement:.3f} {_ci(d.ci95, 3)} ({d.rows} rows)")
            cells.append(f"{d.accuracy:.3f} ({d.own_accuracy:.3f})")
        by_rate = {s.rate: s for s in r.straggling}
        cells += [f"{by_rate[p].agreement:.4f} {_ci(by_rate[p].ci95, 4)}" for p in rates]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_csv(path: Path, rows: Sequence[RedundancyRow]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["model", "codec", "k", "redundancy", "n", "batches", "base_accuracy",
                         "scenario", "rows", "agreement", "ci_low", "ci_high", "accuracy",
                         "own_accuracy"])  # fmt: skip
        for r in rows:
            head = [r.model, r.codec, r.k, r.redundancy, r.n, r.batches, r.base_accuracy]
            for d in r.drops:
                writer.writerow([*head, f"lost={d.lost}", d.rows, d.agreement, *d.ci95,
                                 d.accuracy, d.own_accuracy])  # fmt: skip
            for s in r.straggling:
                writer.writerow([*head, f"straggle={s.rate:g}", "", s.agreement, *s.ci95,
                                 s.accuracy, ""])  # fmt: skip
