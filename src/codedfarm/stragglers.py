"""Straggler models: which coded tasks are slowed (and by how much) or fail.

Spec strings (combine several with ``+``; delays add up, failures OR)::

    none
    fixed:S=4,delay=2.0          S random tasks of the batch sleep `delay` seconds
    exp:shift=0.05,rate=20       every task sleeps shift + Exp(rate)   (Lee et al.)
    pareto:scale=0.01,alpha=1.5  every task sleeps a Pareto(alpha) time with minimum `scale`
    fail:p=0.05                  every task dies without a result with probability p
    late:p=0.05,delay=0.2        every task, independently with probability p, sleeps
                                 `delay` seconds (a fraction of late tasks, not a fixed
                                 number per batch: unlike ``fixed``, also a worker's spec)

Delays are slept inside the task, never via Celery countdown/ETA. A worker may also be
persistently slow (``codedfarm worker --slowdown 3``), which multiplies its compute time.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from codedfarm.errors import StragglerSpecError

__all__ = ["StragglerModel", "StragglerSpec", "TaskFate", "parse_straggler_spec"]


@dataclass(frozen=True)
class TaskFate:
    """What happens to one coded task: sleep ``delay`` seconds, then maybe fail."""

    delay: float = 0.0
    fail: bool = False

    @property
    def slowed(self) -> bool:
        return self.delay > 0 or self.fail


@dataclass(frozen=True)
class StragglerModel:
    """One term of a spec: ``kind`` with its parameters."""

    kind: str
    params: tuple[tuple[str, float], ...] = ()

    def param(self, name: str) -> float:
        return dict(self.params)[name]

    def sample(self, n: int, rng: np.random.Generator) -> list[TaskFate]:
        if self.kind == "none":
            return [TaskFate()] * n
        if self.kind == "fixed":
            count = min(int(self.param("S")), n)
            slow = set(rng.choice(n, count, replace=False).tolist()) if count else set()
            delay = self.param("delay")
            return [TaskFate(delay if i in slow else 0.0) for i in range(n)]
        if self.kind == "exp":
            draws = self.param("shift") + rng.exponential(1.0 / self.param("rate"), n)
            return [TaskFate(float(d)) for d in draws]
        if self.kind == "pareto":
            draws = self.param("scale") * (1.0 + rng.pareto(self.param("alpha"), n))
            return [TaskFate(float(d)) for d in draws]
        if self.kind == "fail":
            fails = rng.random(n) < self.param("p")
            return [TaskFate(0.0, bool(f)) for f in fails]
        if self.kind == "late":
            late = rng.random(n) < self.param("p")
            delay = self.param("delay")
            return [TaskFate(delay if flag else 0.0) for flag in late]
        raise AssertionError(self.kind)  # parse_straggler_spec admits no other kind

    def __str__(self) -> str:
        if not self.params:
            return self.kind
        return f"{self.kind}:" + ",".join(f"{k}={v:g}" for k, v in self.params)


_KINDS: dict[str, tuple[str, ...]] = {
    "none": (),
    "fixed": ("S", "delay"),
    "exp": ("shift", "rate"),
    "pareto": ("scale", "alpha"),
    "fail": ("p",),
    "late": ("p", "delay"),
}


@dataclass(frozen=True)
class StragglerSpec:
    """A parsed spec: the sum of its models."""

    models: tuple[StragglerModel, ...]

    @property
    def per_batch(self) -> bool:
        """True if the spec picks tasks within a batch (``fixed``), so needs the whole batch."""
        return any(m.kind == "fixed" for m in self.models)

    @property
    def trivial(self) -> bool:
        """True for ``none``: every task runs at once and succeeds (no draw needed)."""
        return all(m.kind == "none" for m in self.models)

    def sample(self, n: int, rng: np.random.Generator | None = None) -> list[TaskFate]:
        """Fates of ``n`` tasks."""
        rng = rng or np.random.default_rng()
        fates = [TaskFate()] * n
        for model in self.models:
            fates = [
                TaskFate(a.delay + b.delay, a.fail or b.fail)
                for a, b in zip(fates, model.sample(n, rng), strict=True)
            ]
        return fates

    def __str__(self) -> str:
        return "+".join(str(m) for m in self.models)


def _model(term: str, spec: str) -> StragglerModel:
    kind, _, rest = term.partition(":")
    kind = kind.strip()
    if kind not in _KINDS:
        raise StragglerSpecError(
            f"unknown straggler model {kind!r} in {spec!r}; choose from {', '.join(_KINDS)}"
        )
    wanted = _KINDS[kind]
    values: dict[str, float] = {}
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in wanted:
            raise StragglerSpecError(
                f"bad parameter {item!r} for straggler model {kind!r} in {spec!r}; "
                f"expected {', '.join(wanted) or 'none'}"
            )
        try:
            values[key] = float(raw)
        except ValueError as exc:
            raise StragglerSpecError(f"{kind}: {key} must be a number, got {raw!r}") from exc
        if not math.isfinite(values[key]) or values[key] < 0:
            raise StragglerSpecError(f"{kind}: {key} must be finite and >= 0, got {raw!r}")
    missing = [k for k in wanted if k not in values]
    if missing:
        raise StragglerSpecError(
            f"straggler model {kind!r} needs {', '.join(wanted)}; missing {', '.join(missing)}"
        )
    if kind == "fixed" and values["S"] != int(values["S"]):
        raise StragglerSpecError(f"fixed: S must be a whole number, got {values['S']:g}")
    if kind == "exp" and values["rate"] <= 0:
        raise StragglerSpecError("exp: rate must be > 0")
    if kind == "pareto" and values["alpha"] <= 0:
        raise StragglerSpecError("pareto: alpha must be > 0")
    if kind in ("fail", "late") and values["p"] > 1:
        raise StragglerSpecError(f"{kind}: p must be a probability in [0, 1], got {values['p']:g}")
    return StragglerModel(kind, tuple((k, values[k]) for k in wanted))


def parse_straggler_spec(spec: str | Sequence[str] | None) -> StragglerSpec:
    """Parse ``"exp:shift=0.1,rate=5+fail:p=0.01"`` (or a list of terms) into a spec."""
    if spec is None:
        return StragglerSpec((StragglerModel("none"),))
    text = spec if isinstance(spec, str) else "+".join(spec)
    terms = [t.strip() for t in text.split("+")]
    if not text.strip() or any(not t for t in terms):
        raise StragglerSpecError(f"empty straggler spec {text!r}")
    return StragglerSpec(tuple(_model(t, text) for t in terms))
