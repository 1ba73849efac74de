"""Berrut and smoothing-spline codes: interpolation, pole-freeness, convergence, GCV."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.interpolate import CubicSpline, make_smoothing_spline

from codedfarm.codecs import (
    berrut_matrix,
    data_points,
    letcc_lambdas,
    make_codec,
    smoothing_spline_matrix,
    worker_points,
)
from codedfarm.errors import CodecParameterError


def smooth_model(seed: int = 0, dim: int = 16, out: int = 4):
    """A small tanh network: a smooth nonlinear stand-in for a model."""
    r = np.random.default_rng(seed)
    a1 = r.standard_normal((dim, 16)) / 4
    a2 = r.standard_normal((16, out)) / 4

    def f(x: np.ndarray) -> np.ndarray:
        return np.tanh(np.tanh(x.reshape(len(x), -1) @ a1) @ a2)

    return f


def mean_decode_mse(codec, f, stragglers: int, trials: int = 30, seed: int = 7) -> float:
    r = np.random.default_rng(seed)
    errors = []
    for _ in range(trials):
        x = r.standard_normal((codec.k, 16))
        workers = np.sort(r.choice(codec.n, codec.n - stragglers, replace=False))
        y = f(codec.encode(x))[workers]
        errors.append(np.mean((codec.decode(y, workers) - f(x)) ** 2))
    return float(np.mean(errors))


def test_points_follow_the_chebyshev_conventions():
    np.testing.assert_allclose(data_points(4), np.cos((2 * np.arange(4) + 1) * np.pi / 8))
    np.testing.assert_allclose(worker_points(5), np.cos(np.arange(5) * np.pi / 4), atol=1e-16)
    assert worker_points(5)[2] == 0.0


@pytest.mark.parametrize("k", [1, 2, 3, 8, 20])
def test_interpolants_reproduce_the_data_at_the_data_points(rng, k):
    alpha = data_points(k)
    x = rng.standard_normal((k, 5))
    np.testing.assert_allclose(berrut_matrix(alpha, alpha) @ x, x, atol=1e-12)
    np.testing.assert_allclose(smoothing_spline_matrix(alpha, alpha, 0.0) @ x, x, atol=1e-12)
    # and a decoder whose targets are returned nodes gives those results back exactly
    beta = worker_points(3 * k + 1)
    workers = rng.permutation(3 * k + 1)[: 2 * k + 1]
    nodes = beta[workers]
    y = rng.standard_normal((len(nodes), 2))
    np.testing.assert_array_equal(berrut_matrix(nodes, nodes[:3]) @ y, y[:3])


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(5, 40),
    log_lam=st.floats(-8, 1),
    seed=st.integers(0, 2**31 - 1),
)
def test_spline_matches_scipy_inside_the_knots(m, log_lam, seed):
    r = np.random.default_rng(seed)
    knots = np.sort(r.uniform(-1, 1, m))
    if np.min(np.diff(knots)) < 1e-3:
        knots = np.linspace(-1, 1, m) + r.uniform(-0.2, 0.2, m) / m
    y = np.sin(3 * knots) + 0.3 * r.standard_normal(m)
    targets = np.linspace(knots[0], knots[-1], 57)
    lam = 10.0**log_lam
    ours = smoothing_spline_matrix(knots, targets, lam) @ y
    ref = make_smoothing_spline(knots, y, lam=lam)(targets)
    np.testing.assert_allclose(ours, ref, atol=1e-7 * (1 + np.abs(ref).max()))


def test_spline_lam_zero_is_the_natural_cubic_interpolant_and_linear_outside(rng):
    knots = np.sort(rng.uniform(-0.8, 0.8, 12))
    y = rng.standard_normal(12)
    inside = np.linspace(knots[0], knots[-1], 40)
    ref = CubicSpline(knots, y, bc_type="natural")
    np.testing.assert_allclose(
        smoothing_spline_matrix(knots, inside, 0.0) @ y, ref(inside), atol=1e-12
    )
    left = np.array([-1.0, -0.95, -0.9])
    values = smoothing_spline_matrix(knots, left, 0.0) @ y
    slope = ref(knots[0], 1)
    np.testing.assert_allclose(np.diff(values) / 0.05, [slope, slope], rtol=1e-9)
    # node order does not matter
    perm = rng.permutation(12)
    np.testing.assert_allclose(
        smoothing_spline_matrix(knots[perm], inside, 1e-3) @ y[perm],
        smoothing_spline_matrix(knots, inside, 1e-3) @ y,
        atol=1e-12,
    )


def test_spline_with_one_or_two_results_is_constant_or_linear():
    codec = make_codec("spline", 3, 6, lam_dec=1e-3)
    np.testing.assert_allclose(codec.decode(np.array([[2.0]]), [4]), [[2.0]] * 3)
    beta = worker_points(6)
    y = np.array([[beta[1]], [beta[4]]])  # y = z is linear: reproduced exactly
    np.testing.assert_allclose(codec.decode(y, [1, 4]), data_points(3)[:, None], atol=1e-12)


def test_berrut_decode_is_pole_free_for_every_straggler_pattern():
    worst = 0.0
    for n in range(1, 11):
        for k in range(1, n + 1):
            codec = make_codec("berrut", k, n)
            for size in range(1, n + 1):
                for workers in itertools.combinations(range(n), size):
                    matrix = codec.decoder_matrix(workers)
                    assert np.isfinite(matrix).all(), (k, n, workers)
                    np.testing.assert_allclose(matrix.sum(axis=1), 1.0, atol=1e-9)
                    worst = max(worst, float(np.abs(matrix).sum(axis=1).max()))
    assert worst < 100.0  # bounded Lebesgue constant: no pole anywhere


def test_signs_by_original_index_would_create_poles():
    """Why signs follow sorted position: with index-based signs a gap breaks the alternation."""
    beta = worker_points(8)
    nodes = beta[[0, 1, 3, 4, 5, 6, 7]]
    targets = np.linspace(-0.99, 0.99, 2001)
    index_signs = np.array([1, -1, -1, 1, -1, 1, -1.0])  # (-1)^j for j = 0, 1, 3, ...
    denominators = (index_signs / (targets[:, None] - nodes)).sum(axis=1)
    assert np.any(np.diff(np.sign(denominators)) != 0)  # a sign change: a pole in between
    ours = berrut_matrix(nodes, targets)
    assert np.isfinite(ours).all() and np.abs(ours).sum(axis=1).max() < 10


@pytest.mark.parametrize("name", ["berrut", "spline0", "letcc"])
def test_decode_error_falls_as_n_grows_at_fixed_stragglers(name):
    f = smooth_model()
    errors = []
    for n in (16, 32, 64, 128):
        if name == "spline0":
            codec = make_codec("spline", 6, n, lam_enc=0.0, lam_dec=0.0)
        elif name == "letcc":
            codec = make_codec("letcc", 6, n, s=2)
        else:
            codec = make_codec(name, 6, n)
        errors.append(mean_decode_mse(codec, f, stragglers=2))
    assert all(b < a for a, b in itertools.pairwise(errors)), errors


def test_letcc_error_falls_at_least_like_n_to_the_minus_2_5():
    f = smooth_model()
    ns = np.array([24, 48, 96, 192])
    errors = [mean_decode_mse(make_codec("letcc", 6, int(n), s=2), f, stragglers=2) for n in ns]
    slope = np.polyfit(np.log(ns), np.log(errors), 1)[0]
    assert slope <= -2.5, (slope, errors)


def test_letcc_rule_scales_like_s4_over_n3():
    lam_enc, lam_dec = letcc_lambdas(20, 100, 9)
    assert lam_enc == 0.0
    _, doubled = letcc_lambdas(20, 100, 19)
    assert doubled / lam_dec == pytest.approx(16 * 81 / 91, rel=1e-9)  # (S+1)^4 * (n-S)


def test_letcc_smooths_noisy_results_without_being_told_sigma(rng):
    f = smooth_model(2)
    auto = make_codec("letcc", 10, 80, s=10)
    clean_declared = make_codec("letcc", 10, 80, s=10, sigma=0)
    floor = letcc_lambdas(10, 80, 10)[1]
    assert auto.spec.endswith("sigma=auto,lam_enc=0.0,lam_dec=auto")
    assert clean_declared.lam_dec == floor
    errors: dict[str, list[float]] = {"auto": [], "rule": []}
    for _ in range(20):
        x = rng.standard_normal((10, 16))
        workers = np.sort(rng.choice(80, 70, replace=False))
        y = f(auto.encode(x))[workers] + 0.05 * rng.standard_normal((70, 4))
        report = auto.decode_report(y, workers)
        assert report.lam_dec is not None and report.lam_dec >= floor
        errors["auto"].append(np.mean((report.values - f(x)) ** 2))
        errors["rule"].append(np.mean((clean_declared.decode(y, workers) - f(x)) ** 2))
    assert np.mean(errors["auto"]) < 0.5 * np.mean(errors["rule"])
    with pytest.raises(CodecParameterError, match="the noise level is estimated from the results"):
        make_codec("letcc", 10, 80, s=10, sigma=0.1)


def test_spline_beats_berrut_on_a_smooth_function_at_high_s():
    f = smooth_model(1)
    berrut = mean_decode_mse(make_codec("berrut", 8, 40), f, stragglers=16)
    spline = mean_decode_mse(
        make_codec("spline", 8, 40, lam_enc=0.0, lam_dec=0.0), f, stragglers=16
    )
    assert spline < 0.77 * berrut, (spline, berrut)


def test_auto_lambda_smooths_noisy_results_and_is_finite(rng):
    codec = make_codec("spline", 10, 80, lam_enc=0.0, lam_dec="auto")
    exact = make_codec("spline", 10, 80, lam_enc=0.0, lam_dec=0.0)
    f = smooth_model(2)
    auto_err, interp_err = [], []
    for _ in range(20):
        x = rng.standard_normal((10, 16))
        workers = np.sort(rng.choice(80, 70, replace=False))
        y = f(codec.encode(x))[workers]
        y_noisy = y + 0.05 * rng.standard_normal(y.shape)
        decoded = codec.decode_report(y_noisy, workers)
        auto_err.append(np.mean((decoded.values - f(x)) ** 2))
        assert decoded.lam_dec is not None and np.isfinite(decoded.lam_dec)
        assert decoded.lam_dec > 0
        assert decoded.workers == tuple(int(w) for w in workers)
        assert np.array_equal(decoded.values, codec.decode(y_noisy, workers))
        interp_err.append(np.mean((exact.decode(y_noisy, workers) - f(x)) ** 2))
    assert np.mean(auto_err) < 0.5 * np.mean(interp_err)


def test_auto_lambda_on_clean_results_is_close_to_interpolation(rng):
    f = smooth_model(3)
    auto = mean_decode_mse(make_codec("spline", 8, 48), f, stragglers=6)
    interp = mean_decode_mse(make_codec("spline", 8, 48, lam_enc=0.0, lam_dec=0.0), f, stragglers=6)
    assert auto <= 1.1 * interp


def test_repeated_spline_knots_are_a_codec_parameter_error():
    from codedfarm.codecs import smoothing_spline_matrix

    with pytest.raises(CodecParameterError, match="knots must be distinct"):
        smoothing_spline_matrix(np.array([0.0, 0.5, 0.5, 1.0]), np.array([0.1, 0.2]), 0.0)
