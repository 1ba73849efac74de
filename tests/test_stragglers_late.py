"""The ``late:p=P,delay=D`` straggler kind: each task independently late with probability P."""

from __future__ import annotations

import numpy as np
import pytest

from codedfarm.errors import StragglerSpecError
from codedfarm.stragglers import TaskFate, parse_straggler_spec
from codedfarm.worker.options import WorkerOptions


def test_late_slows_a_fraction_p_of_tasks_by_delay():
    fates = parse_straggler_spec("late:p=0.05,delay=0.2").sample(40000, np.random.default_rng(0))
    delays = np.array([f.delay for f in fates])
    assert set(delays.tolist()) == {0.0, 0.2}
    assert np.mean(delays > 0) == pytest.approx(0.05, abs=0.005)
    assert not any(f.fail for f in fates)


def test_late_draws_each_task_independently_not_a_fixed_count_per_batch():
    spec = parse_straggler_spec("late:p=0.25,delay=1")
    counts = {sum(f.slowed for f in spec.sample(8, np.random.default_rng(seed)))
              for seed in range(200)}  # fmt: skip
    assert min(counts) == 0 and max(counts) >= 5  # binomial(8, 0.25), not always 2
    assert not spec.per_batch and not spec.trivial


def test_late_is_reproducible_with_the_same_rng_seed():
    spec = parse_straggler_spec("late:p=0.3,delay=0.5")
    a = spec.sample(64, np.random.default_rng(7))
    b = spec.sample(64, np.random.default_rng(7))
    assert a == b
    assert a != spec.sample(64, np.random.default_rng(8))


@pytest.mark.parametrize(
    ("p", "expected"),
    [(0.0, [TaskFate()] * 16), (1.0, [TaskFate(0.3)] * 16)],
)
def test_late_edge_probabilities(p, expected):
    spec = parse_straggler_spec(f"late:p={p},delay=0.3")
    assert spec.sample(16, np.random.default_rng(1)) == expected


def test_late_prints_back_and_combines():
    spec = parse_straggler_spec("exp:shift=0.01,rate=1e9+late:p=0.05,delay=0.09")
    assert str(spec) == "exp:shift=0.01,rate=1e+09+late:p=0.05,delay=0.09"
    fates = spec.sample(20000, np.random.default_rng(2))
    delays = np.array([f.delay for f in fates])
    assert delays.min() >= 0.01
    assert np.mean(delays > 0.05) == pytest.approx(0.05, abs=0.007)
    assert parse_straggler_spec(str(parse_straggler_spec("late:p=0.05,delay=0.2"))) == (
        parse_straggler_spec("late:p=0.05,delay=0.2")
    )


def test_a_worker_accepts_late_as_its_default_spec():
    options = WorkerOptions(straggle="late:p=0.1,delay=0.05")
    assert options.straggler_spec.models[0].kind == "late"
    assert "late:p=0.1,delay=0.05" in options.argv()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("late:p=0.05", "needs p, delay; missing delay"),
        ("late:delay=1", "needs p, delay; missing p"),
        ("late:p=1.5,delay=1", r"late: p must be a probability in \[0, 1\], got 1.5"),
        ("late:p=-0.1,delay=1", "late: p must be finite and >= 0"),
        ("late:p=0.1,delay=-1", "late: delay must be finite and >= 0"),
        ("late:p=0.1,delay=inf", "late: delay must be finite and >= 0"),
        ("late:p=nan,delay=1", "late: p must be finite and >= 0"),
        ("late:p=0.1,delay=x", "late: delay must be a number, got 'x'"),
        ("late:p=0.1,delay=1,S=2", "bad parameter 'S=2' for straggler model 'late'"),
    ],
)
def test_bad_late_specs_raise_clear_errors(spec, message):
    with pytest.raises(StragglerSpecError, match=message):
        parse_straggler_spec(spec)
