"""Straggler specs: parsing, sampling, errors; and the worker-side injection."""

from __future__ import annotations

import numpy as np
import pytest

from codedfarm.errors import StragglerSpecError
from codedfarm.protocol import TaskMessage
from codedfarm.stragglers import TaskFate, parse_straggler_spec
from codedfarm.worker import core as inference
from codedfarm.worker.options import WorkerOptions
from codedfarm.worker.state import WorkerState


def test_fixed_slows_exactly_s_tasks():
    fates = parse_straggler_spec("fixed:S=4,delay=2").sample(24, np.random.default_rng(0))
    slowed = [f for f in fates if f.slowed]
    assert len(slowed) == 4 and all(f.delay == 2.0 and not f.fail for f in slowed)


def test_shifted_exponential_matches_its_mean_and_minimum():
    fates = parse_straggler_spec("exp:shift=0.1,rate=20").sample(20000, np.random.default_rng(1))
    delays = np.array([f.delay for f in fates])
    assert delays.min() >= 0.1
    assert delays.mean() == pytest.approx(0.1 + 1 / 20, rel=0.03)


def test_pareto_has_its_scale_as_minimum_and_a_heavy_tail():
    fates = parse_straggler_spec("pareto:scale=0.01,alpha=1.5").sample(
        20000, np.random.default_rng(2)
    )
    delays = np.array([f.delay for f in fates])
    assert delays.min() >= 0.01
    # P(X > 10 * scale) = 10^-alpha for a Pareto tail
    assert np.mean(delays > 0.1) == pytest.approx(10**-1.5, rel=0.15)


def test_failures_and_combination():
    spec = parse_straggler_spec("fail:p=0.25+fixed:S=2,delay=1")
    fates = spec.sample(4000, np.random.default_rng(3))
    assert np.mean([f.fail for f in fates]) == pytest.approx(0.25, abs=0.03)
    assert sum(f.delay == 1.0 for f in fates) == 2
    assert str(spec) == "fail:p=0.25+fixed:S=2,delay=1"
    assert spec.per_batch and not parse_straggler_spec("exp:shift=0,rate=1").per_batch
    assert parse_straggler_spec(None).sample(3) == [TaskFate()] * 3


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "empty straggler spec"),
        ("slow", "unknown straggler model 'slow'"),
        ("fixed:S=2", "needs S, delay; missing delay"),
        ("fixed:S=2.5,delay=1", "S must be a whole number"),
        ("exp:shift=0,rate=0", "exp: rate must be > 0"),
        ("exp:shift=-1,rate=1", "shift must be finite and >= 0"),
        ("pareto:scale=1,alpha=0", "pareto: alpha must be > 0"),
        ("fail:p=2", "fail: p must be a probability in [0, 1]"),
        ("fail:q=1", "bad parameter 'q=1' for straggler model 'fail'"),
        ("fail:p=x", "fail: p must be a number, got 'x'"),
        ("none+", "empty straggler spec"),
    ],
)
def test_bad_specs_raise_clear_errors(spec, message):
    with pytest.raises(StragglerSpecError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
        parse_straggler_spec(spec)


def test_slowdown_multiplies_compute_time(settings, monkeypatch):
    fast = WorkerState(settings, WorkerOptions(straggle="none"))
    slow = WorkerState(settings, WorkerOptions(slowdown=4.0, straggle="none"))
    x = np.zeros((3, 1, 32, 32), np.float32)  # a group of 3 coded inputs
    sleeps: list[float] = []
    monkeypatch.setattr(inference.time, "sleep", sleeps.append)
    out, _compute_fast = inference.predict(fast, "linear", x)
    assert out.shape == (3, 10) and sleeps == []
    _, compute_slow = inference.predict(slow, "linear", x)
    (slept,) = sleeps
    assert compute_slow == pytest.approx(slept * 4 / 3)


def test_worker_default_straggle_applies_only_without_a_batch_plan(settings):
    # a per-task model (a worker refuses fixed:..., which picks tasks of a whole batch)
    worker = WorkerState(settings, WorkerOptions(straggle="exp:shift=7,rate=1e12"))
    base = {"batch": "b", "index": 0, "model": "noop", "input_key": "k", "offset": 0,
            "nbytes": 4096, "dtype": "float32", "shape": [1, 32, 32], "output_key": "o",
            "inbox": "i", "ttl": 60.0}  # fmt: skip
    assert inference.task_fate(TaskMessage(**base, delay=0.5), worker) == TaskFate(0.5)
    default = inference.task_fate(TaskMessage(**base), worker)
    assert default.delay == pytest.approx(7.0) and not default.fail
    idle = WorkerState(settings, WorkerOptions(straggle="none"))
    assert inference.task_fate(TaskMessage(**base), idle) == TaskFate()
