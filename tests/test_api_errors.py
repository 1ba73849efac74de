"""Bad input through the Python API: the right CodedFarmError with a useful message, and
nothing written to Redis."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec
from codedfarm.errors import (
    CodecError,
    CodecParameterError,
    CodedFarmError,
    ConfigError,
    InputError,
    RedisUnavailableError,
    StragglerSpecError,
    UnknownCodecError,
    UnknownModelError,
)

GOOD = np.random.default_rng(0).random((8, 1, 32, 32)).astype(np.float32)


def with_value(index, value):
    bad = GOOD.copy()
    bad.flat[index] = value
    return bad


CASES = [
    # (id, x, spec changes, settings changes, error class, message)
    ("string", "not an array", {}, {}, InputError, "batch must be numeric, got dtype <U12"),
    ("objects", np.array([object()] * 8), {}, {}, InputError, "batch must be numeric"),
    ("ragged-shape", [[1.0, 2.0]] * 8, {}, {}, InputError, "takes a batch of shape (K, 1, 32, 32), got (8, 2)"),
    ("one-input-no-batch-dim", GOOD[0], {}, {}, InputError, "got (1, 32, 32)"),
    ("five-dims", GOOD[None], {}, {}, InputError, "got (1, 8, 1, 32, 32)"),
    ("torch-wrong-shape", torch.zeros(8, 3, 32, 32), {}, {}, InputError, "got (8, 3, 32, 32)"),
    ("nan", with_value(5, np.nan), {}, {}, InputError, "batch contains 1 NaN/Inf values"),
    ("inf", with_value(7, np.inf), {}, {}, InputError, "batch contains 1 NaN/Inf values"),
    ("empty", GOOD[:0], {}, {}, InputError, "batch is empty (K = 0)"),
    ("too-big", GOOD, {}, {"max_batch_bytes": 10_000}, InputError,
     "coded batch is 98304 bytes (n=24 x 4096), over the limit of 10000"),
    ("model", GOOD, {"model": "resnet50"}, {}, UnknownModelError, "unknown model 'resnet50'"),
    ("codec", GOOD, {"codec": "raptor"}, {}, UnknownCodecError, "unknown codec 'raptor'"),
    ("codec-param", GOOD, {"codec": "spline:lam_dec=-1"}, {}, CodecParameterError,
     "spline: lam_dec must be finite and >= 0"),
    ("codec-param-name", GOOD, {"codec": "berrut:degree=2"}, {}, CodecParameterError,
     "berrut: bad parameter 'degree=2'"),
    ("n-zero", GOOD, {"n": 0}, {}, ConfigError, "n must be an integer in [1, 1024], got 0"),
    ("n-bool", GOOD, {"n": True}, {}, ConfigError, "n must be an integer in [1, 1024], got True"),
    ("n-too-big", GOOD, {"n": 4096}, {}, ConfigError, "n must be an integer in [1, 1024]"),
    ("n-below-k", GOOD, {"n": 5}, {}, CodecParameterError, "n must be >= k"),
    ("s-negative", GOOD, {"s": -2}, {}, ConfigError, "s (stragglers to tolerate) must be an integer >= 0"),
    ("s-not-below-n", GOOD, {"n": 10, "s": 10}, {}, ConfigError, "s must be < n"),
    ("s-too-big-exact", GOOD, {"model": "linear", "codec": "mds", "n": 10, "s": 3}, {}, CodecError,
     "mds: S=3 is too large for this exact code: it needs 8 of n=10 results, but n - S = 7"),
    ("wait-above-n", GOOD, {"n": 16, "wait_for": 17}, {}, ConfigError, "wait_for must be in [1, 16]"),
    ("wait-below-min", GOOD, {"model": "linear", "codec": "mds", "n": 16, "wait_for": 3}, {}, ConfigError,
     "wait_for must be in [8, 16]"),
    ("deadline-zero", GOOD, {"deadline": 0.0}, {}, ConfigError, "deadline must be in (0, 60)"),
    ("deadline-past-ttl", GOOD, {"deadline": 90.0}, {}, ConfigError, "(CODEDFARM_KEY_TTL), got 90.0"),
    ("queue-name", GOOD, {"queues": ("gpu:0",)}, {}, ConfigError, "queue names must be non-empty without ':'"),
    ("straggle", GOOD, {"straggle": "lognormal:mu=1"}, {}, StragglerSpecError,
     "unknown straggler model 'lognormal'"),
    ("replication-n", GOOD, {"codec": "replication", "n": 20}, {}, CodecParameterError,
     "replication: n must be a multiple of k"),
    ("lagrange-degree", GOOD, {"codec": "lagrange:degree=3", "n": 16}, {}, CodecParameterError,
     "lagrange: n=16 is too small: degree=3 with k=8 needs n >= (k-1)*degree+1 = 22"),
    ("uncoded-n", GOOD, {"codec": "uncoded", "n": 12}, {}, CodecParameterError,
     "uncoded: n must equal k, got k=8, n=12"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "x", "spec", "changes", "error", "message"), CASES,
                         ids=[c[0] for c in CASES])  # fmt: skip
def test_bad_batches_raise_and_write_nothing(
    settings, redis_client, name, x, spec, changes, error, message
):
    assert len(CASES) >= 20
    with FarmClient(replace(settings, **changes)) as client:
        fields = {"model": "lenet5", "codec": "spline", "n": 24, **spec}
        with pytest.raises(error) as info:
            client.submit(x, BatchSpec(**fields))
    assert isinstance(info.value, CodedFarmError)
    assert message in str(info.value), str(info.value)
    assert "\n" not in str(info.value)
    assert redis_client.dbsize() == 0


def test_unreachable_redis_raises_with_the_url(settings):
    bad = replace(settings, redis_url="redis://127.0.0.1:1/0")
    with pytest.raises(RedisUnavailableError, match=r"cannot reach Redis at redis://127.0.0.1:1/0"):
        FarmClient(bad)
