"""The alerts on a real Prometheus scraping real workers and a real collector, with worker
discovery that drops a stopped replica, as compose's DNS does (a file_sd file stands in
for DNS: the test removes a stopped worker's target from it). Each alert's expression, read
from deploy/prometheus/alerts.yml, is queried; the `for:` durations are checked by
`promtool test rules` (deploy/prometheus/alerts_test.yml)."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions
from live_processes import start_collector, start_prometheus

pytestmark = pytest.mark.slow  # live farm and Prometheus

ROOT = Path(__file__).resolve().parents[1]
ALERTS = {r["alert"]: r["expr"] for r in yaml.safe_load(
    (ROOT / "deploy/prometheus/alerts.yml").read_text())["groups"][0]["rules"]}  # fmt: skip


def query(port: int, expr: str) -> list[dict[str, Any]]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def eventually(port: int, expr: str, firing: bool, timeout: float = 45.0) -> None:
    end = time.monotonic() + timeout
    result: list[dict[str, Any]] = []
    while time.monotonic() < end:
        try:
            result = query(port, expr)
        except OSError:
            result = []
        if bool(result) == firing:
            return
        time.sleep(0.5)
    raise AssertionError(f"{expr}: expected {'a result' if firing else 'none'}, got {result}")


@pytest.fixture
def watched(model_cache: Path) -> Iterator[tuple[LocalFarm, dict[str, int], Path, Any]]:
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("no prometheus binary (scripts/test.sh installs Debian's prometheus)")
    ports = {"w1": free_port(), "w2": free_port(), "collector": free_port(), "prom": free_port()}
    workers = [WorkerOptions(queues=("al",), concurrency=2, metrics_port=ports[w])
               for w in ("w1", "w2")]  # fmt: skip
    tmp = Path(tempfile.mkdtemp(prefix="codedfarm-alerts-"))
    targets = tmp / "workers.json"
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{ports['w1']}",
                                                f"127.0.0.1:{ports['w2']}"]}]))  # fmt: skip
    shutil.copy(ROOT / "deploy/prometheus/alerts.yml", tmp / "alerts.yml")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": ["alerts.yml"],
        "scrape_configs": [
            {"job_name": "collector",
             "static_configs": [{"targets": [f"127.0.0.1:{ports['collector']}"]}]},
            # marked as compose's Prometheus marks its DNS-found workers (prometheus.yml)
            {"job_name": "workers",
             "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "1s"}],
             "relabel_configs": [{"target_label": "discovery", "replacement": "dns"}]},
        ],
    }  # fmt: skip
    with LocalFarm(workers, settings=Settings(key_prefix="al", cache_dir=model_cache)) as farm:
        log = open(tmp / "collector.log", "wb")  # noqa: SIM115
        collector = start_collector(farm, "al", ports["collector"], log)
        prom = start_prometheus(prometheus, tmp, config, ports["prom"])
        try:
            yield farm, ports, targets, collector
        finally:
            prom.terminate()
            if collector.poll() is None:
                collector.terminate()
            prom.wait(10)
            collector.wait(10)
            log.close()
            shutil.rmtree(tmp, ignore_errors=True)


# Prometheus must see each alert's series over its scrape and rule intervals (several waits of
# up to 45 s each, after a live farm starts): on a loaded 2-core machine this passed 120 s
@pytest.mark.timeout(360)
def test_alerts_fire_when_workers_vanish_and_the_collector_stops(watched):
    farm, ports, targets, collector = watched
    prom = ports["prom"]
    # both workers seen at a step of the alert's subquery (15 s), as in any running farm
    eventually(prom, 'max_over_time(count(up{job="workers"} == 1)[10m:15s]) == 2', True)
    eventually(prom, 'up{job="collector"} == 1', True)
    for quiet in ("WorkersDecreased", "NoWorkerUp", "CollectorDown", "WorkerDown"):
        assert query(prom, ALERTS[quiet]) == [], quiet
    # a replica stops and vanishes from discovery, as with compose's DNS (which drops a
    # stopped container's record: Prometheus never scrapes it as down)
    targets.write_text(json.dumps([{"targets": [f"127.0.0.1:{ports['w1']}"]}]))
    eventually(prom, 'count(up{job="workers"}) == 1', True)
    farm.workers[1].stop()
    eventually(prom, ALERTS["WorkersDecreased"], True)
    assert query(prom, ALERTS["WorkerDown"]) == []  # the old alert stays blind to it
    # the collector stops (a static target: up goes to 0)
    collector.terminate()
    collector.wait(10)
    eventually(prom, ALERTS["CollectorDown"], True)
    # the last worker goes too
    farm.workers[0].stop()
    targets.write_text(json.dumps([{"targets": []}]))
    eventually(prom, ALERTS["NoWorkerUp"], True)
