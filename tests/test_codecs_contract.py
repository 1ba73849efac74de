"""The codec contract: shapes, numpy/torch parity, caching, specs and every error case."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from codedfarm.codecs import LetccCodec, available_codecs, make_codec, parse_codec_spec
from codedfarm.errors import (
    CodecError,
    CodecParameterError,
    CodedFarmError,
    NonFiniteError,
    NotEnoughResultsError,
    ShapeError,
    UnknownCodecError,
    WorkerSetError,
)

ALL = [
    ("uncoded", 8, 8, {}),
    ("replication", 8, 24, {}),
    ("mds", 8, 24, {}),
    ("lagrange", 8, 24, {"degree": 2}),
    ("berrut", 8, 24, {}),
    ("spline", 8, 24, {"lam_enc": 1e-6, "lam_dec": 1e-4}),
    ("spline", 8, 24, {"lam_dec": "auto"}),
    ("letcc", 8, 24, {"s": 4}),
    ("letcc", 8, 24, {"s": 4, "sigma": 0.0}),
    ("parm", 8, 12, {}),
]


def returned_set(codec, rng):
    if codec.name in ("uncoded", "replication"):
        return list(rng.permutation(codec.n))[: codec.n]
    if codec.name == "parm":  # one result of each group may be missing: row 0's here
        return list(rng.permutation(range(1, codec.n)))
    return list(rng.permutation(codec.n)[: max(codec.min_results, codec.n - 4)])


def test_available_codecs_lists_all_eight():
    assert available_codecs() == [
        "uncoded",
        "replication",
        "mds",
        "lagrange",
        "berrut",
        "spline",
        "letcc",
        "parm",
    ]


@pytest.mark.parametrize(("name", "k", "n", "params"), ALL)
def test_shapes_and_matrices(name, k, n, params, rng):
    codec = make_codec(name, k, n, **params)
    x = rng.standard_normal((k, 1, 28, 28)).astype(np.float32)
    coded = codec.encode(x)
    assert coded.shape == (n, 1, 28, 28) and coded.dtype == np.float32
    assert codec.encoder_matrix.shape == (n, k) and codec.encoder_matrix.dtype == np.float64
    weights = rng.standard_normal((784, 10)).astype(np.float32)
    workers = returned_set(codec, rng)
    y = (coded.reshape(n, -1) @ weights)[workers]
    out = codec.decode(y, workers)
    assert out.shape == (k, 10) and out.dtype == np.float32
    if getattr(codec, "lam_dec", None) != "auto":
        matrix = codec.decoder_matrix(workers)
        assert matrix.shape == (k, len(workers)) and matrix.dtype == np.float64
        assert codec.decoder_matrix(list(workers)) is matrix  # cached per returned set
        assert not matrix.flags.writeable


@pytest.mark.parametrize(("name", "k", "n", "params"), ALL)
def test_numpy_and_torch_give_the_same_results(name, k, n, params, rng):
    codec = make_codec(name, k, n, **params)
    x = rng.standard_normal((k, 3, 4))
    workers = returned_set(codec, rng)
    y_np = np.tanh(codec.encode(x).reshape(n, -1))[workers]
    x_t = torch.from_numpy(x)
    coded_t = codec.encode(x_t)
    assert isinstance(coded_t, torch.Tensor) and coded_t.dtype == torch.float64
    np.testing.assert_allclose(coded_t.numpy(), codec.encode(x), atol=1e-12)
    out_t = codec.decode(torch.from_numpy(y_np), workers)
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (k, 12)
    np.testing.assert_allclose(out_t.numpy(), codec.decode(y_np, workers), atol=1e-10)
    out32 = codec.decode(torch.from_numpy(y_np).float(), workers)
    assert out32.dtype == torch.float32
    np.testing.assert_allclose(out32.numpy(), out_t.numpy(), atol=1e-4)


def test_integer_inputs_are_promoted_to_float(rng):
    codec = make_codec("berrut", 3, 6)
    out = codec.encode(np.arange(12).reshape(3, 4))
    assert out.dtype == np.float64
    out_t = codec.encode(torch.arange(12).reshape(3, 4))
    assert out_t.dtype == torch.float64


def test_spec_and_parse_round_trip():
    codec = make_codec("spline", 8, 24, lam_enc=1e-6, lam_dec=1e-4)
    assert codec.spec == "spline:k=8,n=24,lam_enc=1e-06,lam_dec=0.0001"
    name, params = parse_codec_spec("spline:lam_enc=1e-6,lam_dec=auto")
    assert (name, params) == ("spline", {"lam_enc": 1e-6, "lam_dec": "auto"})
    assert parse_codec_spec("lagrange:degree=3") == ("lagrange", {"degree": 3})
    assert parse_codec_spec(" berrut ") == ("berrut", {})


def _raises(exc, match, fn, *args, **kwargs):
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kwargs)
    assert isinstance(info.value, CodecError) and isinstance(info.value, CodedFarmError)
    return str(info.value)


def test_construction_errors_name_codec_and_parameter():
    _raises(CodecParameterError, r"berrut: k must be >= 1, got 0", make_codec, "berrut", 0, 4)
    _raises(CodecParameterError, r"mds: k must be an integer", make_codec, "mds", 2.5, 4)
    _raises(CodecParameterError, r"mds: k must be an integer", make_codec, "mds", True, 4)
    _raises(CodecParameterError, r"spline: n must be >= k .*k=8, n=4", make_codec, "spline", 8, 4)
    _raises(
        CodecParameterError, r"uncoded: n must equal k, got k=4, n=6", make_codec, "uncoded", 4, 6
    )
    _raises(
        CodecParameterError,
        r"replication: n must be a multiple of k",
        make_codec,
        "replication",
        4,
        6,
    )
    _raises(
        CodecParameterError,
        r"lagrange: n=10 is too small: degree=2 with k=8 needs n >= \(k-1\)\*degree\+1 = 15",
        make_codec,
        "lagrange",
        8,
        10,
        degree=2,
    )
    _raises(
        CodecParameterError,
        r"lagrange: degree must be >= 1",
        make_codec,
        "lagrange",
        2,
        4,
        degree=0,
    )
    _raises(
        CodecParameterError,
        r"spline: lam_dec must be a number >= 0 or 'auto'",
        make_codec,
        "spline",
        2,
        4,
        lam_dec="fast",
    )
    _raises(
        CodecParameterError,
        r"spline: lam_enc must be finite and >= 0",
        make_codec,
        "spline",
        2,
        4,
        lam_enc=-1.0,
    )
    _raises(
        CodecParameterError,
        r"spline: lam_enc must be finite and >= 0",
        make_codec,
        "spline",
        2,
        4,
        lam_enc=float("nan"),
    )
    _raises(CodecParameterError, r"letcc: s must be < n", make_codec, "letcc", 2, 4, s=4)
    _raises(
        CodecParameterError,
        r"letcc: unknown parameter\(s\) lam_dec; allowed: s, sigma, byzantine, space",
        make_codec,
        "letcc",
        2,
        4,
        lam_dec=1.0,
    )
    _raises(CodecParameterError, r"letcc: lam_dec is derived", LetccCodec, 2, 4, lam_dec=1.0)
    _raises(
        CodecParameterError,
        r"berrut: unknown parameter\(s\) degree",
        make_codec,
        "berrut",
        2,
        4,
        degree=2,
    )
    _raises(
        UnknownCodecError,
        r"unknown codec 'reed-solomon'; available: uncoded, replication",
        make_codec,
        "reed-solomon",
        2,
        4,
    )
    _raises(UnknownCodecError, r"unknown codec 'foo' in spec", parse_codec_spec, "foo:x=1")
    _raises(
        CodecParameterError,
        r"spline: bad parameter 'degree=2'",
        parse_codec_spec,
        "spline:degree=2",
    )
    _raises(
        CodecParameterError,
        r"lagrange: parameter degree must be int, got 'two'",
        parse_codec_spec,
        "lagrange:degree=two",
    )


def test_call_errors_name_codec_and_shapes(rng):
    codec = make_codec("mds", 4, 8)
    msg = _raises(
        ShapeError,
        r"mds: input batch x must have leading dimension 4, got shape \(3, 5\)",
        codec.encode,
        np.zeros((3, 5)),
    )
    assert "(3, 5)" in msg
    _raises(ShapeError, r"leading dimension 4, got shape \(\)", codec.encode, np.float64(1.0))
    _raises(
        NonFiniteError,
        r"mds: input batch x of shape \(4, 2\) contains NaN or Inf",
        codec.encode,
        np.array([[1, 2], [3, np.nan], [0, 0], [1, 1]]),
    )
    _raises(
        NonFiniteError,
        r"contains NaN or Inf",
        codec.encode,
        torch.tensor([[1.0], [float("inf")], [0.0], [1.0]]),
    )
    y = np.ones((5, 3))
    _raises(
        ShapeError,
        r"mds: results y have shape \(5, 3\) but 4 worker ids",
        codec.decode,
        y,
        [0, 1, 2, 3],
    )
    _raises(
        WorkerSetError,
        r"mds: worker ids must not repeat; repeated \[2\]",
        codec.decode,
        y,
        [0, 1, 2, 2, 3],
    )
    _raises(
        WorkerSetError,
        r"mds: worker id 8 is out of range \[0, 8\)",
        codec.decode,
        y,
        [0, 1, 2, 3, 8],
    )
    _raises(WorkerSetError, r"mds: worker id -1 is out of range", codec.decode, y, [0, 1, 2, 3, -1])
    _raises(WorkerSetError, r"mds: worker ids must be integers", codec.decode, y, [0, 1, 2, 3, 4.5])
    _raises(
        NotEnoughResultsError,
        r"mds: needs at least 4 results \(k=4, n=8\), got 3",
        codec.decode,
        np.ones((3, 3)),
        [0, 1, 2],
    )
    _raises(
        NonFiniteError,
        r"mds: worker results y of shape \(4, 3\) contains NaN or Inf",
        codec.decode,
        np.array([[1, 1, 1], [1, np.inf, 1], [1, 1, 1], [1, 1, 1.0]]),
        [0, 1, 2, 3],
    )
    rep = make_codec("replication", 3, 6)
    _raises(
        NotEnoughResultsError,
        r"replication: no copy came back for inputs \[2\]",
        rep.decode,
        np.ones((4, 1)),
        [0, 1, 3, 4],
    )
    auto = make_codec("spline", 3, 6)
    _raises(
        CodecParameterError,
        r"lam_dec='auto' chooses the decoder from the results",
        auto.decoder_matrix,
        [0, 1, 2],
    )
    _raises(
        NotEnoughResultsError,
        r"berrut: needs at least 1 results",
        make_codec("berrut", 2, 4).decode,
        np.ones((0, 2)),
        [],
    )


def test_encode_into_a_reused_buffer(rng):
    codec = make_codec("berrut", 4, 10)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    buf = np.empty((10, 2, 3), np.float32)
    assert codec.encode(x, out=buf) is buf
    np.testing.assert_allclose(buf, codec.encode(x), rtol=1e-5, atol=1e-6)
    buf_t = torch.empty(10, 2, 3)
    assert codec.encode(torch.from_numpy(x), out=buf_t) is buf_t
    np.testing.assert_allclose(buf_t.numpy(), buf, rtol=1e-5, atol=1e-6)
    with pytest.raises(ShapeError, match=r"berrut: out must be a contiguous array of shape"):
        codec.encode(x, out=np.empty((10, 6), np.float32))
    with pytest.raises(
        ShapeError, match=r"dtype float32, got shape \(10, 2, 3\) and dtype float64"
    ):
        codec.encode(x, out=np.empty((10, 2, 3)))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.integers(1, 6),
    cols=st.integers(1, 40),
    dtype=st.sampled_from([np.float32, np.float64]),
    bad=st.sampled_from([np.nan, np.inf, -np.inf, None]),
    seed=st.integers(0, 2**16),
)
def test_the_fast_finite_check_is_exact(rows, cols, dtype, bad, seed):
    """Row sums flag NaN and Inf anywhere; finite values whose sums overflow still pass."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, cols)).astype(dtype)
    if bad is None:
        x[rng.integers(rows)] = np.finfo(dtype).max  # a row whose sum overflows to inf
    else:
        x[rng.integers(rows), rng.integers(cols)] = bad
    codec = make_codec("berrut", rows, rows + 2)
    if bad is None:
        with np.errstate(over="ignore"):  # coding the largest float may overflow, by design
            assert np.isfinite(codec.encode(x)).any()
    else:
        with pytest.raises(NonFiniteError):
            codec.encode(x)
