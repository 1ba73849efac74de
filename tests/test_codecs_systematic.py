"""Systematic approximate codes (``systematic=true``), ``space=auto``, and every (k, n) the
approximate codes may meet: own rows exact, missing rows decoded, the record of which."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codedfarm.codecs import make_codec, parse_codec_spec, plan_codec
from codedfarm.codecs.output_space import not_probabilities, resolve_space
from codedfarm.codecs.points import PLACEMENTS, systematic_points
from codedfarm.errors import CodecParameterError, NotEnoughResultsError

APPROXIMATE = ("berrut", "spline", "letcc")
K, N = 8, 16


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def model(x: np.ndarray) -> np.ndarray:
    """A smooth nonlinear map (k, 6) -> (k, 10), raw outputs."""
    w = np.random.default_rng(7).standard_normal((6, 10))
    return np.tanh(np.asarray(x) @ w)


def results(codec, x: np.ndarray, probs: bool = False) -> np.ndarray:
    out = model(codec.encode(x))
    return softmax(3 * out) if probs else out


# ----- the parameter ------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("TRUE", True), ("1", True), ("false", False), ("False", False), ("0", False)],
)
def test_systematic_is_a_bool_in_specs(text, value):
    assert parse_codec_spec(f"berrut:systematic={text}") == ("berrut", {"systematic": value})
    plan = plan_codec(f"spline:lam_dec=auto,systematic={text}")
    assert plan.codec(K, N).systematic is value
    assert plan.spec == f"spline:lam_dec=auto,systematic={'true' if value else 'false'}"


@pytest.mark.parametrize("bad", ["yes", "2", "", "truthy"])
def test_a_bool_that_is_not_one_is_an_error(bad):
    with pytest.raises(CodecParameterError, match="systematic must be true or false"):
        parse_codec_spec(f"letcc:systematic={bad}")
    with pytest.raises(CodecParameterError, match="systematic must be true or false"):
        make_codec("berrut", K, N, systematic=bad or 2)


def test_spec_shows_systematic_only_when_on_and_round_trips():
    codec = make_codec("berrut", K, 12, systematic=True)
    assert codec.spec == "berrut:k=8,n=12,systematic=true"
    assert make_codec("berrut", K, 12).spec == "berrut:k=8,n=12"
    name, params = parse_codec_spec(codec.spec.replace("k=8,n=12,", ""))
    assert make_codec(name, K, 12, **params).spec == codec.spec
    letcc = plan_codec("letcc:systematic=1").codec(K, 12, s=2)
    assert letcc.spec.startswith("letcc:k=8,n=12,s=2,sigma=0.0,lam_enc=0.0,lam_dec=")
    assert letcc.spec.endswith(",systematic=true")


def test_systematic_decoders_interpolate_unless_told_otherwise():
    """GCV reads the gap between an input and its parity partner as noise (docs/systematic.md)."""
    assert make_codec("spline", K, N, systematic=True).lam_dec == 0.0
    assert make_codec("spline", K, N, systematic=True, lam_dec="auto").lam_dec == "auto"
    assert make_codec("spline", K, N).lam_dec == "auto"
    assert make_codec("letcc", K, N, s=2, systematic=True).sigma == 0.0
    assert make_codec("letcc", K, N, s=2, systematic=True, sigma="auto").sigma == "auto"
    assert make_codec("letcc", K, N, s=2).sigma == "auto"
    assert plan_codec("spline:systematic=true").codec(K, N).spec == (
        "spline:k=8,n=16,lam_enc=0.0,lam_dec=0.0,systematic=true"
    )


@pytest.mark.parametrize("name", ["mds", "lagrange", "replication", "uncoded"])
def test_codes_without_the_parameter_refuse_it_when_on(name):
    with pytest.raises(CodecParameterError, match="systematic=true is not available"):
        parse_codec_spec(f"{name}:systematic=true")
    k, n = (4, 4) if name == "uncoded" else (4, 8)
    with pytest.raises(CodecParameterError, match="systematic=true is not available"):
        make_codec(name, k, n, systematic=True)
    assert make_codec(name, k, n, systematic=False).systematic is False


def test_mds_is_told_it_is_systematic_already():
    with pytest.raises(CodecParameterError, match=r"computes? the inputs already"):
        make_codec("mds", 4, 8, systematic=True)


def test_default_n_and_min_results():
    for name in APPROXIMATE:
        plan = plan_codec(f"{name}:systematic=true")
        assert plan.default_n(K, 4) == 2 * K  # a parity worker beside every input
        assert plan.default_n(K, 12) == K + 12  # and at least s of them
        assert plan_codec(f"{name}:systematic=true,byzantine=2").default_n(K, 4) == 2 * K + 4
        assert plan_codec(name).default_n(K, 4) == 3 * K  # unchanged
        assert plan.codec(K, 2 * K, s=4).min_results == 1
        assert plan_codec(f"{name}:systematic=true,byzantine=2").codec(K, N).min_results == 5


# ----- encoding and decoding ----------------------------------------------------------------
@pytest.mark.parametrize("name", APPROXIMATE)
@pytest.mark.parametrize("n", [8, 9, 12, 16, 25])
def test_the_first_k_workers_compute_the_inputs(name, n, rng):
    params = {"lam_enc": 1e-2} if name == "spline" else {}  # even a smoothing encoder
    codec = make_codec(name, K, n, systematic=True, **params)
    assert np.array_equal(codec.encoder_matrix[:K], np.eye(K))
    x = rng.standard_normal((K, 3, 5)).astype(np.float32)
    assert np.array_equal(codec.encode(x)[:K], x)


@pytest.mark.parametrize("name", APPROXIMATE)
@pytest.mark.parametrize("space", ["linear", "log", "auto"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_own_rows_are_returned_bit_for_bit(name, space, dtype, rng):
    params = {"lam_dec": 1e-2} if name == "spline" else {}  # a smoothing decoder too
    codec = make_codec(name, K, N, systematic=True, space=space, **params)
    x = rng.standard_normal((K, 6))
    y = results(codec, x, probs=space != "linear").astype(dtype)
    got = [9, 0, 3, 12, 5, 6, 14, 1]  # rows 2, 4 and 7 missing; any order
    report = codec.decode_report(y[got], got)
    assert report.own == (0, 1, 3, 5, 6) and report.decoded == (2, 4, 7)
    assert report.workers == tuple(got) and report.rejected == ()
    assert report.values.dtype == dtype and report.values.shape == (K, 10)
    for row in report.own:
        assert np.array_equal(report.values[row], y[row]), row  # bit for bit
    assert np.isfinite(report.values).all()


def test_missing_rows_match_the_decoder_matrix_in_linear_space(rng):
    codec = make_codec("berrut", K, N, systematic=True, space="linear")
    y = results(codec, rng.standard_normal((K, 6)))
    got = [0, 1, 2, 4, 8, 9, 10, 11, 12]
    matrix = codec.decoder_matrix(got)
    assert matrix.shape == (K, len(got))
    np.testing.assert_allclose(codec.decode(y[got], got), matrix @ y[got], atol=1e-12)
    for row in (0, 1, 2, 4):  # own rows take their own result alone
        assert matrix[row, got.index(row)] == 1.0 and np.count_nonzero(matrix[row]) == 1


def test_every_own_result_in_needs_no_decode(rng):
    codec = make_codec("spline", K, N, systematic=True)
    y = results(codec, rng.standard_normal((K, 6)), probs=True)
    got = list(range(N))
    report = codec.decode_report(y[got], got)
    assert report.own == tuple(range(K)) and report.decoded == () and report.lam_dec is None
    assert np.array_equal(report.values, y[:K])
    ints = codec.decode(np.arange(K * 2).reshape(K, 2), list(range(K)))
    assert ints.dtype == np.float64 and np.array_equal(ints, np.arange(K * 2).reshape(K, 2))


def test_only_parity_results_still_decode(rng):
    codec = make_codec("berrut", K, N, systematic=True)
    y = results(codec, rng.standard_normal((K, 6)))
    got = list(range(K, N))
    report = codec.decode_report(y[got], got)
    assert report.own == () and report.decoded == tuple(range(K))
    assert np.isfinite(report.values).all()


def test_torch_results_keep_their_type_and_own_rows(rng):
    torch = pytest.importorskip("torch")
    codec = make_codec("spline", K, N, systematic=True)
    y = results(codec, rng.standard_normal((K, 6)), probs=True).astype(np.float32)
    got = [0, 2, 3, 5, 8, 9, 10, 11, 13, 15]
    out = codec.decode_report(torch.from_numpy(y[got]), got)
    assert isinstance(out.values, torch.Tensor) and out.values.dtype == torch.float32
    assert out.space_used == "log"
    for row in out.own:
        assert torch.equal(out.values[row], torch.from_numpy(y[row]))
    np.testing.assert_allclose(out.values.numpy(), codec.decode(y[got], got), atol=1e-5)


def test_a_rejected_own_result_is_decoded_instead(rng):
    codec = make_codec("berrut", K, N, systematic=True, byzantine=1, space="linear")
    x = rng.standard_normal((K, 6))
    y = results(codec, x)
    wrong = y.copy()
    wrong[3] += 50.0  # worker 3's own result is wrong
    got = list(range(N))
    report = codec.decode_report(wrong, got)
    assert report.rejected == (3,)
    assert report.decoded == (3,) and 3 not in report.own
    assert np.array_equal(report.values[[0, 1, 2, 4, 5, 6, 7]], y[[0, 1, 2, 4, 5, 6, 7]])
    assert np.abs(report.values[3] - y[3]).max() < 1.0  # from its neighbours, not the +50


def test_systematic_recovers_a_missing_row_better_than_the_naive_placement(rng):
    """The measured placement against the Chebyshev one (docs/systematic.md), on a toy."""
    from codedfarm.codecs import BerrutCodec

    errors = {}
    for placement in ("measured", "chebyshev"):
        codec = BerrutCodec(K, N, systematic=True, placement=placement)
        total = 0.0
        for seed in range(6):
            x = np.random.default_rng(seed).standard_normal((K, 6)) * 0.5
            y, truth = results(codec, x), model(x)
            for row in range(K):
                got = [w for w in range(N) if w != row]
                total += float(np.sum((codec.decode(y[got], got)[row] - truth[row]) ** 2))
        errors[placement] = total
    assert errors["measured"] < 0.5 * errors["chebyshev"], errors


def test_placements_give_distinct_points_and_identity_rows():
    for k in range(1, 10):
        for n in range(k, 3 * k + 3):
            for placement in PLACEMENTS:
                alpha, beta = systematic_points(k, n, placement)
                assert len(np.unique(beta)) == n and np.array_equal(beta[:k], alpha)
    with pytest.raises(CodecParameterError, match="placement"):
        systematic_points(4, 8, "nowhere")
    with pytest.raises(CodecParameterError, match="systematic codes only"):
        make_codec("berrut", 4, 8).__class__(4, 8, placement="midpoints")


# ----- space=auto ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", APPROXIMATE)
def test_auto_is_the_default_and_picks_log_for_probabilities(name, rng):
    codec = make_codec(name, K, 24)
    assert codec.space == "auto" and "space" not in codec.spec
    x = rng.standard_normal((K, 6))
    raw = model(codec.encode(x))
    probs = softmax(3 * raw)
    got = list(range(0, 24, 2))
    log = make_codec(name, K, 24, space="log").decode(probs[got], got)
    lin = make_codec(name, K, 24, space="linear").decode(raw[got], got)
    report = codec.decode_report(probs[got], got)
    assert report.space_used == "log" and report.own == () and report.decoded == tuple(range(K))
    np.testing.assert_array_equal(report.values, log)
    report = codec.decode_report(raw[got], got)
    assert report.space_used == "linear"
    np.testing.assert_array_equal(report.values, lin)


def test_explicit_spaces_show_in_the_spec_and_behave_as_before(rng):
    assert make_codec("berrut", K, 24, space="linear").spec == "berrut:k=8,n=24,space=linear"
    assert make_codec("berrut", K, 24, space="log").spec == "berrut:k=8,n=24,space=log"
    assert make_codec("berrut", K, 24, space="auto").spec == "berrut:k=8,n=24"
    assert plan_codec("spline:space=auto").spec == "spline:space=auto"
    assert make_codec("mds", K, 24).space == "linear"
    with pytest.raises(CodecParameterError, match="unknown parameter"):
        make_codec("mds", K, 24, space="auto")
    codec = make_codec("spline", K, 24, space="linear")
    probs = softmax(rng.standard_normal((24, 10)))
    assert codec.decode_report(probs, list(range(24))).space_used == "linear"


def test_auto_with_byzantine_rejects_the_few_results_that_are_not_probabilities(rng):
    codec = make_codec("spline", K, 24, byzantine=2, lam_dec=0.0)
    log = make_codec("spline", K, 24, space="log", lam_dec=0.0)
    x = rng.standard_normal((K, 6))
    probs = softmax(3 * model(codec.encode(x)))
    wrong = probs.copy()
    wrong[5] *= 1.5  # no longer sums to one
    got = list(range(24))
    report = codec.decode_report(wrong, got)
    assert report.space_used == "log" and 5 in report.rejected
    keep = [w for w in got if w not in report.rejected]
    np.testing.assert_allclose(report.values, log.decode(probs[keep], keep))
    # results that are mostly not probabilities: a model of logits, decoded linearly, and
    # nothing is rejected for not being probabilities
    logits = model(codec.encode(x))
    report = codec.decode_report(logits, got)
    assert report.space_used == "linear" and report.rejected == ()


def test_resolve_space_and_probabilities_along_the_last_axis():
    p = softmax(np.random.default_rng(0).standard_normal((5, 3, 4)))  # 3 vectors per result
    assert not_probabilities(p) == ()
    bad = p.copy()
    bad[2, 1] *= 2
    assert not_probabilities(bad) == (2,)
    assert resolve_space("auto", p) == ("log", ())
    assert resolve_space("auto", bad) == ("linear", ())
    assert resolve_space("auto", bad, allowed=1) == ("log", (2,))
    assert resolve_space("linear", p) == ("linear", ())
    assert resolve_space("log", bad) == ("log", (2,))
    assert not_probabilities(np.ones((3,))) == () and not_probabilities(np.full(3, 0.5)) == (
        0,
        1,
        2,
    )


def test_auto_on_multi_axis_probabilities(rng):
    codec = make_codec("berrut", 4, 12, systematic=True)
    p = softmax(rng.standard_normal((12, 3, 5)))
    got = [0, 1, 5, 6, 7, 8, 9, 10, 11]
    report = codec.decode_report(p[got], got)
    assert report.space_used == "log" and report.values.shape == (4, 3, 5)
    np.testing.assert_allclose(report.values.sum(-1), 1.0)
    assert np.array_equal(report.values[[0, 1]], p[[0, 1]])


# ----- every (k, n) ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["spline", "letcc"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_spline_decodes_from_three_results(name, k, rng):
    """scipy's tridiagonal solver rejected the 1x1 system of three knots."""
    codec = make_codec(name, k, 3)
    out = codec.decode(rng.standard_normal((3, 2)), [0, 1, 2])
    assert out.shape == (k, 2) and np.isfinite(out).all()
    byz = make_codec(name, k, 5, byzantine=1)
    assert np.isfinite(byz.decode(rng.standard_normal((5, 2)), list(range(5)))).all()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(APPROXIMATE),
    k=st.integers(1, 9),
    extra=st.integers(0, 20),
    systematic=st.booleans(),
    probs=st.booleans(),
    data=st.data(),
)
def test_every_k_n_and_returned_set_decodes(name, k, extra, systematic, probs, data):
    n = k + extra % (2 * k + 3)  # n in k..3k+2
    codec = make_codec(name, k, n, systematic=systematic)
    size = data.draw(st.integers(codec.min_results, n), label="size")
    got = data.draw(st.permutations(range(n)), label="order")[:size]
    x = np.random.default_rng(k * 100 + n).standard_normal((k, 6))
    y = results(codec, x, probs=probs)
    report = codec.decode_report(y[got], got)
    assert report.values.shape == (k, 10) and np.isfinite(report.values).all()
    assert report.space_used == ("log" if probs else "linear")
    assert sorted(report.own + report.decoded) == list(range(k))
    if systematic:
        assert report.own == tuple(sorted(w for w in got if w < k))
        for row in report.own:
            assert np.array_equal(report.values[row], y[row])
    else:
        assert report.own == () and report.decoded == tuple(range(k))
    if probs:
        np.testing.assert_allclose(report.values.sum(-1), 1.0, atol=1e-9)


def test_too_few_results_is_still_an_error():
    codec = make_codec("berrut", K, N, systematic=True, byzantine=2)
    with pytest.raises(NotEnoughResultsError, match="at least 5"):
        codec.decode(np.ones((4, 3)), [0, 1, 2, 3])
