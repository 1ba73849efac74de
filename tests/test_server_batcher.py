"""Coded dynamic batching (pure asyncio: a fake farm stands in for the workers)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codedfarm.coordinator import BatchSpec
from codedfarm.errors import CodedFarmError, ConfigError
from codedfarm.server.batcher import BatcherConfig, CodingQueue, QueueFullError


class FakeFarm:
    """Serves a group after ``delay`` s: each row's prediction is (its sum, its first value)."""

    def __init__(self, delay: float = 0.01, fail_when: int | None = None) -> None:
        self.delay = delay
        self.fail_when = fail_when  # fail groups containing this value
        self.groups: list[int] = []

    async def __call__(self, x: np.ndarray) -> np.ndarray:
        self.groups.append(len(x))
        await asyncio.sleep(self.delay)
        if self.fail_when is not None and (x == self.fail_when).any():
            raise CodedFarmError("workers failed")
        flat = x.reshape(len(x), -1)
        return np.stack([flat.sum(1), flat[:, 0]], 1).astype(np.float32)


def rows(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32).reshape(count, 1) * np.ones((1, 3))


def expected(x: np.ndarray) -> np.ndarray:
    return np.stack([x.sum(1), x[:, 0]], 1).astype(np.float32)


def run(coro):
    return asyncio.run(coro)


def test_k_waiting_rows_form_one_full_group_at_once():
    farm = FakeFarm()

    async def main():
        queue = CodingQueue(BatcherConfig(group_size=4, max_queue_delay=10.0), farm)
        start = time.monotonic()
        out = await asyncio.gather(*(queue.infer(rows(i, 1)) for i in range(4)))
        return out, time.monotonic() - start

    out, elapsed = run(main())
    assert farm.groups == [4] and elapsed < 1.0  # not the 10 s delay
    for i, y in enumerate(out):
        np.testing.assert_array_equal(y, expected(rows(i, 1)))


def test_a_lone_request_is_served_after_the_queue_delay_as_a_partial_group():
    farm = FakeFarm(delay=0.0)

    async def main():
        queue = CodingQueue(BatcherConfig(group_size=8, max_queue_delay=0.05), farm)
        start = time.monotonic()
        y = await queue.infer(rows(5, 1))
        return y, time.monotonic() - start

    y, elapsed = run(main())
    assert farm.groups == [1] and 0.05 <= elapsed < 0.5
    np.testing.assert_array_equal(y, expected(rows(5, 1)))


@settings(deadline=None, max_examples=25)
@given(st.lists(st.integers(1, 11), min_size=1, max_size=6), st.integers(1, 5))
def test_every_request_gets_its_own_rows_back_however_it_is_split(sizes, k):
    farm = FakeFarm(delay=0.001)

    async def main():
        queue = CodingQueue(BatcherConfig(group_size=k, max_queue_delay=0.002, max_queue=100),
                            farm)  # fmt: skip
        starts = np.cumsum([0, *sizes[:-1]])
        return await asyncio.gather(*(queue.infer(rows(int(a), b))
                                      for a, b in zip(starts, sizes, strict=True)))  # fmt: skip

    out = run(main())
    starts = np.cumsum([0, *sizes[:-1]])
    for y, a, b in zip(out, starts, sizes, strict=True):
        np.testing.assert_array_equal(y, expected(rows(int(a), b)))
    assert max(farm.groups) <= k and sum(farm.groups) == sum(sizes)


def test_a_full_queue_refuses_at_once_and_keeps_serving():
    farm = FakeFarm(delay=0.2)

    async def main():
        config = BatcherConfig(group_size=2, max_queue_delay=0.0, max_queue=4,
                               max_groups_in_flight=1)  # fmt: skip
        queue = CodingQueue(config, farm)
        first = asyncio.create_task(queue.infer(rows(0, 2)))  # in flight
        await asyncio.sleep(0.05)
        waiting = asyncio.create_task(queue.infer(rows(2, 4)))  # fills the queue
        await asyncio.sleep(0.01)
        start = time.monotonic()
        with pytest.raises(QueueFullError, match="4 rows are waiting"):
            await queue.infer(rows(6, 1))
        refused_in = time.monotonic() - start
        return await first, await waiting, refused_in

    first, waiting, refused_in = run(main())
    assert refused_in < 0.05
    np.testing.assert_array_equal(first, expected(rows(0, 2)))
    np.testing.assert_array_equal(waiting, expected(rows(2, 4)))


def test_a_failed_group_fails_its_requests_only():
    farm = FakeFarm(fail_when=3)

    async def main():
        queue = CodingQueue(BatcherConfig(group_size=2, max_queue_delay=0.01), farm)
        return await asyncio.gather(*(queue.infer(rows(i, 1)) for i in range(4)),
                                    return_exceptions=True)  # fmt: skip

    out = run(main())
    assert [isinstance(y, CodedFarmError) for y in out] == [False, False, True, True]


def test_rows_that_arrive_while_every_slot_is_busy_gather_into_full_groups():
    farm = FakeFarm(delay=0.1)

    async def main():
        config = BatcherConfig(group_size=4, max_queue_delay=0.0, max_groups_in_flight=1)
        queue = CodingQueue(config, farm)
        tasks = [asyncio.create_task(queue.infer(rows(0, 1)))]
        await asyncio.sleep(0.02)  # the first row left alone; the next 8 wait for the slot
        tasks += [asyncio.create_task(queue.infer(rows(i, 1))) for i in range(1, 9)]
        await asyncio.gather(*tasks)

    run(main())
    assert farm.groups == [1, 4, 4]


def test_bad_batcher_settings_are_config_errors():
    with pytest.raises(ConfigError):
        BatcherConfig(group_size=0).validate()
    with pytest.raises(ConfigError):
        BatcherConfig(group_size=8, max_queue=4).validate()


def test_the_server_codes_a_partial_group_for_its_own_size(monkeypatch):
    """A group of fewer than K rows is sent as it is (the codec's k is its size); the
    farm client goes back to the pool after deleting the group's keys."""
    from types import SimpleNamespace

    import codedfarm.server.app as app
    from codedfarm.settings import Settings

    sent: list[np.ndarray] = []
    specs: list[Any] = []
    flushed = threading.Semaphore(0)

    class FakeClient:
        def __init__(self, settings: object) -> None: ...

        def submit(self, x: np.ndarray, spec: object) -> SimpleNamespace:
            sent.append(x.copy())
            specs.append(spec)
            return SimpleNamespace(predictions=expected(x), outcome="decoded", record=None)

        def flush_cleanup(self) -> None:
            flushed.release()

        def close(self) -> None: ...

    monkeypatch.setattr(app, "FarmClient", FakeClient)
    config = app.ServeConfig(batcher=BatcherConfig(group_size=4), clients=1, straggle_seed=10)
    farm = app.Farm(Settings(), config)
    y = farm._submit(BatchSpec(model="lenet5", n=24, s=4), rows(7, 3))
    np.testing.assert_array_equal(sent[0], rows(7, 3))
    assert (specs[0].n, specs[0].s) == (24, 4)  # the same workers and stragglers
    np.testing.assert_array_equal(y, expected(rows(7, 3)))
    # the one client comes back to the pool after deleting the group's keys
    assert flushed.acquire(timeout=5)
    farm._submit(BatchSpec(model="lenet5", wait_for=4), rows(0, 4))
    assert len(sent[1]) == 4 and flushed.acquire(timeout=5)
    # group i draws its stragglers with seed + i; wait_for is passed through
    assert [s.seed for s in specs] == [10, 11] and [s.wait_for for s in specs] == [None, 4]


@pytest.mark.parametrize(
    ("codec", "n", "wait_for", "rows", "expect"),
    [("replication", 24, 8, 3, (24, 4, 3)), ("replication", 24, 8, 5, (20, 4, 5)),
     ("replication", 24, 8, 7, (21, 4, 7)), ("replication", None, 8, 5, (None, 4, 5)),
     ("uncoded", 8, None, 2, (2, 1, None)), ("replication", 6, 8, 4, (4, 3, 4)),
     ("replication", 24, 8, 1, (24, 4, 1)), ("spline", 24, None, 3, (24, 4, None)),
     ("mds", 6, None, 1, (6, 4, None)), ("replication", 24, 8, 8, (24, 4, 8))],
)  # fmt: skip
def test_a_partial_groups_copies_shrink_with_it(codec, n, wait_for, rows, expect):
    """Uncoded sends a task per row; replication keeps its worker budget (the most copies
    per row that fit in N) and waits for the first copy of each row; the other codes keep
    N and S."""
    import codedfarm.server.app as app
    from codedfarm.settings import Settings

    farm = app.Farm(Settings(), app.ServeConfig())
    spec = BatchSpec(model="m", codec=codec, n=n, s=4, wait_for=wait_for)
    spec = farm.partial_spec(spec, rows)
    assert (spec.n, spec.s, spec.wait_for) == expect


@pytest.mark.parametrize("codec", ["replication", "uncoded", "spline", "berrut", "mds"])
def test_the_dispatcher_takes_every_partial_group(codec):
    """Groups of 1..K rows under the server's settings for the benchmark (K=8, N=24, S=4;
    uncoded N=8) all pass the dispatcher's checks and encode."""
    import codedfarm.server.app as app
    from codedfarm.coordinator.dispatch import Dispatcher
    from codedfarm.models.resolve import resolve_model
    from codedfarm.settings import Settings

    n, s = (8, 0) if codec == "uncoded" else (24, 4)
    farm = app.Farm(Settings(), app.ServeConfig(codec=codec, n=n, s=s))
    model = resolve_model("linear")
    dispatcher = Dispatcher(Settings(), client=None)  # type: ignore[arg-type]  # no writes
    for rows in range(1, 9):
        spec = farm.partial_spec(farm.group_spec(model), rows)
        prepared = dispatcher.prepare(np.zeros((rows, 1, 32, 32), np.float32), spec)
        assert prepared.k == rows


def test_replication_is_served_at_the_first_copy_of_each_input(monkeypatch):
    """The server decodes a replication group as soon as every input has one copy back
    (wait_for K), unless told otherwise; other codecs wait for N - S."""
    import codedfarm.server.app as app
    from codedfarm.models.resolve import resolve_model
    from codedfarm.settings import Settings

    waits: list[int | None] = []

    async def blocking(fn: object, spec: BatchSpec, x: np.ndarray) -> None:
        waits.append(spec.wait_for)

    model = resolve_model("lenet5")
    for codec, wait_for, expect in [("replication", None, 8), ("replication", 12, 12),
                                    ("spline", None, None)]:  # fmt: skip
        config = app.ServeConfig(codec=codec, wait_for=wait_for)
        farm = app.Farm(Settings(), config)
        monkeypatch.setattr(farm, "blocking", blocking)
        asyncio.run(farm.coding_queue(model).run_group(np.zeros((8, 1, 32, 32), np.float32)))
        assert waits[-1] == expect


def test_a_models_config_json_comes_before_the_servers_flags():
    """The server's --codec, -n, -s and --deadline are defaults: a model's config.json
    serving settings win, field by field."""
    import dataclasses

    import codedfarm.server.app as app
    from codedfarm.models.config import ServingDefaults
    from codedfarm.models.resolve import resolve_model
    from codedfarm.settings import Settings

    config = app.ServeConfig(codec="mds", n=24, s=4, deadline=3.0)
    farm = app.Farm(Settings(), config)
    plain = resolve_model("lenet5")
    spec = farm.group_spec(plain)
    assert (spec.codec, spec.n, spec.s, spec.deadline) == ("mds", 24, 4, 3.0)
    serving = ServingDefaults(codec="berrut", n=12, deadline=1.5)
    own = dataclasses.replace(plain, version=2, serving=serving)
    spec = farm.group_spec(own)
    assert (spec.model, spec.codec, spec.n, spec.s, spec.deadline) == (
        "lenet5@2", "berrut", 12, 4, 1.5)  # fmt: skip
    assert farm.codec_of(own) == "berrut" and farm.codec_of(plain) == "mds"
