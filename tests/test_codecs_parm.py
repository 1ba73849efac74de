"""The ``parm`` codec's numerics (ParM's addition encoder and subtraction decoder): with a
linear model, whose exact parity model is itself, every row is rebuilt exactly from any
set of results that leaves at most one missing per group; its parity model's arity is
filled cyclically by smaller groups; a group of one row has a copy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codedfarm.codecs import ParmCodec, make_codec, parse_codec_spec, plan_codec
from codedfarm.codecs.parm import parity_groups
from codedfarm.errors import CodecParameterError, NotEnoughResultsError


def linear(rng: np.random.Generator, d_in: int = 6, d_out: int = 4):
    weights = rng.standard_normal((d_in, d_out))
    return lambda x: np.asarray(x).reshape(len(x), -1) @ weights


@st.composite
def layouts(draw):
    k = draw(st.integers(1, 12))
    n = draw(st.integers(k + 1, 2 * k))
    largest = -(-k // (n - k))
    group = draw(st.one_of(st.none(), st.integers(largest, largest + 3)))
    return k, n, group


@settings(deadline=None, max_examples=80)
@given(layouts(), st.data())
def test_one_missing_result_per_group_is_rebuilt_exactly(layout, data):
    k, n, group = layout
    codec = make_codec("parm", k, n, **({} if group is None else {"group": group}))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    f = linear(rng)
    x = rng.standard_normal((k, 6))
    y = f(codec.encode(x))  # a linear model is its own exact parity model
    lost = []  # at most one of each group's results: a row's or its parity's
    for g, rows in enumerate(codec.groups):
        choice = data.draw(st.sampled_from([None, codec.k + g, *rows]))
        if choice is not None:
            lost.append(choice)
    kept = [j for j in range(n) if j not in lost]
    decoded = codec.decode_report(y[kept], kept)
    np.testing.assert_allclose(decoded.values, f(x), atol=1e-9)
    assert set(decoded.decoded) == {r for r in lost if r < k}
    assert set(decoded.own) == set(range(k)) - set(decoded.decoded)


def test_groups_are_consecutive_and_even():
    assert parity_groups(8, 4) == ((0, 1), (2, 3), (4, 5), (6, 7))
    assert parity_groups(7, 2) == ((0, 1, 2, 3), (4, 5, 6))
    assert parity_groups(4, 3) == ((0, 1), (2,), (3,))
    codec = make_codec("parm", 6, 8, group=4)  # groups of 3 fill 4 slots: 2 + 1 + 1
    assert codec.multiplicities == ((2, 1, 1), (2, 1, 1))
    np.testing.assert_array_equal(codec.encoder_matrix[6], [2, 1, 1, 0, 0, 0])
    assert codec.parity_tasks == (6, 7)


def test_a_lone_row_gets_a_copy_not_a_parity_model():
    codec = make_codec("parm", 1, 2)
    assert codec.parity_tasks == () and codec.own_tasks == (0, 0)
    np.testing.assert_array_equal(codec.encoder_matrix, [[1.0], [1.0]])
    codec = make_codec("parm", 3, 5)  # (0, 1) with a parity, (2,) with a copy
    assert codec.parity_tasks == (3,) and codec.own_tasks == (0, 1, 2, None, 2)


def test_two_missing_in_a_group_wait_for_more():
    codec = make_codec("parm", 8, 12)
    y = np.ones((12, 3))
    both_rows = [j for j in range(12) if j not in (0, 1)]  # both rows of group 0
    with pytest.raises(NotEnoughResultsError, match=r"groups \[\[0, 1\]\] lack two results"):
        codec.decode(y[both_rows], both_rows)
    row_and_parity = [j for j in range(12) if j not in (2, 9)]  # a row and its group's parity
    with pytest.raises(NotEnoughResultsError, match="lack two results"):
        codec.decode(y[row_and_parity], row_and_parity)


def test_defaults_spec_and_budget():
    assert plan_codec("parm").default_n(8, 0) == 12  # one parity per 2 rows (R = 1.5)
    assert plan_codec("parm:group=4").default_n(8, 0) == 10
    assert plan_codec("parm").default_n(1, 0) == 2
    assert plan_codec("parm").default_wait_for(8, 12, 0) == 8
    assert ParmCodec.fit_workers(3, 12, 4) == (6, 3)  # at most a parity per row
    assert make_codec("parm", 8, 12).spec == "parm:k=8,n=12,group=2"
    assert parse_codec_spec("parm:group=3") == ("parm", {"group": 3})
    assert make_codec("parm", 8, 12).systematic


@pytest.mark.parametrize(
    ("params", "k", "n", "message"),
    [
        ({}, 8, 8, "n must be between k \\+ 1 and 2k"),
        ({}, 4, 9, "n must be between k \\+ 1 and 2k"),
        ({"group": 2}, 8, 10, "group=2 rows per parity, but k=8 rows on 2 parities puts 4"),
        ({"group": 0}, 8, 12, "group must be >= 1"),
        ({"byzantine": 1}, 8, 12, "byzantine decoding is not available"),
        ({"space": "log"}, 8, 12, "unknown parameter\\(s\\) space; allowed: group"),
    ],
)
def test_bad_settings_are_refused(params, k, n, message):
    with pytest.raises(CodecParameterError, match=message):
        make_codec("parm", k, n, **params)


def test_torch_results_decode_as_numpy_ones(rng):
    codec = make_codec("parm", 5, 8)
    f = linear(rng)
    x = rng.standard_normal((5, 6))
    y = f(codec.encode(x))
    kept = [1, 2, 3, 4, 5, 6, 7]  # row 0 from its parity
    from_torch = codec.decode(torch.from_numpy(y[kept]), kept)
    assert isinstance(from_torch, torch.Tensor)
    np.testing.assert_allclose(from_torch.numpy(), codec.decode(y[kept], kept), atol=1e-12)


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_a_probability_target_rebuilds_log_probabilities_of_the_right_softmax(rng):
    """A parity model trained on summed softmax outputs: a rebuilt row comes back as
    log-probabilities, whose softmax is the missing row's; own rows stay raw logits."""
    codec = make_codec("parm", 6, 8, group=4, target="probs")
    assert codec.spec == "parm:k=6,n=8,group=4,target=probs"
    f = linear(rng)
    x = rng.standard_normal((6, 6))
    logits = f(x)
    y = np.empty((8, 4))
    y[:6] = logits
    for g, (rows, counts) in enumerate(zip(codec.groups, codec.multiplicities, strict=True)):
        y[6 + g] = sum(c * softmax(logits[r]) for r, c in zip(rows, counts, strict=True))
    kept = [1, 2, 3, 5, 6, 7]  # rows 0 (multiplicity 2) and 4 (multiplicity 1) rebuilt
    decoded = codec.decode_report(y[kept], kept)
    assert decoded.decoded == (0, 4)
    np.testing.assert_allclose(softmax(decoded.values[[0, 4]]), softmax(logits[[0, 4]]),
                               atol=1e-9)  # fmt: skip
    np.testing.assert_array_equal(decoded.values[[1, 2, 3, 5]], logits[[1, 2, 3, 5]])
    from_torch = codec.decode(torch.from_numpy(y[kept]), kept)
    np.testing.assert_allclose(from_torch.numpy(), decoded.values, atol=1e-12)
    with pytest.raises(CodecParameterError, match="target must be one of logits, probs"):
        make_codec("parm", 6, 8, target="softmax")


def test_a_mean_parity_counts_its_arity_times(rng):
    """A parity model of a softmax-ended model learns the mean of its group's outputs
    (``combine=mean``): the rebuilt row is ``(a·y_p − Σ c_l y_l) / c_i``."""
    codec = make_codec("parm", 6, 8, group=4, combine="mean")
    assert codec.spec == "parm:k=6,n=8,group=4,combine=mean"
    f = linear(rng)
    x = rng.standard_normal((6, 6))
    y = f(codec.encode(x))
    y[6:] /= 4  # the parity model outputs the mean over its 4 slots
    kept = [1, 2, 3, 5, 6, 7]
    np.testing.assert_allclose(codec.decode(y[kept], kept), f(x), atol=1e-9)
    with pytest.raises(CodecParameterError, match="combine must be one of sum, mean"):
        make_codec("parm", 6, 8, combine="median")
