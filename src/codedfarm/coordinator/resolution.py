"""One resolution of a batch's settings: what was asked, the model's defaults, the farm's.

Every way into the farm (``submit``, ``serve``, ``bench``, ``demo``, ``soak`` and
:meth:`FarmClient.submit <codedfarm.coordinator.FarmClient.submit>`) turns its request into
one :class:`BatchSettings` here, once per batch; nothing downstream reads a model's
``config.json`` again or merges defaults again.

Precedence, highest first (each field separately; the first layer that sets it wins):

1. the batch's own :class:`BatchSpec` (``submit``'s flags, the Python API);
2. the model's ``config.json`` ``serving`` block (``codec``, ``n``, ``s``, ``deadline``,
   ``redundancy``);
3. the server-wide flags of ``codedfarm serve`` (:class:`BatchDefaults`);
4. the farm's :class:`~codedfarm.settings.Settings` (``deadline``, ``queues``);
5. the codec class: ``n`` (:meth:`~codedfarm.codecs.CodecPlan.default_n`), ``wait_for``
   (:meth:`~codedfarm.codecs.CodecPlan.default_wait_for`), ``s`` 0, the codec
   :data:`~codedfarm.codecs.DEFAULT_CODEC`.

The worker count comes from the highest layer that sets ``n`` or ``redundancy`` (``R``: a
group of ``k`` rows gets ``k + max(1, ceil((R - 1) k))`` tasks and tolerates the loss of
all but ``k`` of them unless ``s`` is set; ``n`` wins over ``R`` in the same layer).

With ``fit_workers`` (the server's coding groups, the demo) ``n`` and ``s`` are a budget
meant for any code and a full group: the codec fits itself into it
(:meth:`~codedfarm.codecs.CodecPlan.fit_workers`: uncoded sends one task per row,
replication the most whole copies that fit).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from codedfarm.codecs import DEFAULT_CODEC, Codec, CodecPlan, plan_codec
from codedfarm.coordinator.open_batch import WAIT_POLICIES
from codedfarm.errors import CodecError, ConfigError, InputError, InputWarning
from codedfarm.models.resolve import ResolvedModel, resolve_model
from codedfarm.settings import Settings, check_queue_names
from codedfarm.stragglers import TaskFate, parse_straggler_spec

__all__ = [
    "BatchDefaults",
    "BatchSettings",
    "BatchSpec",
    "redundancy_workers",
    "resolve_batch",
]

INPUT_ITEM_BYTES = 4  # the farm serves float32 inputs


@dataclass(frozen=True)
class BatchSpec:
    """How to serve one batch (a frozen value object; every field but ``model`` optional).

    ``model`` is a name (a repository model's highest version, or a zoo model) or
    ``name@version``. ``codec`` is a spec such as ``spline:lam_dec=auto``. Unset fields
    take the model's ``config.json`` serving defaults, then the farm's (the precedence of
    :mod:`codedfarm.coordinator.resolution`). ``straggle`` injects stragglers
    (``fixed:S=4,delay=2``), ``plan`` gives one fate per task instead.
    """

    model: str
    codec: str | None = None
    n: int | None = None
    s: int | None = None
    wait_for: int | None = None
    straggle: str | None = None  # None: workers apply their own default
    deadline: float | None = None  # seconds after submit
    queues: tuple[str, ...] | None = None
    seed: int | None = None
    redundancy: float | None = None  # tasks per row, a budget instead of n (n wins over it)
    plan: tuple[TaskFate, ...] | None = None  # explicit fate per task (overrides straggle)
    hedge_after: float | None = None  # re-send tasks still missing after this many seconds
    hedge_plan: tuple[TaskFate, ...] | None = None  # fates of the re-sent copies, per index
    wait: str | None = None  # "own" (default): done once every row is exact or decodable;
    # "results": wait for wait_for results (N−S) even when every row's own result is in


@dataclass(frozen=True)
class BatchDefaults:
    """Defaults below a model's ``config.json`` (``codedfarm serve``'s server-wide flags).
    None: the next layer's."""

    codec: str | None = None
    n: int | None = None
    s: int | None = None
    wait_for: int | None = None
    deadline: float | None = None  # seconds after submit
    queues: tuple[str, ...] | None = None
    straggle: str | None = None
    redundancy: float | None = None
    hedge_after: float | None = None  # seconds: re-send a task not back by then
    parity_first: bool = False  # when the codec is this layer's: ``parm`` instead, if the
    # model has a parity model for the batch's groups (codedfarm serve's default)


@dataclass(frozen=True)
class BatchSettings:
    """One batch's settings, resolved: the model, the codec plan, ``k`` inputs on ``n``
    tasks tolerating ``s``, decoding at ``wait_for`` results (or, under ``wait="own"``, as
    soon as every row's own result is in) or at ``deadline`` seconds after submit, on
    ``queues``, with one injected fate per task (or None: the workers' own). Immutable;
    the dispatcher, the client and the collector read only these."""

    model: ResolvedModel
    plan: CodecPlan
    k: int
    n: int
    s: int
    wait_for: int
    deadline: float
    queues: tuple[str, ...]
    fates: tuple[TaskFate, ...] | None = None
    hedge_after: float | None = None
    hedge_plan: tuple[TaskFate, ...] | None = None
    wait: str = "own"  # the collector's wait policy (coordinator/open_batch.py)
    parity_model: ResolvedModel | None = None  # what the parity tasks run (codec ``parm``)
    parity_tasks: frozenset[int] = frozenset()

    def task_model(self, task: int) -> ResolvedModel:
        """The model task ``task`` runs: the parity model for a ``parm`` parity task."""
        if self.parity_model is not None and task in self.parity_tasks:
            return self.parity_model
        return self.model

    @property
    def codec(self) -> Codec:
        """The shared codec of this plan and shape (built once per process)."""
        return self.plan.codec(self.k, self.n, self.s)

    @property
    def slowed(self) -> list[dict[str, Any]]:
        """The injected stragglers and failures: ``{index, delay, fail}`` per slowed task."""
        if self.fates is None:
            return []
        return [
            {"index": i, "delay": f.delay, "fail": f.fail}
            for i, f in enumerate(self.fates)
            if f.slowed
        ]


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    bad = isinstance(value, bool) or not isinstance(value, int) or value < low
    if high is None and bad:
        raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
    if high is not None and (bad or value > high):  # type: ignore[operator]
        raise ConfigError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value  # type: ignore[return-value]


def resolve_batch(
    spec: BatchSpec,
    k: int,
    settings: Settings,
    *,
    model: ResolvedModel | None = None,
    defaults: BatchDefaults | None = None,
    fit_workers: bool = False,
) -> BatchSettings:
    """The settings of a batch of ``k`` inputs for ``spec`` (precedence: the module's).

    ``model``: ``spec.model`` already resolved (the server's, cached briefly); else it is
    resolved here. ``defaults``: the layer under the model's ``config.json``.
    ``fit_workers``: ``n`` and ``s`` are a budget the codec fits itself into. Raises
    :class:`~codedfarm.errors.ConfigError`, :class:`~codedfarm.errors.CodecError` or
    :class:`~codedfarm.errors.InputError`; warns :class:`~codedfarm.errors.InputWarning`
    when an exact code is asked for a model it is not exact for."""
    found = model if model is not None else resolve_model(spec.model, settings.model_repository)
    lower = defaults or BatchDefaults()
    serving = found.serving
    k = _check_int("k (inputs in the batch)", k, 1)
    plan = plan_codec(_first(spec.codec, serving.codec, lower.codec, DEFAULT_CODEC))
    s_given = _first(spec.s, serving.s, lower.s)
    s = _check_int("s (stragglers to tolerate)", 0 if s_given is None else s_given, 0)
    n_given, redundancy = _worker_budget(spec, serving, lower)
    if n_given is not None:
        _check_int("n", n_given, 1, settings.max_workers)
        n = n_given
    elif redundancy is not None:
        n = redundancy_workers(k, redundancy)
        s = n - k if s_given is None else s
    else:
        n = plan.default_n(k, s)
    if lower.parity_first and _first(spec.codec, serving.codec) is None:
        plan = _parity_plan(found, k, n, settings) or plan
    if fit_workers or redundancy is not None:
        n, s = plan.fit_workers(k, n, s)
    n = _check_int("n", n, 1, settings.max_workers)
    if fit_workers and s_given is not None and n >= k:
        # a budget set for a full group: a smaller one tolerates what its workers allow
        s = min(s, n - plan.codec(k, n, 0).min_results)
    if s >= n:
        raise ConfigError(f"s must be < n (some workers must answer), got n={n}, s={s}")
    codec = plan.codec(k, n, s)
    if getattr(codec, "parity_tasks", ()) and "group" not in dict(plan.params):
        # parm without an arity: the smallest parity model that fits the batch's groups
        fitting = _fitting_arity(found, int(codec.params()["group"]), settings)
        if fitting is not None:
            plan = CodecPlan(plan.name, tuple(sorted({**dict(plan.params),
                                                      "group": fitting}.items())))  # fmt: skip
            codec = plan.codec(k, n, s)
    _warn_if_not_exact(plan, found)
    wait_given = _first(spec.wait_for, lower.wait_for)
    wait_for = plan.default_wait_for(k, n, s) if wait_given is None else wait_given
    if fit_workers:
        wait_for = min(wait_for, n)
    if not codec.min_results <= wait_for <= n:
        if wait_given is None and codec.exact:
            raise CodecError(
                f"{codec.name}: S={s} is too large for this exact code: it needs "
                f"{codec.min_results} of n={n} results, but n - S = {n - s}"
            )
        raise ConfigError(
            f"wait_for must be in [{codec.min_results}, {n}] for {codec.spec}, got {wait_for}"
        )
    deadline = float(_first(spec.deadline, serving.deadline, lower.deadline, settings.deadline))
    if not 0 < deadline < settings.key_ttl:
        raise ConfigError(
            f"deadline must be in (0, {settings.key_ttl:g}) seconds (CODEDFARM_KEY_TTL), "
            f"got {deadline}"
        )
    hedge_after = _first(spec.hedge_after, lower.hedge_after)
    if hedge_after is not None and not 0 < hedge_after < deadline:
        raise ConfigError(f"hedge_after must be in (0, deadline), got {hedge_after}")
    coded_bytes = n * math.prod(found.input_shape) * INPUT_ITEM_BYTES
    if coded_bytes > settings.max_batch_bytes:
        raise InputError(
            f"coded batch is {coded_bytes} bytes (n={n} x {coded_bytes // n}), over the "
            f"limit of {settings.max_batch_bytes} (CODEDFARM_MAX_BATCH_BYTES)"
        )
    queues = check_queue_names(_first(spec.queues, lower.queues, settings.queues), "queues")
    fates, hedge_plan = _fates(spec, _first(spec.straggle, lower.straggle), n), spec.hedge_plan
    if hedge_plan is None and hedge_after is not None and spec.plan is None and fates:
        # re-sent copies straggle like the first ones: a second draw of the same model
        seed = None if spec.seed is None else (spec.seed + 1) << 20
        hedge_plan = _fates(replace(spec, seed=seed), _first(spec.straggle, lower.straggle), n)
    wait = "own" if spec.wait is None else spec.wait
    if wait not in WAIT_POLICIES:
        raise ConfigError(f"wait must be one of {', '.join(WAIT_POLICIES)}, got {wait!r}")
    parity_tasks = frozenset(getattr(codec, "parity_tasks", ()))
    parity_model = _parity_model(found, codec, settings) if parity_tasks else None
    info = parity_model.parity if parity_model is not None else None
    trained = {} if info is None else {"target": info.target, "combine": info.combine}
    given = {"target": "logits", "combine": "sum", **codec.params()}
    if any(given[key] != value for key, value in trained.items()):
        # the decode subtracts in the space and scale the parity model was trained for
        plan = CodecPlan(plan.name, tuple(sorted({**dict(plan.params), **trained}.items())))
    return BatchSettings(
        parity_model=parity_model,
        parity_tasks=parity_tasks,
        wait=wait,
        model=found,
        plan=plan,
        k=k,
        n=n,
        s=s,
        wait_for=wait_for,
        deadline=deadline,
        queues=queues,
        fates=fates,
        hedge_after=hedge_after,
        hedge_plan=hedge_plan,
    )


def redundancy_workers(rows: int, redundancy: float) -> int:
    """Tasks for a group of ``rows`` rows at a redundancy budget ``R``:
    ``rows + max(1, ceil((R - 1) * rows))`` (a lone row gets its task and one copy)."""
    extra = math.ceil(round((redundancy - 1.0) * rows, 9))  # 1.1 * 10 is 11.000000000000002
    return rows + max(1, extra)


def _worker_budget(spec: BatchSpec, serving: Any, lower: BatchDefaults) -> tuple[
    int | None, float | None
]:  # fmt: skip
    """``(n, redundancy)`` of the highest layer that sets either (its n wins over its
    redundancy); ``(None, None)``: the codec's default n."""
    for n, redundancy in ((spec.n, spec.redundancy), (serving.n, serving.redundancy),
                          (lower.n, lower.redundancy)):  # fmt: skip
        if n is not None:
            return n, None
        if redundancy is not None:
            if (
                isinstance(redundancy, bool)
                or not isinstance(redundancy, (int, float))
                or not (math.isfinite(redundancy) and redundancy >= 1)
            ):
                raise ConfigError(f"redundancy must be a number >= 1, got {redundancy!r}")
            return None, float(redundancy)
    return None, None


def _fates(spec: BatchSpec, straggle: str | None, n: int) -> tuple[TaskFate, ...] | None:
    if spec.plan is not None:
        if len(spec.plan) != n:
            raise ConfigError(f"plan must give one fate per task: {len(spec.plan)} for n={n}")
        return tuple(spec.plan)
    if straggle is None:
        return None
    stragglers = parse_straggler_spec(straggle)
    return tuple(stragglers.sample(n, np.random.default_rng(spec.seed)))


_parity_arities: dict[tuple[str, str], tuple[float, dict[int, float | None]]] = {}
PARITY_LOOKUP_S = 2.0  # how long a model's parity arities are reused (then read again)
PARITY_FIRST_MIN_AGREEMENT = 0.5
"""The least held-out agreement (a rebuilt row's top-1 equals the model's) at which
``serve``'s default takes a parity model over the generic systematic code. The generic codes
rebuild one lost row of k = 2, 3, 4 with agreement 0.19-0.91 on the zoo (docs/results.md,
"Degraded mode"; at k >= 3 at most 0.45); trained parity models reach 0.70-0.95 there, and
one that did not learn (the serving benchmark's softmax CNN at k=4: 0.131) is below every
generic code: below one half, the default keeps the generic code. An explicit ``parm``
codec uses any parity model."""


def _fitting_arity(
    model: ResolvedModel, needed: int, settings: Settings, min_agreement: float | None = None
) -> int | None:
    """The smallest arity of ``model``'s parity models that is at least ``needed`` (groups
    of fewer rows fill its slots cyclically) and, with ``min_agreement``, whose held-out
    agreement is known and at least that; or None. Looked up again after
    :data:`PARITY_LOOKUP_S`, so a parity model trained meanwhile is used."""
    key = (model.ref, str(settings.model_repository))
    hit = _parity_arities.get(key)
    if hit is None or hit[0] <= time.monotonic():
        from codedfarm.models.parity import parity_agreements_of

        agreements = parity_agreements_of(model.ref, settings.model_repository)
        hit = _parity_arities[key] = (time.monotonic() + PARITY_LOOKUP_S, agreements)
    fitting = [
        a
        for a, agreement in hit[1].items()
        if a >= needed
        and (min_agreement is None or (agreement is not None and agreement >= min_agreement))
    ]
    return min(fitting) if fitting else None


def _parity_plan(model: ResolvedModel, k: int, n: int, settings: Settings) -> CodecPlan | None:
    """``parm`` for a batch of ``k`` rows on a budget of ``n`` tasks when ``model`` has a
    parity model that fits its groups (:func:`_fitting_arity` of ``ceil(k / parities)``; a
    group of one row gets a copy, as with the other systematic codes) and rebuilds rows
    well enough (:data:`PARITY_FIRST_MIN_AGREEMENT`), else None."""
    parities = min(max(n - k, 1), k)
    needed = math.ceil(k / parities)
    arity = _fitting_arity(model, needed, settings, PARITY_FIRST_MIN_AGREEMENT)
    return None if arity is None else plan_codec(f"parm:group={arity}")


def _parity_model(model: ResolvedModel, codec: Codec, settings: Settings) -> ResolvedModel:
    """The parity model of ``model`` for the groups of a ``parm`` codec (its arity)."""
    from codedfarm.models.parity import parity_model_for

    arity = int(codec.params()["group"])
    found = parity_model_for(model.ref, arity, settings.model_repository)
    if found is None:
        raise ConfigError(
            f"parm: model {model.ref} has no parity model for groups of {arity} rows (k={codec.k} "
            f"rows on n={codec.n} tasks); train one with `codedfarm parity train {model.ref} "
            f"--k {arity}`, or use another codec"
        )
    if found.input_shape != model.input_shape or found.output_shape != model.output_shape:
        raise ConfigError(
            f"parm: parity model {found.ref} takes {found.input_shape} -> {found.output_shape}, "
            f"but {model.ref} takes {model.input_shape} -> {model.output_shape}"
        )
    return found


def _warn_if_not_exact(plan: CodecPlan, model: ResolvedModel) -> None:
    degree = plan.exact_degree
    if degree is None or (model.polynomial_degree or degree + 1) <= degree:
        return
    declared = ("is not declared a polynomial" if model.polynomial_degree is None
                else f"is declared of degree {model.polynomial_degree}")  # fmt: skip
    warnings.warn(
        InputWarning(
            f"{plan.name} decodes exactly only models of degree <= {degree} (1: linear "
            f"or affine); model {model.ref} {declared}, so its decoded answers are not "
            "its outputs (declare polynomial_degree in its config.json, or use an "
            "approximate code: berrut, spline)"
        ),
        stacklevel=4,
    )
