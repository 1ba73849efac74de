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

from codedfarm.errors import CodedFarmError, ConfigError, QueueFullError
from codedfarm.server.batcher import BatcherConfig, CodingQueue


class FakeFarm:
    """Serves a group after ``delay`` s: each row's prediction is (its sum, its first value)."""

    def __init__(self, delay: float = 0.01, fail_when: int | None = None,
                 early: set[int] | None = None) -> None:  # fmt: skip
        self.delay = delay
        self.fail_when = fail_when  # fail groups containing this value
        self.early = early or set()  # rows (by value) answered at once through on_rows
        self.groups: list[int] = []
        self.request_ids: list[tuple[str, ...]] = []
        self.gate: asyncio.Event | None = None  # when set: groups wait until it opens

    async def __call__(self, x: np.ndarray, on_rows: Any = None,
                       request_ids: tuple[str, ...] = ()) -> np.ndarray:  # fmt: skip
        self.groups.append(len(x))
        self.request_ids.append(request_ids)
        first = [i for i in range(len(x)) if int(x[i, 0]) in self.early]
        if first and on_rows is not None:
            on_rows(first, expected(x[first]))
        if self.gate is not None:
            await self.gate.wait()
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
    # only a clock shows the group did not wait for the queue delay: a one-sided bound, far
    # below the 10 s delay
    assert farm.groups == [4] and elapsed < 5.0, elapsed
    for i, y in enumerate(out):
        np.testing.assert_array_equal(y, expected(rows(i, 1)))


def test_each_group_names_the_requests_it_serves_once_each():
    farm = FakeFarm(delay=0.0)

    async def main():
        queue = CodingQueue(BatcherConfig(group_size=4, max_queue_delay=10.0), farm)
        # "b" (3 rows) is split over both groups; "c" and the unnamed request are in the second
        return await asyncio.gather(
            queue.infer(rows(0, 2), "a"),
            queue.infer(rows(2, 3), "b"),
            queue.infer(rows(5, 1), "c"),
            queue.infer(rows(6, 2)),
        )

    run(main())
    assert farm.groups == [4, 4]
    assert farm.request_ids == [("a", "b"), ("b", "c")]


def test_a_lone_request_is_served_after_the_queue_delay_as_a_partial_group():
    farm = FakeFarm(delay=0.0)

    async def main():
        queue = CodingQueue(BatcherConfig(group_size=8, max_queue_delay=0.05), farm)
        start = time.monotonic()
        y = await queue.infer(rows(5, 1))
        return y, time.monotonic() - start

    y, elapsed = run(main())
    # a partial group of 1 row, formed when the queue delay fired: a one-sided bound (it
    # cannot fire early; load only makes it later)
    assert farm.groups == [1] and elapsed >= 0.05, elapsed
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


async def settle(condition) -> None:
    """Let the loop's other tasks run until ``condition()`` holds (no clock involved)."""
    for _ in range(1000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


def test_a_full_queue_refuses_at_once_and_keeps_serving():
    farm = FakeFarm(delay=0.0)

    async def main():
        farm.gate = asyncio.Event()  # the farm answers nothing until the gate opens
        config = BatcherConfig(group_size=2, max_queue_delay=0.0, max_queue=4,
                               max_groups_in_flight=1)  # fmt: skip
        queue = CodingQueue(config, farm)
        first = asyncio.create_task(queue.infer(rows(0, 2)))
        await settle(lambda: farm.groups == [2])  # in flight: the one slot is taken
        waiting = asyncio.create_task(queue.infer(rows(2, 4)))  # fills the queue
        await asyncio.sleep(0)  # one step of it: its rows are queued
        with pytest.raises(QueueFullError, match="4 rows are waiting"):
            await queue.infer(rows(6, 1))
        # refused at once: the group in flight and the waiting request are still unanswered
        assert not first.done() and not waiting.done() and farm.groups == [2]
        farm.gate.set()
        return await first, await waiting

    first, waiting = run(main())
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
    """A group of fewer than K rows is sent as it is (the codec's k is its size), with its
    settings resolved once (no model reference to resolve again); the farm client goes
    back to the pool after deleting the group's keys."""
    from types import SimpleNamespace

    import codedfarm.server.farm as farm_module
    from codedfarm.coordinator import BatchSettings
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import Farm, ServeConfig
    from codedfarm.settings import Settings

    sent: list[np.ndarray] = []
    specs: list[Any] = []
    flushed = threading.Semaphore(0)

    class FakeClient:
        def __init__(self, settings: object) -> None: ...

        def submit(self, x: np.ndarray, spec: object, on_rows: Any = None,
                   request_ids: tuple[str, ...] = ()) -> SimpleNamespace:  # fmt: skip
            sent.append(x.copy())
            specs.append(spec)
            record = SimpleNamespace(batch="b1", rows_own=list(range(len(x))), rows_decoded=[],
                                     outcome="decoded",
                                     timings=SimpleNamespace(end_to_end=0.01))  # fmt: skip
            return SimpleNamespace(predictions=expected(x), outcome="decoded", record=record)

        def flush_cleanup(self) -> None:
            flushed.release()

        def close(self) -> None: ...

    monkeypatch.setattr(farm_module, "FarmClient", FakeClient)
    config = ServeConfig(batcher=BatcherConfig(group_size=4), clients=1, n=24, s=4,
                         straggle="fixed:S=1,delay=1", straggle_seed=10)  # fmt: skip
    farm = Farm(Settings(), config)
    model = resolve_model("lenet5")
    y = farm._submit(model, rows(7, 3), 10)
    np.testing.assert_array_equal(sent[0], rows(7, 3))
    assert isinstance(specs[0], BatchSettings) and specs[0].model is model
    assert (specs[0].k, specs[0].n, specs[0].s) == (3, 24, 4)  # the same workers, stragglers
    np.testing.assert_array_equal(y, expected(rows(7, 3)))
    # the one client comes back to the pool after deleting the group's keys
    assert flushed.acquire(timeout=5)
    farm._submit(model, rows(0, 4), 11)
    assert len(sent[1]) == 4 and flushed.acquire(timeout=5)
    # group i draws its stragglers with seed + i: the same seed, the same draw
    assert specs[0].slowed == farm.group_settings(model, 3, 10).slowed
    # each group starts its round-robin one queue on (lone rows spread over the workers)
    farm = Farm(Settings(), ServeConfig(batcher=BatcherConfig(group_size=4), clients=1,
                                        queues=("a", "b", "c")))  # fmt: skip
    specs.clear()
    for _ in range(4):
        farm._submit(model, rows(0, 1), None)
        assert flushed.acquire(timeout=5)
    assert [spec.queues for spec in specs] == [("a", "b", "c"), ("b", "c", "a"),
                                               ("c", "a", "b"), ("a", "b", "c")]  # fmt: skip


@pytest.mark.parametrize(
    ("codec", "n", "wait_for", "rows", "expect"),
    [("replication", 24, None, 3, (24, 4, 3)), ("replication", 24, None, 5, (20, 4, 5)),
     ("replication", 24, None, 7, (21, 4, 7)), ("replication", None, None, 5, (5, 0, 5)),
     ("replication", 24, 12, 5, (20, 4, 12)), ("replication", 24, 30, 5, (20, 4, 20)),
     ("uncoded", 8, None, 2, (2, 0, 2)), ("replication", 6, None, 4, (4, 0, 4)),
     ("replication", 24, None, 1, (24, 4, 1)), ("spline", 24, None, 3, (24, 4, 20)),
     ("mds", 6, None, 1, (6, 4, 2)), ("replication", 24, None, 8, (24, 4, 8))],
)  # fmt: skip
def test_a_partial_groups_copies_shrink_with_it(codec, n, wait_for, rows, expect):
    """Uncoded sends a task per row; replication keeps its worker budget (the most copies
    per row that fit in N) and waits for the first copy of each row; the other codes keep
    N and S. These are the codecs' own facts (``fit_workers``), not the server's."""
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import ServeConfig, group_settings
    from codedfarm.settings import Settings

    batcher = BatcherConfig(group_size=min(8, n or 8))
    config = ServeConfig(codec=codec, n=n, s=4, wait_for=wait_for, batcher=batcher)
    settings = group_settings(Settings(), config, resolve_model("linear"), rows)
    assert (settings.n, settings.s, settings.wait_for) == expect


@pytest.mark.parametrize("codec", ["replication", "uncoded", "spline", "berrut", "mds"])
def test_the_dispatcher_takes_every_partial_group(codec):
    """Groups of 1..K rows under the server's settings for the benchmark (K=8, N=24, S=4)
    all pass the dispatcher's checks and encode, for every codec."""
    from codedfarm.coordinator.dispatch import Dispatcher
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import ServeConfig, group_settings
    from codedfarm.settings import Settings

    config = ServeConfig(codec=codec, n=24, s=4)
    model = resolve_model("linear")
    dispatcher = Dispatcher(Settings(), client=None)  # type: ignore[arg-type]  # no writes
    for rows in range(1, 9):
        settings = group_settings(Settings(), config, model, rows)
        prepared = dispatcher.prepare(np.zeros((rows, 1, 32, 32), np.float32), settings)
        assert prepared.k == rows


def test_replication_is_served_at_the_first_copy_of_each_input():
    """A replication group decodes as soon as every input has one copy back (wait_for K),
    unless told otherwise; other codecs wait for N - S."""
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import ServeConfig, group_settings
    from codedfarm.settings import Settings

    model = resolve_model("lenet5")
    for codec, wait_for, expect in [("replication", None, 8), ("replication", 12, 12),
                                    ("spline", None, 20)]:  # fmt: skip
        config = ServeConfig(codec=codec, n=24, s=4, wait_for=wait_for)
        assert group_settings(Settings(), config, model, 8).wait_for == expect


def test_a_models_config_json_comes_before_the_servers_flags(settings):
    """The server's --codec, -n, -s and --deadline are defaults: a model's config.json
    serving settings win, field by field; the coding queue's codec label is the codec
    its groups use."""
    import dataclasses

    from codedfarm.models.config import ServingDefaults
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import Farm, ServeConfig

    config = ServeConfig(codec="mds", n=24, s=4, deadline=3.0)
    farm = Farm(settings, config)
    plain = resolve_model("linear")
    got = farm.group_settings(plain, 8)
    assert (got.plan.spec, got.n, got.s, got.deadline) == ("mds", 24, 4, 3.0)
    serving = ServingDefaults(codec="berrut", n=12, deadline=1.5)
    own = dataclasses.replace(plain, version=2, serving=serving)
    got = farm.group_settings(own, 8)
    assert (got.model, got.plan.spec, got.n, got.s, got.deadline) == (
        own, "berrut", 12, 4, 1.5)  # fmt: skip

    async def labels() -> tuple[str, str]:
        try:
            return farm.coding(own).codec, farm.coding(plain).codec
        finally:
            await farm.close()

    assert asyncio.run(labels()) == ("berrut", "mds")


def test_a_changed_config_json_gets_a_new_coding_queue_and_the_idle_old_one_closes(settings):
    import dataclasses

    from codedfarm.models.config import ServingDefaults
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import Farm, ServeConfig

    farm = Farm(settings, ServeConfig())
    before = resolve_model("linear")
    after = dataclasses.replace(before, serving=ServingDefaults(codec="berrut"))

    async def main() -> tuple[object, object, bool]:
        old = farm.coding(before)
        new = farm.coding(after)
        await asyncio.sleep(0)  # the old queue's close runs
        try:
            return old, new, farm.coding(after) is new
        finally:
            await farm.close()

    old, new, reused = asyncio.run(main())
    assert (old.codec, new.codec, reused) == (  # type: ignore[attr-defined]
        "spline:systematic=true",
        "berrut",
        True,
    )
    assert list(farm._coding) == [after]


@pytest.mark.parametrize(
    "flags",
    [{}, {"n": 24, "s": 4}, {"redundancy": 1.5}, {"redundancy": 1.25, "s": 1}],
    ids=["defaults", "n24s4", "R1.5", "R1.25s1"],
)
@pytest.mark.parametrize("codec", ["berrut", "spline", "letcc", "mds", "replication", "uncoded"])
def test_every_group_size_the_server_can_form_is_coded_and_decoded(codec, flags):
    """Groups of r = 1..K rows under the defaults and under explicit settings: each is
    resolved, encoded and decoded from its first wait_for results (a linear model stands
    in for the workers), with the right shape and finite values."""
    from codedfarm.coordinator.dispatch import Dispatcher
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import ServeConfig, group_settings
    from codedfarm.settings import Settings

    config = ServeConfig(codec=codec, **flags)
    model = resolve_model("linear")
    dispatcher = Dispatcher(Settings(), client=None)  # type: ignore[arg-type]  # no writes
    weights = np.random.default_rng(0).standard_normal((1024, 10)).astype(np.float32)
    for rows in range(1, config.batcher.group_size + 1):
        x = np.random.default_rng(rows).random((rows, 1, 32, 32), dtype=np.float32)
        settings = group_settings(Settings(), config, model, rows)
        prepared = dispatcher.prepare(x, settings)
        y = prepared.coded.reshape(settings.n, -1) @ weights
        late = np.random.default_rng(rows).permutation(settings.n)[: settings.n - settings.wait_for]
        workers = [j for j in range(settings.n) if j not in set(late.tolist())]
        if codec == "replication":  # decodes once every row has a copy: wait for them all
            workers = list(range(settings.n))
        decoded = settings.codec.decode(y[workers], workers)
        assert decoded.shape == (rows, 10) and np.isfinite(decoded).all(), (rows, settings)


def test_rows_answered_early_answer_their_requests_before_the_group_is_done():
    """Requests whose rows' own results are in are answered at once; a request with a row
    still missing (the two-row one) waits for the group; a failed group fails only what
    was not answered yet."""
    farm = FakeFarm(delay=0.5, early={0, 1, 2})
    queue = CodingQueue(BatcherConfig(group_size=4, max_queue_delay=0.05), farm)

    async def main():
        done: dict[int, float] = {}
        start = time.monotonic()

        async def one(i: int, x: np.ndarray) -> np.ndarray:
            out = await queue.infer(x)
            done[i] = time.monotonic() - start
            return out

        outs = await asyncio.gather(one(0, rows(0, 1)), one(1, rows(1, 1)), one(2, rows(2, 2)))
        await queue.close()
        return done, outs

    done, outs = run(main())
    assert done[0] < 0.3 and done[1] < 0.3  # before the group's 0.5 s
    assert done[2] >= 0.45  # row 3 is not early: the request waits for the group
    for out, x in zip(outs, (rows(0, 1), rows(1, 1), rows(2, 2)), strict=True):
        np.testing.assert_array_equal(out, expected(x))
    assert farm.groups == [4]


def test_a_failed_group_fails_only_the_requests_not_answered_yet():
    farm = FakeFarm(delay=0.2, early={0}, fail_when=1)
    queue = CodingQueue(BatcherConfig(group_size=2, max_queue_delay=0.05), farm)

    async def main():
        results = await asyncio.gather(queue.infer(rows(0, 1)), queue.infer(rows(1, 1)),
                                       return_exceptions=True)  # fmt: skip
        await queue.close()
        return results

    first, second = run(main())
    np.testing.assert_array_equal(first, expected(rows(0, 1)))
    assert isinstance(second, CodedFarmError)


def test_the_serve_defaults_are_one_systematic_code_at_a_redundancy_of_one_and_a_half():
    """No flags: the codec and budget docs/serve.md justifies; --help names the same codec;
    -n (the same layer) wins over the default budget."""
    from click.testing import CliRunner

    from codedfarm.cli import cli
    from codedfarm.codecs import plan_codec
    from codedfarm.server.farm import SERVE_CODEC, SERVE_REDUNDANCY, ServeConfig

    defaults = ServeConfig().batch_defaults
    assert (defaults.codec, defaults.redundancy, defaults.n) == (SERVE_CODEC, 1.5, None)
    assert plan_codec(SERVE_CODEC).codec(8, 12, 4).systematic and SERVE_REDUNDANCY <= 1.5
    assert ServeConfig(n=24).batch_defaults.redundancy is None
    assert ServeConfig(codec="uncoded").batch_defaults.codec == "uncoded"
    help_text = " ".join(CliRunner().invoke(cli, ["serve", "--help"]).output.split())
    assert f"default: {SERVE_CODEC}" in help_text
