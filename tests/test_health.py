"""/livez and /readyz: the HTTP side, and the readiness rules against a real Redis."""

from __future__ import annotations

import json
import time

import pytest
import redis

from codedfarm.errors import ConfigError
from codedfarm.local.redis_server import LocalRedis, free_port
from codedfarm.monitoring.health import (
    probe_redis,
    redis_ready,
    serve_health_and_metrics,
    worker_ready,
)
from codedfarm.settings import Settings
from live_processes import get


def test_probes_answer_from_the_readiness_check_and_metrics_stay():
    reason: list[str | None] = ["loading models"]
    port = free_port()
    httpd = serve_health_and_metrics(port, "127.0.0.1", lambda: reason[0])
    try:
        assert get(port, "/livez") == (200, "ok\n")
        assert get(port, "/readyz") == (503, "not ready: loading models\n")
        reason[0] = None
        assert get(port, "/readyz") == (200, "ok\n")
        status, text = get(port, "/metrics")
        assert status == 200 and "python_info" in text
        # a port in use is a clear error, not a traceback
        with pytest.raises(ConfigError, match=f"--metrics-port {port}"):
            serve_health_and_metrics(port, "127.0.0.1", lambda: None)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_readiness_check_that_raises_is_a_503_with_its_reason():
    def broken() -> str | None:
        raise RuntimeError("boom")

    port = free_port()
    httpd = serve_health_and_metrics(port, "127.0.0.1", broken)
    try:
        status, text = get(port, "/readyz")
        assert status == 503 and "boom" in text
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_worker_is_ready_when_its_heartbeat_is_fresh_on_every_queue(redis_server: LocalRedis):
    client = redis.Redis.from_url(redis_server.url)
    keys = ["t:live:queue:q1", "t:live:queue:q2"]
    check = worker_ready(client, keys, "w@h", liveness_s=10.0)
    assert "not serving queue(s) q1, q2" in (check() or "")
    client.zadd(keys[0], {"w@h": time.time()})
    assert "queue(s) q2 " in (check() or "")
    client.zadd(keys[1], {"w@h": time.time() - 60})  # stale: its engine stopped beating
    assert "queue(s) q2 " in (check() or "")
    client.zadd(keys[1], {"w@h": time.time(), "other@h": time.time()})
    assert check() is None


def test_readiness_says_when_redis_is_gone(redis_server: LocalRedis):
    settings = Settings(redis_url=redis_server.url)
    client = probe_redis(settings)
    check, worker = redis_ready(client), worker_ready(client, ["t:live:queue:q"], "w", 10.0)
    assert check() is None
    redis_server.stop()
    start = time.monotonic()
    assert "Redis does not answer" in (check() or "")
    assert "Redis does not answer" in (worker() or "")
    assert time.monotonic() - start < 10  # probes time out in seconds, not minutes


def test_codedfarm_probe_exits_0_when_ready_and_1_otherwise():
    from click.testing import CliRunner

    from codedfarm.cli import cli

    reason: list[str | None] = ["loading models"]
    port = free_port()
    httpd = serve_health_and_metrics(port, "127.0.0.1", lambda: reason[0])
    try:
        result = CliRunner().invoke(cli, ["probe", f"http://127.0.0.1:{port}/readyz"])
        assert result.exit_code == 1 and "not ready: loading models" in result.output
        reason[0] = None
        result = CliRunner().invoke(cli, ["probe", f"http://127.0.0.1:{port}/readyz"])
        assert result.exit_code == 0 and result.output.strip() == "ok"
        result = CliRunner(env={"CODEDFARM_PROBE_URL": f"http://127.0.0.1:{port}/livez"}).invoke(
            cli, ["probe"]
        )
        assert result.exit_code == 0
    finally:
        httpd.shutdown()
        httpd.server_close()
    result = CliRunner().invoke(cli, ["probe", f"http://127.0.0.1:{port}/readyz", "--timeout", "1"])
    assert result.exit_code == 1 and "cannot reach" in result.output


def test_relayed_records_are_bounded_and_a_bad_one_is_skipped(redis_server: LocalRedis):
    """Without a collector service the relay list keeps only the newest records, with a
    TTL; a malformed entry does not stop the others."""
    from codedfarm.coordinator.record_relay import MAX_RECORDS, RecordRelay, drain_records
    from codedfarm.monitoring.hooks import CollectorHooks
    from codedfarm.protocol import BatchRecord

    client = redis.Redis.from_url(redis_server.url)
    relay = RecordRelay("t:records", ttl=30)
    record = BatchRecord(batch="b", model="m", codec="spline", k=8, n=24, s=4, wait_for=20,
                         outcome="decoded")  # fmt: skip
    for _ in range(MAX_RECORDS + 10):
        relay.batch_finished(record)
    relay.fidelity("spline", "m", 0.5)
    with client.pipeline() as pipe:
        relay.flush_into(pipe)
        pipe.execute()
    assert client.llen("t:records") == MAX_RECORDS and 0 < client.ttl("t:records") <= 30
    client.delete("t:records")
    client.rpush("t:records", b"not json", json.dumps({"record": record.to_dict()}))

    class Seen(CollectorHooks):
        def __init__(self) -> None:
            self.records: list[BatchRecord] = []

        def batch_finished(self, record: BatchRecord) -> None:
            self.records.append(record)

    seen = Seen()
    assert drain_records(client, "t:records", seen) == 2
    assert seen.records == [record] and client.llen("t:records") == 0
