"""Redis high availability: the whole farm (clients, both worker engines, a collector service)
on a Sentinel-managed primary, under load while the primary is killed. New batches decode
after the failover, and no batch is lost (those in flight are sent again)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from codedfarm import BatchSpec, FarmClient, FarmUnavailableError
from codedfarm.local import LocalFarm
from codedfarm.local.sentinel import LocalSentinelRedis
from codedfarm.models.digits import load_digits_split
from codedfarm.redis_conn import celery_broker, parse_sentinel_url
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions


def test_sentinel_urls_parse_for_the_farm_and_for_celery():
    url = "redis+sentinel://u:p%40ss@10.0.0.1:26379,10.0.0.2:26380/mymaster/2?sentinel_password=s"
    parsed = parse_sentinel_url(url)
    assert parsed is not None
    assert parsed.hosts == (("10.0.0.1", 26379), ("10.0.0.2", 26380))
    assert (parsed.service, parsed.db, parsed.username, parsed.password) == ("mymaster", 2, "u",
                                                                             "p@ss")  # fmt: skip
    assert parsed.sentinel_password == "s"
    broker, options = celery_broker(url)
    assert broker == ("sentinel://u:p@ss@10.0.0.1:26379/2;sentinel://u:p@ss@10.0.0.2:26380/2")
    assert options == {"master_name": "mymaster", "sentinel_kwargs": {"password": "s"}}
    assert parse_sentinel_url("redis://h:1/0") is None
    assert celery_broker("redis://h:1/0") == ("redis://h:1/0", {})
    from codedfarm.errors import ConfigError

    for bad in ("sentinel://h:1", "sentinel://h/svc", "sentinel://h:1/svc/x"):
        with pytest.raises(ConfigError, match="sentinel"):
            parse_sentinel_url(bad)


@pytest.mark.slow
def test_a_failover_under_load_loses_no_batch(model_cache, capsys):
    digits = load_digits_split().test_x[:8]
    with LocalSentinelRedis() as group:
        base = Settings(key_prefix="ha", key_ttl=60.0, deadline=15.0, cache_dir=model_cache)
        workers = [
            WorkerOptions(queues=("s0",), engine="batch", concurrency=32, preload=("lenet5",)),
            WorkerOptions(queues=("s1",), concurrency=8, preload=("lenet5",)),
        ]
        with LocalFarm(workers, redis_url=group.url, settings=base) as farm:
            farm.start_collector("ha")
            outcomes: list[tuple[float, str, int]] = []
            errors: list[str] = []
            stop = threading.Event()

            def load(queue: str, collector: str) -> None:
                spec = BatchSpec(model="lenet5", codec="berrut", n=12, s=2, queues=(queue,))
                with FarmClient(farm.settings, collector=collector, retries=3) as client:
                    while not stop.is_set():
                        sent = time.monotonic()
                        try:
                            result = client.submit(digits, spec)
                        except FarmUnavailableError as exc:
                            errors.append(str(exc))
                            continue
                        outcomes.append((sent, result.outcome, result.record.retries))
                        time.sleep(0.05)

            threads = [threading.Thread(target=load, args=args)
                       for args in (("s0", ""), ("s1", ""), ("s0", "ha"))]  # fmt: skip
            for thread in threads:
                thread.start()
            time.sleep(3.0)
            killed = time.monotonic()
            group.kill_primary()
            while not any(sent > killed + 0.5 and outcome == "decoded"
                          for sent, outcome, _ in list(outcomes)):  # fmt: skip
                assert time.monotonic() - killed < 60, "no batch decoded after the failover"
                time.sleep(0.1)
            recovered = time.monotonic() - killed
            time.sleep(3.0)  # more load on the new primary
            stop.set()
            for thread in threads:
                thread.join(60)
    bad = [o for o in outcomes if o[1] != "decoded"]
    retried = sum(1 for o in outcomes if o[2])
    with capsys.disabled():
        print("\nsentinel failover: " + json.dumps({
            "batches": len(outcomes), "not_decoded": len(bad), "retried": retried,
            "refused": len(errors), "first_decode_after_kill_s": round(recovered, 2)}))  # fmt: skip
    assert len(outcomes) > 30
    assert bad == [] and errors == [], (bad, errors[:3])
