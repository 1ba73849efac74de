"""Exact codes recover f(x) to 1e-8 for the functions they are made for."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codedfarm.codecs import make_codec


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


@pytest.mark.parametrize(("k", "n"), [(1, 1), (1, 5), (4, 7), (8, 24), (20, 100)])
def test_mds_exact_for_linear_f_on_every_subset_size(rng, k, n):
    codec = make_codec("mds", k, n)
    weights = rng.standard_normal((5, 12))
    bias = rng.standard_normal(5)
    x = rng.standard_normal((k, 3, 4))

    def f(z):
        return z.reshape(len(z), -1) @ weights.T

    def affine(z):
        return f(z) + bias

    for size in range(k, n + 1):
        for _ in range(3):
            workers = rng.choice(n, size, replace=False)
            for func in (f, affine):
                y = func(codec.encode(x))[workers]
                assert rel_err(codec.decode(y, workers), func(x)) <= 1e-8, (size, workers)


def test_mds_every_k_subset_small_code(rng):
    codec = make_codec("mds", 3, 7)
    x = rng.standard_normal((3, 6))
    weights = rng.standard_normal((6, 2))
    for workers in itertools.combinations(range(7), 3):
        y = (codec.encode(x) @ weights)[list(workers)]
        assert rel_err(codec.decode(y, workers), x @ weights) <= 1e-8


def test_mds_encoder_is_systematic_and_rows_sum_to_one():
    codec = make_codec("mds", 5, 12)
    np.testing.assert_array_equal(codec.encoder_matrix[:5], np.eye(5))
    np.testing.assert_allclose(codec.encoder_matrix.sum(axis=1), 1.0, atol=1e-12)
    assert np.linalg.cond(codec.encoder_matrix) < 10


@pytest.mark.parametrize(("k", "degree"), [(1, 3), (3, 2), (4, 3), (6, 2)])
def test_lagrange_exact_for_polynomials(rng, k, degree):
    n = (k - 1) * degree + 1 + 4
    codec = make_codec("lagrange", k, n, degree=degree)
    coeffs = rng.standard_normal((degree + 1, 3, 5))

    def f(z):  # an elementwise-composed polynomial of total degree `degree` in z
        lin = z.reshape(len(z), -1)
        return sum((lin @ coeffs[p]) ** p for p in range(degree + 1))

    x = rng.standard_normal((k, 3))
    for size in range(codec.min_results, n + 1):
        workers = rng.choice(n, size, replace=False)
        y = f(codec.encode(x))[workers]
        assert rel_err(codec.decode(y, workers), f(x)) <= 1e-8, size


def test_replication_and_uncoded_are_exact_for_any_f(rng):
    x = rng.standard_normal((6, 4))

    def f(z):
        return np.sin(z) ** 3

    codec = make_codec("replication", 6, 18)
    workers = [0, 7, 14, 3, 10, 5, 11, 1, 9]  # at least one copy of each input
    y = f(codec.encode(x))[workers]
    assert rel_err(codec.decode(y, workers), f(x)) <= 1e-8
    uncoded = make_codec("uncoded", 6)
    assert uncoded.n == 6
    perm = rng.permutation(6)
    assert rel_err(uncoded.decode(f(uncoded.encode(x))[perm], perm), f(x)) <= 1e-8


def test_replication_averages_the_copies_it_has():
    codec = make_codec("replication", 2, 6)
    y = np.array([[1.0], [3.0], [5.0]])  # workers 0 and 2 -> input 0; worker 1 -> input 1
    np.testing.assert_allclose(codec.decode(y, [0, 1, 2]), [[3.0], [3.0]])


@settings(max_examples=40, deadline=None)
@given(
    k=st.integers(1, 6),
    extra=st.integers(0, 6),
    seed=st.integers(0, 2**31 - 1),
    data=st.data(),
)
def test_mds_any_order_any_subset_property(k, extra, seed, data):
    n = k + extra
    codec = make_codec("mds", k, n)
    r = np.random.default_rng(seed)
    size = data.draw(st.integers(k, n))
    workers = data.draw(st.permutations(range(n)))[:size]
    x = r.standard_normal((k, 3))
    w = r.standard_normal((3, 2))
    y = (codec.encode(x) @ w)[list(workers)]
    assert rel_err(codec.decode(y, workers), x @ w) <= 1e-8
