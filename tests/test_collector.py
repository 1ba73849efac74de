"""The collector against a real Redis: wait policy, late, duplicate and corrupt results, TTLs.

Workers are simulated by calling the worker's own reporting code, so the bytes and the
pipeline are the real ones; no Celery worker consumes the (unrouted) queue here.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from codedfarm.coordinator.collector import Collector
from codedfarm.coordinator.dispatch import BatchSpec, Dispatcher
from codedfarm.protocol import Keys, Notice, TaskMessage, unpack_frame
from codedfarm.worker.core import Report
from codedfarm.worker.options import WorkerOptions
from codedfarm.worker.state import WorkerState


@pytest.fixture
def worker(settings):
    return WorkerState(settings, WorkerOptions(straggle="none"))


def linear_f(x: np.ndarray) -> np.ndarray:
    w = np.random.default_rng(3).standard_normal((1024, 10)).astype(np.float32)
    return x.reshape(len(x), -1) @ w


def start_batch(settings, redis_client, codec="mds", n=6, s=2, deadline=5.0, k=2,
                wait="results"):  # fmt: skip
    dispatcher = Dispatcher(settings, redis_client)
    x = np.random.default_rng(0).random((k, 1, 32, 32)).astype(np.float32)
    spec = BatchSpec(model="linear", codec=codec, n=n, s=s, deadline=deadline,
                     queues=("nobody",), wait=wait)  # fmt: skip
    prepared = dispatcher.prepare(x, spec)
    inbox = Keys(settings.key_prefix).inbox("test")
    dispatcher.dispatch(prepared, inbox)
    return prepared, inbox, x


def report(worker, prepared, inbox, index, *, payload=None, shape=None, ok=True, dtype="float32"):
    msg = TaskMessage(
        batch=prepared.batch,
        index=index,
        model="linear",
        input_key=Keys(worker.settings.key_prefix).inputs(prepared.batch),
        offset=0,
        nbytes=4096,
        dtype="float32",
        shape=[1, 32, 32],
        output_key=Keys(worker.settings.key_prefix).outputs(prepared.batch),
        inbox=inbox,
        ttl=60.0,
    )
    out = linear_f(prepared.coded[index : index + 1])[0]
    data = out.tobytes() if payload is None else payload
    notice = Notice(batch=prepared.batch, index=index, ok=ok, shape=shape or [10], dtype=dtype,
                    written_at=time.time())  # fmt: skip
    reply = Report()
    reply.add(msg, data if ok else b"", notice)
    reply.send(worker)


def drain(collector: Collector, rounds: int = 3):
    records = []
    for _ in range(rounds):
        records.extend(collector.poll(0.05))
    return records


def test_decodes_at_n_minus_s_and_counts_duplicate_late_corrupt(settings, redis_client, worker):
    prepared, inbox, x = start_batch(settings, redis_client)
    collector = Collector(redis_client, inbox)
    assert drain(collector) == [] and collector.open_batches == 1
    report(worker, prepared, inbox, 0)
    report(worker, prepared, inbox, 0)  # duplicate
    report(worker, prepared, inbox, 5, shape=[3])  # wrong shape: corrupt
    report(worker, prepared, inbox, 1)
    report(worker, prepared, inbox, 2)
    assert drain(collector) == []  # 3 good results < wait_for = 4
    report(worker, prepared, inbox, 4)
    (record,) = drain(collector)
    assert record.outcome == "decoded" and record.workers_used == [0, 1, 2, 4]
    assert record.duplicates == 1 and record.corrupt == 1
    header, payload = unpack_frame(
        redis_client.lpop(Keys(settings.key_prefix).reply(prepared.batch))
    )
    predictions = np.frombuffer(payload, "<f4").reshape(header["shape"])
    np.testing.assert_allclose(predictions, linear_f(x), rtol=1e-4, atol=1e-3)
    report(worker, prepared, inbox, 3)  # late
    drain(collector)
    assert collector.dropped == {"late": 1, "duplicate": 1, "corrupt": 1, "unknown": 0}
    # finished batches leave no inputs behind; whatever remains expires
    assert not redis_client.exists(Keys(settings.key_prefix).inputs(prepared.batch))
    for key in redis_client.scan_iter(f"{settings.key_prefix}:*"):
        assert redis_client.ttl(key) > 0, key


def test_wrong_byte_size_is_dropped_and_decode_waits_for_a_good_result(
    settings, redis_client, worker
):
    prepared, inbox, _x = start_batch(settings, redis_client, n=5, s=1)
    collector = Collector(redis_client, inbox)
    report(worker, prepared, inbox, 0, dtype="float64")  # wrong dtype: dropped at once
    report(worker, prepared, inbox, 1, payload=b"\x00" * 12)  # 12 bytes, not 40
    report(worker, prepared, inbox, 2)
    report(worker, prepared, inbox, 3)
    assert drain(collector) == []  # the corrupt ones do not count
    report(worker, prepared, inbox, 4)
    assert drain(collector) == []
    report(worker, prepared, inbox, 0)  # a good copy of result 0
    (record,) = drain(collector)
    assert record.outcome == "decoded" and record.workers_used == [0, 2, 3, 4]
    assert record.corrupt == 2
    assert collector.dropped["corrupt"] == 2


def test_deadline_decodes_from_what_arrived_or_times_out(settings, redis_client, worker):
    prepared, inbox, _ = start_batch(settings, redis_client, codec="berrut", n=6, s=1, deadline=0.3)
    collector = Collector(redis_client, inbox)
    report(worker, prepared, inbox, 3)
    report(worker, prepared, inbox, 5)
    start = time.monotonic()
    records = []
    while not records and time.monotonic() - start < 3:
        records = collector.poll(1.0)
    (record,) = records
    assert record.outcome == "deadline_decoded" and record.workers_used == [3, 5]
    prepared, inbox, _ = start_batch(settings, redis_client, codec="mds", n=6, s=1, deadline=0.3)
    report(worker, prepared, inbox, 3)
    collector = Collector(redis_client, inbox)
    records = []
    while not records and time.monotonic() - start < 6:
        records = collector.poll(1.0)
    assert records[0].outcome == "timeout" and records[0].results_received == 1


def test_all_workers_failing_ends_the_batch_at_once(settings, redis_client, worker):
    prepared, inbox, _ = start_batch(settings, redis_client, codec="mds", n=3, s=1, deadline=30)
    collector = Collector(redis_client, inbox)
    for i in range(3):
        report(worker, prepared, inbox, i, ok=False)
    (record,) = drain(collector)
    assert record.outcome == "failed" and record.worker_errors == 3


def test_replication_waits_until_every_input_has_a_copy(settings, redis_client, worker):
    prepared, inbox, _x = start_batch(settings, redis_client, codec="replication", n=6, s=3, k=2)
    collector = Collector(redis_client, inbox)
    # inputs: worker j computes input j % 2; 0, 2, 4 all compute input 0
    for i in (0, 2, 4):
        report(worker, prepared, inbox, i)
    assert drain(collector) == []  # 3 = n - s results, but input 1 has no copy yet
    report(worker, prepared, inbox, 3)
    (record,) = drain(collector)
    assert record.outcome == "decoded" and record.workers_used == [0, 2, 3, 4]


def test_in_process_collector_hands_over_in_memory_and_writes_no_reply_key(
    settings, redis_client, worker
):
    prepared, inbox, x = start_batch(settings, redis_client, n=4, s=1)
    collector = Collector(redis_client, inbox, reply_in_memory=True)
    for i in range(3):
        report(worker, prepared, inbox, i)
    record, predictions = collector.wait_for(prepared.batch, 2.0)
    assert record.outcome == "decoded"
    np.testing.assert_allclose(predictions, linear_f(x), rtol=1e-4, atol=1e-3)
    reply_key = Keys(settings.key_prefix).reply(prepared.batch)
    collector.flush_cleanup()
    assert not redis_client.exists(reply_key)  # nothing would ever read it
    assert not redis_client.exists(Keys(settings.key_prefix).inputs(prepared.batch))


def test_a_codec_that_fails_unexpectedly_fails_its_batch_not_the_collector(
    settings, redis_client, worker, monkeypatch, caplog
):
    """A codec's bug (here a numpy-style ValueError in decode) ends its batch as failed, with
    the reason and the traceback in the log once; the collector goes on with the next."""
    from codedfarm.codecs.mds import MDSCodec

    real = MDSCodec.decode_report
    calls = []

    def broken_once(self, y, workers):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("unexpected array size")
        return real(self, y, workers)

    monkeypatch.setattr(MDSCodec, "decode_report", broken_once)
    first, inbox, _ = start_batch(settings, redis_client)
    collector = Collector(redis_client, inbox)
    drain(collector)
    for index in range(4):
        report(worker, first, inbox, index)
    with caplog.at_level("ERROR", logger="codedfarm.coordinator.collector"):
        records = drain(collector)
    assert [r.outcome for r in records] == ["failed"]
    assert "decode failed: ValueError('unexpected array size')" in records[0].error
    assert len([r for r in caplog.records if r.exc_info]) == 1
    second, _, _ = start_batch(settings, redis_client)
    for index in range(4):
        report(worker, second, inbox, index)
    assert [r.outcome for r in drain(collector)] == ["decoded"]


# ----- wait="own": early answers ---------------------------------------------------------
SYSTEMATIC = "berrut:systematic=true"


def one_by_one(x: np.ndarray) -> np.ndarray:
    """What the workers computed: each row alone (the BLAS path of a batch differs)."""
    return np.stack([linear_f(x[i : i + 1])[0] for i in range(len(x))])


def start_systematic(settings, redis_client, wait="own", k=4):
    """k rows on n = 6 tasks (R = 1.5: tasks 0..3 carry the rows, 4 and 5 parity)."""
    dispatcher = Dispatcher(settings, redis_client)
    x = np.random.default_rng(1).random((k, 1, 32, 32)).astype(np.float32)
    spec = BatchSpec(model="linear", codec=SYSTEMATIC, redundancy=1.5, deadline=5.0,
                     queues=("nobody",), wait=wait)  # fmt: skip
    prepared = dispatcher.prepare(x, spec)
    inbox = Keys(settings.key_prefix).inbox("test")
    dispatcher.dispatch(prepared, inbox)
    return prepared, inbox, x


def test_every_row_own_finishes_at_once_without_a_decode(settings, redis_client, worker):
    prepared, inbox, x = start_systematic(settings, redis_client)
    assert (prepared.n, prepared.wait_for) == (6, 4)
    collector = Collector(redis_client, inbox)
    for i in (0, 1, 2):
        report(worker, prepared, inbox, i)
    assert drain(collector) == []
    report(worker, prepared, inbox, 3)
    (record,) = drain(collector)
    assert record.outcome == "decoded" and record.wait == "own"
    assert record.rows_own == [0, 1, 2, 3] and record.rows_decoded == []
    assert record.workers_used == [0, 1, 2, 3] and record.timings.decode == 0.0
    frame = redis_client.blpop([Keys(settings.key_prefix).reply(prepared.batch)], timeout=1)
    _header, payload = unpack_frame(frame[1])
    got = np.frombuffer(payload, np.float32).reshape(4, 10)
    np.testing.assert_array_equal(got, one_by_one(x))  # the own results, bit for bit


def test_a_late_row_is_decoded_from_parity_and_listed_as_decoded(settings, redis_client, worker):
    prepared, inbox, _x = start_systematic(settings, redis_client)
    collector = Collector(redis_client, inbox)
    for i in (0, 1, 2, 4):  # row 3's own task is late; one parity result is in
        report(worker, prepared, inbox, i)
    (record,) = drain(collector)
    assert record.outcome == "decoded"
    assert record.rows_own == [0, 1, 2] and record.rows_decoded == [3]
    report(worker, prepared, inbox, 3)  # the straggler: late, dropped
    assert drain(collector) == [] and collector.dropped["late"] == 1


def test_wait_results_waits_for_n_minus_s_even_with_every_row_own(settings, redis_client, worker):
    dispatcher = Dispatcher(settings, redis_client)
    x = np.random.default_rng(1).random((4, 1, 32, 32)).astype(np.float32)
    spec = BatchSpec(model="linear", codec=SYSTEMATIC, n=6, s=1, deadline=5.0,
                     queues=("nobody",), wait="results")  # fmt: skip
    prepared = dispatcher.prepare(x, spec)
    inbox = Keys(settings.key_prefix).inbox("test")
    dispatcher.dispatch(prepared, inbox)
    collector = Collector(redis_client, inbox)
    for i in range(4):
        report(worker, prepared, inbox, i)
    assert drain(collector) == []  # 4 < wait_for = 5
    report(worker, prepared, inbox, 5)
    (record,) = drain(collector)
    assert record.wait == "results" and record.rows_own == [0, 1, 2, 3]


def test_on_rows_hands_out_own_results_before_the_batch_finishes(settings, redis_client, worker):
    from codedfarm.coordinator.dispatch import Dispatcher as _Dispatcher

    dispatcher = _Dispatcher(settings, redis_client)
    x = np.random.default_rng(2).random((4, 1, 32, 32)).astype(np.float32)
    spec = BatchSpec(model="linear", codec=SYSTEMATIC, redundancy=1.5, deadline=5.0,
                     queues=("nobody",))  # fmt: skip
    prepared = dispatcher.prepare(x, spec)
    inbox = Keys(settings.key_prefix).inbox("own-client")
    collector = Collector(redis_client, inbox, reply_in_memory=True)
    collector.register(dispatcher.registration(prepared))
    dispatcher.dispatch(prepared, inbox, announce=False)
    told: list[tuple[list[int], np.ndarray]] = []
    report(worker, prepared, inbox, 2)
    report(worker, prepared, inbox, 0)
    assert collector.wait_for(prepared.batch, 0.3, lambda r, y: told.append((r, y))) is None
    assert [rows for rows, _ in told] == [[0, 2]]
    np.testing.assert_array_equal(told[0][1], one_by_one(x[[0, 2]]))
    report(worker, prepared, inbox, 1)
    report(worker, prepared, inbox, 3)
    record, predictions = collector.wait_for(prepared.batch, 2.0, lambda r, y: told.append((r, y)))
    assert record.rows_own == [0, 1, 2, 3] and len(told) == 1  # the rest came with the answer
    np.testing.assert_array_equal(predictions, one_by_one(x))


def test_a_registration_with_an_unknown_wait_policy_fails_its_batch(settings, redis_client):
    import dataclasses

    dispatcher = Dispatcher(settings, redis_client)
    x = np.zeros((2, 1, 32, 32), np.float32)
    prepared = dispatcher.prepare(x, BatchSpec(model="linear", codec="mds", n=3, s=1,
                                               queues=("nobody",)))  # fmt: skip
    reg = dataclasses.replace(dispatcher.registration(prepared), wait="soon")
    collector = Collector(redis_client, Keys(settings.key_prefix).inbox("test"))
    collector.register(reg)
    assert collector.records[prepared.batch].outcome == "failed"
    assert "wait must be one of" in collector.records[prepared.batch].error


def test_an_unknown_wait_policy_is_refused_when_resolved(settings):
    from codedfarm.coordinator.resolution import resolve_batch
    from codedfarm.errors import ConfigError

    with pytest.raises(ConfigError, match="wait must be one of"):
        resolve_batch(BatchSpec(model="linear", wait="soon"), 4, settings)


def test_an_own_result_a_little_behind_the_parity_keeps_its_row_exact(
    settings, redis_client, worker
):
    """wait_for results are in but row 3's own result is missing: the collector gives it
    late_after (CODEDFARM_LATE_AFTER) of the batch's time before decoding (a clock it is
    handed, so no sleeping)."""
    now = [time.time()]
    prepared, inbox, _ = start_systematic(settings, redis_client)
    collector = Collector(redis_client, inbox, clock=lambda: now[0])
    for i in (0, 1, 2, 4):
        report(worker, prepared, inbox, i)
    now[0] = prepared.submitted_at + 0.4  # the batch took 0.4 s to get wait_for results
    assert collector.poll(0.05) == []
    now[0] += 0.4 * settings.late_after * 0.5  # within the grace: still waiting for row 3
    assert collector.poll(0.05) == []
    report(worker, prepared, inbox, 3)
    (record,) = drain(collector)
    assert record.rows_own == [0, 1, 2, 3] and record.rows_decoded == []

    prepared, inbox, _ = start_systematic(settings, redis_client)
    collector = Collector(redis_client, inbox, clock=lambda: now[0])
    for i in (0, 1, 2, 4):
        report(worker, prepared, inbox, i)
    now[0] = prepared.submitted_at + 0.4
    assert collector.poll(0.05) == []
    now[0] += 0.4 * settings.late_after * 1.1  # past it: row 3 is late and decoded
    (record,) = collector.poll(0.05)
    assert record.rows_own == [0, 1, 2] and record.rows_decoded == [3]


def test_redundant_tasks_wait_at_a_lower_priority_under_wait_own(settings, redis_client):
    """Parity tasks (and extra copies) go to kombu's priority-3 list of their queue, so a
    worker takes every first-copy task before them; every task of a code that is not
    systematic, or under wait="results", stays at priority 0."""
    from codedfarm.coordinator.dispatch import REDUNDANT_PRIORITY, redundant_tasks
    from codedfarm.protocol import priority_list

    def lists(codec: str, wait: str, **spec) -> dict[str, int]:
        redis_client.delete("q", priority_list("q", REDUNDANT_PRIORITY))
        dispatcher = Dispatcher(settings, redis_client)
        x = np.zeros((4, 1, 32, 32), np.float32)
        prepared = dispatcher.prepare(x, BatchSpec(model="linear", codec=codec, wait=wait,
                                                   queues=("q",), **spec))  # fmt: skip
        dispatcher.dispatch(prepared, Keys(settings.key_prefix).inbox("test"))
        low = priority_list("q", REDUNDANT_PRIORITY)
        return {"q": redis_client.llen("q"), low: redis_client.llen(low)}

    low = priority_list("q", REDUNDANT_PRIORITY)
    assert lists(SYSTEMATIC, "own", redundancy=1.5) == {"q": 4, low: 2}
    assert lists(SYSTEMATIC, "results", redundancy=1.5) == {"q": 6, low: 0}
    assert lists("spline", "own", n=12) == {"q": 12, low: 0}
    assert lists("replication", "own", n=8) == {"q": 4, low: 4}
    assert lists("uncoded", "own") == {"q": 4, low: 0}
    from codedfarm.codecs import plan_codec

    assert redundant_tasks(plan_codec("mds").codec(4, 6, 2)) == frozenset({4, 5})
