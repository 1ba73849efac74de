"""Coded data shuffling (codedfarm.shuffle): placement, exact decoding of every scheme, the
theory at its extremes, and real runs over a private Redis with worker threads and
processes (every worker verifiably holds its batch, measured payload = the theory)."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import redis

from codedfarm.errors import ConfigError, FarmUnavailableError, InputError
from codedfarm.shuffle import ShuffleConfig, TrainSpec, expected_load, run_shuffle, shuffle_load
from codedfarm.shuffle.config import as_rows, corner_point
from codedfarm.shuffle.delivery import decode_group, encode_group
from codedfarm.shuffle.placement import ChunkLedger, RowLedger, assignment
from codedfarm.shuffle.schemes import Scheme
from codedfarm.shuffle.theory import structured_load, transitions

SCHEMES = ("uncoded", "lee", "structured")


def simulate(scheme: str, n: int, s: float, data: np.ndarray, seed: int, epochs: int = 3):
    """Master and workers in-process (no Redis): every epoch, every worker decodes its new
    batch from the plan's messages; returns the payload bytes sent and the theory per epoch."""
    config = ShuffleConfig(workers=n, storage=s, scheme=scheme, seed=seed)
    rows = as_rows(data, n)
    q, width = rows.shape
    master = Scheme(config, q, width)
    layout = master.layout
    pieces = layout.pieces(rows)
    workers = [Scheme(config, q, width) for _ in range(n)]
    stores = []
    for k in range(n):
        held = master.held_pieces(k)
        stores.append((np.where(held[:, None], pieces, 0).astype(np.uint8), held))
    out = []
    for epoch in range(1, epochs + 1):
        new = assignment(q, n, seed, epoch)
        theory = shuffle_load(master, new)
        plan = master.plan(new)
        messages = [encode_group(g, pieces) for g in plan.groups]
        sent = sum(len(m) for m in messages) + sum(len(u) for u in plan.unicast) * layout.unit
        for k in range(n):
            store, held = stores[k]
            unicast, groups = workers[k].plan(new).for_worker(k)
            assert np.array_equal(unicast, plan.unicast[k])
            store[unicast] = pieces[unicast]  # the unicast payload, as sent
            held[unicast] = True
            for index, group in groups:
                decode_group(group, k, messages[index], store, held)
            mine = np.flatnonzero(new == k)
            assert np.array_equal(layout.rows(store, mine), rows[mine]), (scheme, n, s, k)
            workers[k].update(new, epoch)
            keep = workers[k].held_pieces(k)
            assert not (keep & ~held).any(), "the cache update needs a piece never received"
            store[~keep] = 0
            held &= keep
            assert held.sum() * layout.unit <= master.budget_bytes()
        master.update(new, epoch)
        out.append((sent, theory))
    return out


# ----- placement --------------------------------------------------------------------------
@pytest.mark.parametrize(("q", "n", "s"), [(24, 4, 0.25), (24, 4, 0.5), (30, 3, 1.0), (64, 8, 0.4)])
def test_row_placement_holds_the_batch_and_s_q_rows(q, n, s):
    config = ShuffleConfig(workers=n, storage=s, scheme="lee")
    ledger = RowLedger(q, n, config.cache_rows(q), seed=1)
    assert config.cache_rows(q) == max(q // n, math.floor(s * q + 1e-9))
    for epoch in range(3):
        for k in range(n):
            assert ledger.held[k].sum() == config.cache_rows(q)
            assert ledger.held[k][ledger.owner == k].all()
        assert np.bincount(ledger.owner, minlength=n).tolist() == [q // n] * n
        ledger.update(assignment(q, n, 1, epoch + 1), epoch + 1)


@pytest.mark.parametrize(("n", "s", "t"), [(4, 0.25, 0), (4, 0.5, 1), (4, 0.74, 1), (8, 0.5, 3),
                                           (8, 1.0, 7), (5, 0.6, 2)])  # fmt: skip
def test_structured_placement_is_a_subset_design_kept_by_the_update(n, s, t):
    assert corner_point(n, s) == t
    q = 5 * n
    ledger = ChunkLedger(q, n, t, seed=2)
    assert ledger.pieces_per_row == math.comb(n - 1, t)
    for epoch in range(4):
        for f in range(q):  # each row: its chunks are the t-subsets of the non-owners, once
            j = int(ledger.owner[f])
            others = [i for i in range(n) if i != j]
            expected = {sum(1 << i for i in c) for c in itertools.combinations(others, t)}
            assert sorted(ledger.masks[f].tolist()) == sorted(expected)
        for k in range(n):  # storage (t+1)/n of the data, in chunks
            held = ledger.held_pieces(k).sum()
            assert held * n == (t + 1) * q * ledger.pieces_per_row
        ledger.update(assignment(q, n, 2, epoch + 1), epoch + 1)


# ----- every scheme decodes exactly, and sends exactly its theory --------------------------
@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("n", "storages"), [(2, (0.5, 1.0)), (3, (1 / 3, 0.5, 2 / 3, 1.0)),
                                             (4, (0.25, 0.5, 0.6, 1.0)), (5, (0.2, 0.6, 1.0)),
                                             (8, (0.125, 0.5, 1.0))])  # fmt: skip
def test_every_scheme_decodes_exactly_on_random_data(scheme, n, storages):
    for seed, s in itertools.product(range(3), storages):
        rng = np.random.default_rng(seed)
        kind = seed % 3
        if kind == 0:
            data = rng.integers(0, 256, size=(n * 9 + 1, 37), dtype=np.uint8)  # odd row bytes
        elif kind == 1:
            data = rng.standard_normal((n * 7, 5, 3)).astype(np.float32)
        else:
            data = (rng.standard_normal((n * 6, 4)) + 1j).astype(np.complex128)
        for sent, theory in simulate(scheme, n, s, data, seed):
            assert sent == theory, (scheme, n, s, seed)
            if s == 1.0:
                assert sent == 0


def test_at_n8_half_storage_structured_sends_at_most_half_of_uncoded():
    data = np.random.default_rng(0).standard_normal((1600, 64))
    for seed in range(3):
        coded = sum(x for x, _ in simulate("structured", 8, 0.5, data, seed, epochs=2))
        plain = sum(x for x, _ in simulate("uncoded", 8, 0.5, data, seed, epochs=2))
        assert coded <= 0.5 * plain, (coded, plain)


# ----- theory ------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 4, 8])
def test_the_theory_at_the_extremes(n):
    q, width = 1600, 512
    for scheme in SCHEMES:
        assert expected_load(scheme, q, n, 1.0, width) == 0
    uncoded = expected_load("uncoded", q, n, 1 / n, width)
    assert uncoded == pytest.approx(q * (1 - 1 / n) * width)
    # at s = 1/n a worker holds only its last batch: coding pairs swaps, a factor 2 at best
    for scheme in ("lee", "structured"):
        assert expected_load(scheme, q, n, 1 / n, width) == pytest.approx(uncoded / 2)
    # and both coded schemes send the same thing for the same shuffle (one XOR per pair)
    data = np.zeros((q, 8))
    lee = [x for x, _ in simulate("lee", n, 1 / n, data, seed=4, epochs=2)]
    structured = [x for x, _ in simulate("structured", n, 1 / n, data, seed=4, epochs=2)]
    assert lee == structured
    assert expected_load("uncoded", q, n, 0.5, width) == pytest.approx(q * 0.5 * width)


def test_the_structured_load_of_a_balanced_shuffle_is_its_closed_form():
    """Every new batch takes b/n rows from every old one: the load is q(n-1-t)/(n(t+2))."""
    n, b = 4, 8
    q = n * b
    old = np.repeat(np.arange(n), b)
    new = np.tile(np.repeat(np.arange(n), b // n), n)
    assert (transitions(old, new, n) == b // n).all()
    for t in range(n):
        width = math.comb(n - 1, t) * 10  # no padding
        exact = structured_load(old, new, n, t, width)
        assert exact == pytest.approx(expected_load("structured", q, n, (t + 1) / n, width))


def test_lee_expected_load_is_the_large_q_limit():
    q, n, s = 60_000, 4, 0.5
    config = ShuffleConfig(workers=n, storage=s, scheme="lee", seed=3)
    scheme = Scheme(config, q, 1)
    exact = shuffle_load(scheme, assignment(q, n, 3, 1))
    assert exact == pytest.approx(expected_load("lee", q, n, s, 1), rel=0.03)


# ----- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(("kwargs", "words"), [
    ({"workers": 1, "storage": 1.0}, "--workers must be an integer >= 2"),
    ({"workers": 4, "storage": 0.2}, "between 1/n = 0.25 and 1"),
    ({"workers": 4, "storage": 1.01}, "between 1/n = 0.25 and 1"),
    ({"workers": 4, "storage": 0.5, "scheme": "nope"}, "unknown scheme 'nope'"),
    ({"workers": 4, "storage": 0.5, "epochs": 0}, "--epochs must be an integer >= 1"),
])  # fmt: skip
def test_bad_configs_are_refused(kwargs, words):
    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ShuffleConfig(**kwargs)


@pytest.mark.parametrize(("data", "words"), [
    (np.zeros((3, 4)), "fewer than the 4 workers"),
    (np.array(3.0), "0-d"),
    (np.array([["a"]] * 8), "must be numeric"),
    (np.array([object()] * 8), "must be numeric"),
    (np.zeros((8, 0)), "0 bytes per row"),
])  # fmt: skip
def test_rows_that_cannot_be_split_are_refused(data, words):
    with pytest.raises(InputError, match=words):
        as_rows(data, 4)


def test_the_remainder_rows_are_dropped_and_too_many_chunks_refused():
    assert as_rows(np.zeros((10, 2)), 4).shape == (8, 16)
    config = ShuffleConfig(workers=16, storage=0.5, scheme="structured")  # C(15,7) = 6435
    with pytest.raises(ConfigError, match="6435 chunks"):
        Scheme(config, 64, 512)


# ----- real runs over Redis ------------------------------------------------------------------
def _check(report, scheme, n, s):
    assert report.ok, (scheme, n, s, [e.verified for e in report.epochs])
    for e in report.epochs:
        assert e.theory_bytes == 0 or abs(e.ratio - 1) <= 0.05, (scheme, n, s, e)
        if s == 1.0:
            assert e.payload_bytes == 0
        assert e.overhead_bytes > 0


def test_every_scheme_n_and_s_over_redis_with_worker_threads(redis_server):
    data = np.random.default_rng(5).standard_normal((96, 16))
    for scheme, n, seed in itertools.product(SCHEMES, (2, 4, 8), (0, 1)):
        for s in sorted({1 / n, 0.5, 1.0}):
            config = ShuffleConfig(workers=n, storage=s, epochs=2, scheme=scheme, seed=seed)
            report = run_shuffle(data, config, redis_server.url, processes=False)
            _check(report, scheme, n, s)
    leftover = redis.Redis.from_url(redis_server.url).keys("cf:shuffle:*")
    assert leftover == []


def test_worker_processes_on_the_digits_and_the_coded_gain(redis_server):
    from sklearn.datasets import load_digits

    data = load_digits().data
    client = redis.Redis.from_url(redis_server.url)
    ttls = []

    def look(_report):
        ttls.extend(client.ttl(key) for key in client.keys("cf:shuffle:*"))

    payload = {}
    for scheme in SCHEMES:
        config = ShuffleConfig(workers=8, storage=0.5, epochs=2, scheme=scheme, seed=7)
        report = run_shuffle(data, config, redis_server.url, progress=look)
        _check(report, scheme, 8, 0.5)
        assert report.dropped_rows == len(data) % 8
        payload[scheme] = sum(e.payload_bytes for e in report.epochs)
    assert payload["structured"] <= 0.5 * payload["uncoded"]
    assert payload["lee"] < payload["uncoded"]
    assert ttls and all(0 < ttl <= 600 for ttl in ttls)  # every key expires
    assert client.keys("cf:shuffle:*") == []


def test_a_killed_worker_fails_the_epoch_quickly(redis_server):
    data = np.random.default_rng(0).standard_normal((60, 8))
    config = ShuffleConfig(workers=3, storage=2 / 3, epochs=3, scheme="structured")
    started = time.monotonic()
    with pytest.raises(FarmUnavailableError, match=r"shuffle epoch 2 failed: worker 1 died"):
        run_shuffle(data, config, redis_server.url, kill_at=(1, 2))
    assert time.monotonic() - started < 20
    assert redis.Redis.from_url(redis_server.url).keys("cf:shuffle:*") == []


# ----- the training use ----------------------------------------------------------------------
def test_coded_and_uncoded_training_reach_the_same_weights(redis_server):
    from codedfarm.local.shuffle import digits_training

    rows, test_rows = digits_training(seed=0)
    spec = TrainSpec(features=rows.shape[1] - 1, classes=10)
    runs = {}
    for scheme in ("uncoded", "structured"):
        config = ShuffleConfig(workers=4, storage=0.5, epochs=3, scheme=scheme, seed=1)
        runs[scheme] = run_shuffle(rows, config, redis_server.url, processes=False, train=spec,
                                   test_rows=test_rows)  # fmt: skip
    coded, plain = runs["structured"].epochs, runs["uncoded"].epochs
    assert [e.model_checksum for e in coded] == [e.model_checksum for e in plain]
    assert [e.accuracy for e in coded] == [e.accuracy for e in plain]
    assert coded[-1].accuracy > 0.85
    assert sum(e.payload_bytes for e in coded) < sum(e.payload_bytes for e in plain)


def test_the_worst_case_optimum_at_its_checkable_corners_and_between():
    """(q/n)(n-1-t)/(t+1) R at s = (t+1)/n: at t = 0 the chain of n-1 XORs of whole batches
    (a cyclic shift needs no fewer), at t = n-2 one worker's missing chunks (1/(n-1) of
    its b rows), at t = n-1 nothing; memory sharing joins the corners with lines."""
    from codedfarm.shuffle.theory import worst_case_optimum

    q, r = 1792, 512
    for n in (2, 4, 8, 16):
        b = q // n
        assert worst_case_optimum(q, n, 1 / n, r) == pytest.approx((n - 1) * b * r)
        assert worst_case_optimum(q, n, (n - 1) / n, r) == pytest.approx(b / (n - 1) * r)
        assert worst_case_optimum(q, n, 1.0, r) == 0.0
    middle = (worst_case_optimum(q, 8, 2 / 8, r) + worst_case_optimum(q, 8, 3 / 8, r)) / 2
    assert worst_case_optimum(q, 8, 2.5 / 8, r) == pytest.approx(middle)
    with pytest.raises(ValueError, match="s must be in"):
        worst_case_optimum(q, 8, 0.1, r)
