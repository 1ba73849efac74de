"""The batch engine (`codedfarm worker --engine batch`) on a real Redis and real processes."""

from __future__ import annotations

import base64
import json
import signal
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest
import redis
import torch

from codedfarm.codecs import make_codec
from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec, Dispatcher
from codedfarm.errors import FarmUnavailableError, MessageRefusedError
from codedfarm.local import LocalFarm
from codedfarm.models.digits import load_digits_split
from codedfarm.models.registry import load_model
from codedfarm.protocol import (
    INFER_TASK,
    TIMELINE_STAGES,
    BatchRecord,
    Keys,
    TaskMessage,
    read_envelope,
    task_envelope,
)
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate
from codedfarm.worker.celery_engine import make_celery
from codedfarm.worker.core import predict
from codedfarm.worker.options import WorkerOptions
from codedfarm.worker.state import WorkerState

UNACKED, UNACKED_INDEX = "unacked", "unacked_index"  # kombu's keys


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits_split().test_x[:8]


@pytest.fixture(scope="module")
def batch_farm(model_cache) -> Iterator[LocalFarm]:
    """Its own Redis (the tests read kombu's unacked keys): two batch engines, one Celery."""
    base = Settings(key_prefix="be", key_ttl=60.0, deadline=10.0, cache_dir=model_cache,
                    visibility_timeout=3.0)  # fmt: skip
    workers = [
        WorkerOptions(queues=("b0",), concurrency=24, preload=("lenet5", "linear"), engine="batch"),
        WorkerOptions(queues=("b1",), concurrency=24, preload=("lenet5", "linear"), engine="batch"),
        # a Celery worker on the same Redis
        WorkerOptions(queues=("c0",), concurrency=4, preload=("lenet5",), engine="celery"),
    ]
    with LocalFarm(workers, settings=base) as farm:
        yield farm


def submit(settings: Settings, x: np.ndarray, queues: tuple[str, ...], **spec: object):
    with FarmClient(settings) as client:
        start = time.perf_counter()
        result = client.submit(x, BatchSpec(queues=queues, **spec))  # type: ignore[arg-type]
        return result, time.perf_counter() - start


def wait_until(condition, timeout: float = 5.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return condition()


@pytest.mark.slow
def test_batch_engine_decodes_exactly_what_the_codec_gives(batch_farm, digits):
    result, _ = submit(batch_farm.settings, digits, ("b0", "b1"), model="lenet5",
                       codec="spline", n=24, s=4, straggle="fixed:S=4,delay=3",
                       seed=1)  # fmt: skip
    # decoded at its wait policy, from none of the 4 tasks that sleep 3 s: not waited for
    assert result.outcome == "decoded", result.record
    slowed = {d["index"] for d in result.record.slowed}
    assert len(slowed) == 4 and not slowed & set(result.record.workers_used)
    assert result.record.timings.injected_delay == 0.0
    # one forward pass over many coded inputs gives each one's own output
    codec = make_codec("spline", 8, 24)
    model = load_model("lenet5", batch_farm.settings.cache_dir)
    with torch.inference_mode():
        coded_outputs = model(torch.from_numpy(codec.encode(digits))).numpy()
    workers = result.record.workers_used
    expected = codec.decode(coded_outputs[workers], workers)
    np.testing.assert_allclose(result.predictions, expected, rtol=1e-4, atol=1e-4)
    # exact code, linear model: the batch engine's answer equals direct inference
    result, _ = submit(batch_farm.settings, digits, ("b0", "b1"), model="linear", codec="mds",
                       n=12, s=4, straggle="fixed:S=4,delay=3", seed=2)  # fmt: skip
    linear = load_model("linear", batch_farm.settings.cache_dir)
    with torch.inference_mode():
        direct = linear(torch.from_numpy(digits)).numpy()
    assert result.outcome == "decoded"
    np.testing.assert_allclose(result.predictions, direct, rtol=1e-3, atol=1e-3)


@pytest.mark.slow
def test_celery_and_batch_workers_serve_one_batch_together(batch_farm, digits):
    # tasks alternate between the queues; s = 0, so every task of both workers is needed
    result, _ = submit(batch_farm.settings, digits, ("c0", "b0"), model="lenet5",
                       codec="berrut", n=16, s=0)  # fmt: skip
    assert result.outcome == "decoded"
    assert sorted(result.record.workers_used) == list(range(16))


@pytest.mark.slow
def test_injected_failures_beyond_s_end_by_the_deadline(batch_farm, digits):
    result, elapsed = submit(batch_farm.settings, digits, ("b0", "b1"), model="lenet5",
                             codec="spline", n=16, s=2, straggle="fail:p=0.5", seed=3,
                             deadline=1.0)  # fmt: skip
    failed = sum(d["fail"] for d in result.record.slowed)
    assert failed > 2 and result.outcome == "deadline_decoded"
    assert len(result.record.workers_used) == 16 - failed
    # a failed task sends nothing, so only the deadline ends the batch: only a clock shows
    # it did not end before it, and that bound is one-sided (load only makes it later)
    assert elapsed >= 1.0, elapsed
    client = redis.Redis.from_url(batch_farm.settings.redis_url)
    assert wait_until(lambda: client.zcard(UNACKED_INDEX) == 0)  # failed tasks are acked too


@pytest.mark.slow
def test_stragglers_of_a_finished_batch_give_their_slots_back(batch_farm, digits):
    client = redis.Redis.from_url(batch_farm.settings.redis_url)
    result, _ = submit(batch_farm.settings, digits, ("b0",), model="lenet5",
                       codec="berrut", n=12, s=3, straggle="fixed:S=3,delay=20",
                       seed=4)  # fmt: skip
    assert result.outcome == "decoded"
    slowed = {d["index"] for d in result.record.slowed}
    assert len(slowed) == 3 and not slowed & set(result.record.workers_used)  # not waited for
    # the 3 stragglers are cancelled and acknowledged within a poll or two, not after their
    # 20 s sleep (a one-sided bound far below it)
    assert wait_until(lambda: client.zcard(UNACKED_INDEX) == 0 and client.hlen(UNACKED) == 0,
                      timeout=10.0)  # fmt: skip


@pytest.mark.slow
def test_refused_messages_are_logged_acknowledged_and_never_run(batch_farm):
    settings = batch_farm.settings
    client = redis.Redis.from_url(settings.redis_url)
    inbox = Keys(settings.key_prefix).inbox("refused")
    message = TaskMessage(batch="p", index=0, model="lenet5", input_key="none", offset=0,
                          nbytes=4096, dtype="float32", shape=[1, 32, 32],
                          output_key="none", inbox=inbox, ttl=60.0)  # fmt: skip
    sender = make_celery(settings)
    sender.conf.accept_content = ["json", "pickle"]
    sender.send_task(INFER_TASK, kwargs=message.to_dict(), queue="b1", serializer="pickle")
    client.lpush("b1", task_envelope("other.task", message.to_dict(), "b1"))
    client.lpush("b1", b"\x80not json")
    assert wait_until(lambda: client.llen("b1") == 0)
    time.sleep(0.3)
    assert client.llen(inbox) == 0  # nothing ran
    assert client.zcard(UNACKED_INDEX) == 0 and client.hlen(UNACKED) == 0  # all acknowledged
    log = batch_farm.workers[1].log.read_text(errors="replace")
    assert "refusing to deserialize untrusted content of type pickle" in log
    assert "unknown task 'other.task'" in log and "not JSON" in log


@pytest.mark.slow
def test_a_killed_batch_workers_unacked_task_is_not_lost(batch_farm, digits):
    settings = batch_farm.settings
    client = redis.Redis.from_url(settings.redis_url)
    victim = batch_farm.add_worker(
        WorkerOptions(
            queues=("bk",),
            concurrency=4,
            preload=("lenet5",),
            straggle="exp:shift=2,rate=100",
            engine="batch",
        )
    )
    results = []
    thread = threading.Thread(target=lambda: results.append(
        submit(settings, digits[:1], ("bk",), model="lenet5", codec="uncoded", deadline=20.0)
    ))  # fmt: skip
    thread.start()
    # the task is straggling inside the victim, recorded in kombu's unacked set
    assert wait_until(lambda: client.zcard(UNACKED_INDEX) == 1 and client.llen("bk") == 0)
    victim.kill()
    batch_farm.add_worker(
        WorkerOptions(queues=("bk",), concurrency=4, preload=("lenet5",), engine="batch")
    )
    thread.join(30)
    ((result, elapsed),) = results
    # back on the queue after the visibility timeout (3 s), through kombu's sweep, and served
    # before its 20 s deadline (the outcome says so); only a clock shows it was the
    # redelivery, and the bound is one-sided: it cannot come back sooner
    assert result.outcome == "decoded", result.record
    assert elapsed > 3.0, elapsed


@pytest.mark.slow
def test_warm_shutdown_puts_straggling_tasks_back_on_the_queue(batch_farm, digits):
    settings = batch_farm.settings
    client = redis.Redis.from_url(settings.redis_url)
    worker = batch_farm.add_worker(
        WorkerOptions(queues=("bw",), concurrency=4, preload=("lenet5",), engine="batch")
    )
    dispatcher = Dispatcher(settings, client)
    spec = BatchSpec(model="lenet5", codec="uncoded", queues=("bw",), deadline=30.0,
                     plan=(TaskFate(30.0),))  # fmt: skip
    dispatcher.dispatch(dispatcher.prepare(digits[:1], spec), Keys("be").inbox("bw"))
    assert wait_until(lambda: client.zcard(UNACKED_INDEX) == 1 and client.llen("bw") == 0)
    worker.signal_group(signal.SIGTERM)
    worker.process.wait(10)
    assert client.llen("bw") == 1 and client.zcard(UNACKED_INDEX) == 0
    assert "requeued 1 straggling task" in worker.log.read_text(errors="replace")
    client.delete("bw")


@pytest.mark.slow
def test_batch_workers_resume_after_a_redis_restart(model_cache, digits):
    base = Settings(key_prefix="ber", key_ttl=60.0, cache_dir=model_cache)
    with LocalFarm(
        [WorkerOptions(queues=("r0",), concurrency=8, preload=("lenet5",), engine="batch")],
        settings=base,
    ) as farm:
        assert farm.redis_server is not None
        farm.redis_server.restart()
        restarted = time.monotonic()
        while True:
            try:
                result, _ = submit(farm.settings, digits, ("r0",), model="lenet5",
                                   codec="berrut", n=12, s=2, deadline=2.0)  # fmt: skip
            except FarmUnavailableError:  # Redis, or workers not yet re-announced
                result = None
            if result is not None and result.outcome == "decoded":
                break
            assert time.monotonic() - restarted < 10.0, "batch worker did not recover in 10 s"


# ----- pieces, without processes ----------------------------------------------------------
def _message() -> dict[str, object]:
    return TaskMessage(batch="b", index=3, model="lenet5", input_key="k", offset=12288,
                       nbytes=4096, dtype="float32", shape=[1, 32, 32], output_key="o",
                       inbox="i", ttl=60.0).to_dict()  # fmt: skip


def test_read_envelope_takes_the_farms_messages():
    envelope = read_envelope(task_envelope(INFER_TASK, _message(), "q"), INFER_TASK)
    assert envelope.task.index == 3 and envelope.task.offset == 12288
    assert envelope.not_before == 0.0 and envelope.tag


def _edited(edit) -> bytes:
    raw = json.loads(task_envelope(INFER_TASK, _message(), "q"))
    edit(raw)
    return json.dumps(raw).encode()


def _body(raw: dict, body: object) -> None:
    raw["body"] = base64.b64encode(json.dumps(body).encode()).decode()


def _headers(**values: object):
    return lambda raw: raw["headers"].update(values)


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda raw: raw.update({"content-type": "application/x-python-serialize"}),
         "refusing to deserialize untrusted content of type pickle"),
        (lambda raw: raw.update({"content-type": "application/x-yaml"}), "type yaml"),
        (_headers(task="celery.ping"), "unknown task 'celery.ping'"),
        (_headers(compression="application/x-gzip"), "compressed messages are not supported"),
        (lambda raw: raw.update({"body": "%%%"}), "not a protocol-2 JSON body"),
        (lambda raw: _body(raw, {"task": "x"}), "not a protocol-2 JSON body"),
        (lambda raw: _body(raw, [[1], {}, {}]), "keyword arguments only"),
        (lambda raw: _body(raw, [[], {**_message(), "nbytes": 5}, {}]), "nbytes=5 does not match"),
        (_headers(expires="2001-01-01T00:00:00+00:00"), "task expired at 2001-01-01"),
        (_headers(eta="tomorrow"), "task eta 'tomorrow' is not an ISO 8601 time"),
    ],
)  # fmt: skip
def test_read_envelope_refuses_what_it_cannot_run(edit, error):
    with pytest.raises(MessageRefusedError, match=error) as info:
        read_envelope(_edited(edit), INFER_TASK)
    assert info.value.tag  # still acknowledged: the tag is known


def test_read_envelope_without_an_envelope_has_no_tag():
    with pytest.raises(MessageRefusedError, match="not a kombu message envelope") as info:
        read_envelope(b'{"body": 1}', INFER_TASK)
    assert info.value.tag is None


def test_an_eta_delays_the_task():
    soon = (datetime.now(timezone.utc) + timedelta(seconds=30)).isoformat()
    envelope = read_envelope(_edited(_headers(eta=soon)), INFER_TASK)
    assert 25 < envelope.not_before - time.time() <= 30


def test_one_forward_pass_equals_one_pass_per_input(model_cache, digits):
    worker = WorkerState(Settings(cache_dir=model_cache), WorkerOptions())
    grouped, _ = predict(worker, "lenet5", digits)
    single = np.concatenate([predict(worker, "lenet5", digits[i : i + 1])[0] for i in range(8)])
    np.testing.assert_allclose(grouped, single, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("queue", ["b0", "c0"])
def test_every_decoded_batch_records_its_critical_path(batch_farm, digits, queue):
    """Both engines stamp their notices; the stages of the policy-meeting result add up to
    the batch's end-to-end time (less the client's checks before the encode)."""
    plan = tuple(TaskFate(0.2 if j == 1 else 0.05) for j in range(12))
    result, _ = submit(batch_farm.settings, digits, (queue,), model="lenet5", codec="berrut",
                       n=12, s=2, plan=plan)  # fmt: skip
    timings = result.record.timings
    timeline = timings.timeline()
    assert result.outcome == "decoded" and timeline is not None, result.record
    assert list(timeline) == list(TIMELINE_STAGES)
    assert timeline["injected_delay"] in (0.05, 0.2)  # the 10th result's own delay
    assert 0 < timeline["compute"] < 0.5 and timeline["encode"] == timings.encode
    assert all(v > -0.002 for v in timeline.values()), timeline  # one wall clock, one machine
    total = sum(timeline.values())
    assert timings.end_to_end - 0.02 < total < timings.end_to_end + 0.002, (total, timings)
    record = BatchRecord.from_dict(result.record.to_dict())  # it survives the reply's JSON
    assert record.critical == result.record.critical and record.critical is not None
