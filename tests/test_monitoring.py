"""Monitoring on a live farm: a real Prometheus scrapes the collector and the workers, and the
dashboard and alert queries name only metrics the code exports."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import redis
import yaml

from codedfarm.coordinator import FarmClient
from codedfarm.coordinator.dispatch import BatchSpec
from codedfarm.errors import InputWarning
from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.protocol import Keys
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions
from live_processes import get, start_collector, start_prometheus

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy/grafana/dashboards/codedfarm.json"
DATASOURCE = ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml"
ALERTS = ROOT / "deploy/prometheus/alerts.yml"
METRIC = re.compile(r"\bcodedfarm_[a-z0-9_]+")


def dashboard_queries() -> list[str]:
    board = json.loads(DASHBOARD.read_text())
    panels = [p for row in board["panels"] for p in [row, *row.get("panels", [])]]
    return [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]


def test_dashboard_parses_and_picks_its_datasource_from_a_variable():
    """Every panel and query uses ${datasource}, a Prometheus data source variable whose
    default is the provisioned uid (compose), so that the dashboard also works where the
    data source has another uid (kube-prometheus-stack's Grafana)."""
    board = json.loads(DASHBOARD.read_text())
    provisioned = yaml.safe_load(DATASOURCE.read_text())["datasources"]
    uid = provisioned[0]["uid"]
    assert uid == "codedfarm-prometheus"
    variables = {v["name"]: v for v in board["templating"]["list"]}
    source = variables["datasource"]
    assert (source["type"], source["query"], source["current"]["value"]) == (
        "datasource", "prometheus", uid)  # fmt: skip
    assert uid not in json.dumps(board).replace(json.dumps(source), "")  # nowhere else
    panels = [p for row in board["panels"] for p in [row, *row.get("panels", [])]]
    targets = [t for p in panels for t in p.get("targets", [])]
    assert len(dashboard_queries()) >= 10
    others = [v for name, v in variables.items() if name != "datasource"]
    for thing in [p for p in panels if p.get("type") != "row"] + targets + others:
        assert thing["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, thing.get(
            "title", thing)  # fmt: skip


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"]]


def slug(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def test_every_alert_links_its_runbook_in_docs_operations():
    operations = (ROOT / "docs/operations.md").read_text()
    headings = {slug(h): h for h in re.findall(r"^#{2,4} (.+)$", operations, re.M)}
    rules = alert_rules()
    assert len(rules) >= 9
    for rule in rules:
        url = rule["annotations"]["runbook_url"]
        path, _, anchor = url.partition("#")
        assert path == "docs/operations.md", rule["alert"]
        assert anchor == slug(rule["alert"]) and anchor in headings, (rule["alert"], url)
        # its runbook says what it means, what to check first and what fixes it
        section = operations.split(f"### {headings[anchor]}\n", 1)[1].split("\n### ", 1)[0]
        for part in ("**Means:**", "**First checks:**", "**Fixes:**"):
            assert part in section, (rule["alert"], part)
    for part in ("## Upgrades and rollbacks", "## Scaling", "## Failure modes", "## Redis memory"):
        assert part in operations


def test_refused_messages_have_a_panel_and_an_alert():
    metric = "codedfarm_messages_refused_total"
    assert any(metric in q for q in dashboard_queries())
    (rule,) = [r for r in alert_rules() if metric in r["expr"]]
    assert "by (reason)" in rule["expr"]


def test_workers_decreased_watches_only_targets_that_vanish():
    """Under Kubernetes a scaled-down worker's pod vanishes on purpose: the alert is
    limited to the targets the compose Prometheus finds by DNS (and marks so)."""
    (rule,) = [r for r in alert_rules() if r["alert"] == "WorkersDecreased"]
    selectors = re.findall(r"up\{([^}]*)\}", rule["expr"])
    assert selectors and all('discovery="dns"' in s for s in selectors)
    config = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())
    (workers,) = [j for j in config["scrape_configs"] if j["job_name"] == "workers"]
    assert "dns_sd_configs" in workers
    assert {"target_label": "discovery", "replacement": "dns"} in workers["relabel_configs"]


def http_get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.read().decode()


def exported_names(text: str) -> set[str]:
    return {line.split("{")[0].split(" ")[0] for line in text.splitlines()
            if line and not line.startswith("#")}  # fmt: skip


@pytest.fixture(scope="module")
def monitored(model_cache: Path):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("no prometheus binary (scripts/test.sh installs Debian's prometheus)")
    ports = {"w1": free_port(), "w2": free_port(), "collector": free_port(), "prom": free_port()}
    base = Settings(key_prefix="mon", key_ttl=60.0, cache_dir=model_cache)
    workers = [
        WorkerOptions(
            queues=("m1",),
            engine="celery",
            concurrency=6,
            preload=("lenet5",),
            metrics_port=ports["w1"],
        ),
        # the batch engine exports the same worker metrics
        WorkerOptions(
            queues=("m2",),
            concurrency=6,
            preload=("lenet5",),
            metrics_port=ports["w2"],
            engine="batch",
        ),
    ]
    tmp = Path(tempfile.mkdtemp(prefix="codedfarm-prom-"))
    with LocalFarm(workers, settings=base) as farm:
        log = open(tmp / "collector.log", "wb")  # noqa: SIM115
        collector = start_collector(farm, "mon", ports["collector"], log)
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": "collector",
                 "static_configs": [{"targets": [f"127.0.0.1:{ports['collector']}"]}]},
                {"job_name": "workers", "static_configs": [{"targets": [
                    f"127.0.0.1:{ports['w1']}", f"127.0.0.1:{ports['w2']}"]}]},
            ],
        }  # fmt: skip
        prom = start_prometheus(prometheus, tmp, config, ports["prom"])
        try:
            end = time.monotonic() + 30
            while b"listening" not in (tmp / "collector.log").read_bytes():
                assert time.monotonic() < end and collector.poll() is None, "collector failed"
                time.sleep(0.1)
            yield farm, ports
        finally:
            prom.terminate()
            collector.terminate()
            prom.wait(10)
            collector.wait(10)
            log.close()
            shutil.rmtree(tmp, ignore_errors=True)


def query(port: int, expr: str) -> list[dict]:
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    body = json.loads(http_get(url))
    assert body["status"] == "success", body
    return body["data"]["result"]


def wait_for(port: int, expr: str, expected: float, timeout: float = 30.0) -> list[dict]:
    end = time.monotonic() + timeout
    result: list[dict] = []
    while time.monotonic() < end:
        try:
            result = query(port, expr)
        except OSError:
            result = []
        if result and sum(float(r["value"][1]) for r in result) == expected:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expr}: expected {expected}, Prometheus has {result}")


@pytest.mark.slow
def test_prometheus_sees_batches_outcomes_and_workers(monitored, digits_batch):
    farm, ports = monitored
    settings = replace(farm.settings, fidelity_sample=1.0)
    with FarmClient(settings, collector="mon") as client:
        spec = BatchSpec(model="lenet5", codec="berrut", n=12, s=2, queues=("m1", "m2"),
                         straggle="fixed:S=2,delay=0.5")  # fmt: skip
        outcomes = [client.submit(digits_batch, spec).outcome for _ in range(4)]
        timeout_spec = BatchSpec(model="lenet5", codec="mds", n=12, s=2, queues=("m1", "m2"),
                                 straggle="fixed:S=8,delay=1.5", deadline=0.8)  # fmt: skip
        with pytest.warns(InputWarning, match="model lenet5 is not declared a polynomial"):
            outcomes.append(client.submit(digits_batch, timeout_spec).outcome)
    assert outcomes == ["decoded"] * 4 + ["timeout"]
    # a malformed inbox message: dropped and counted
    redis.Redis.from_url(settings.redis_url).rpush(Keys("mon").inbox("mon"), b"{not json")
    port = ports["prom"]
    wait_for(port, 'sum(codedfarm_batches_total{outcome="decoded"})', 4)
    wait_for(port, 'sum(codedfarm_batches_total{outcome="timeout"})', 1)
    wait_for(port, "sum(codedfarm_batch_latency_seconds_count)", 5)
    wait_for(port, 'sum(codedfarm_batch_latency_seconds_bucket{le="+Inf"})', 5)
    wait_for(port, 'codedfarm_results_dropped_total{reason="corrupt"}', 1)
    wait_for(port, 'count(up{job="workers"} == 1)', 2)
    wait_for(port, "sum(codedfarm_decode_mse_count)", 4, timeout=40)
    # every decoded batch used 10 of its 12 results
    wait_for(port, "sum(codedfarm_batch_results_used_sum)", 40)
    # the workers counted the tasks they ran (12 + 8 reference tasks per sampled batch, and
    # the timed-out batch's tasks), from all their pool processes
    result = query(port, "sum(codedfarm_worker_tasks_total)")
    assert float(result[0]["value"][1]) >= 4 * 10 + 4
    for worker in ("w1", "w2"):  # half of every batch's tasks went to each worker
        expr = f'sum(codedfarm_worker_tasks_total{{instance="127.0.0.1:{ports[worker]}"}})'
        assert float(query(port, expr)[0]["value"][1]) >= 4 * 5, worker
    result = query(port, "sum(codedfarm_worker_injected_delay_seconds_count)")
    assert float(result[0]["value"][1]) >= 40


@pytest.mark.slow
def test_dashboard_and_alerts_query_only_exported_metrics(monitored, digits_batch):
    farm, ports = monitored
    liar = farm.add_worker(WorkerOptions(queues=("m3",), corrupt="large:p=1", preload=("lenet5",)))
    try:
        with FarmClient(replace(farm.settings, fidelity_sample=1.0), collector="mon") as client:
            client.submit(digits_batch, BatchSpec(model="lenet5", codec="spline", n=12, s=2,
                                                  queues=("m1", "m2")))  # fmt: skip
            # two of twelve results from a corrupting worker: the rejected-results counter
            record = client.submit(digits_batch, BatchSpec(
                model="lenet5", codec="berrut:byzantine=2", n=12, s=0,
                queues=("m1", "m2", "m1", "m2", "m1", "m3"))).record  # fmt: skip
            assert sorted(d["index"] for d in record.rejected) == [5, 11]
    finally:
        liar.kill()
        farm.workers.remove(liar)
    time.sleep(2.5)  # the collector reads queue depths every 2 s
    names: set[str] = set()
    for key in ("collector", "w1", "w2"):
        names |= exported_names(http_get(f"http://127.0.0.1:{ports[key]}/metrics"))
    names |= exported_names(server_exposition())  # tests/test_server.py scrapes a live one
    used = {m for q in dashboard_queries() for m in METRIC.findall(q)}
    alert_exprs = [r["expr"] for g in yaml.safe_load(ALERTS.read_text())["groups"]
                   for r in g["rules"]]  # fmt: skip
    used |= {m for q in alert_exprs for m in METRIC.findall(q)}
    assert used, "no codedfarm metric in the dashboard?"
    assert used <= names, sorted(used - names)


def server_exposition() -> str:
    """What `codedfarm serve` exports once every metric has a labelled sample."""
    from codedfarm.monitoring.server_metrics import ServerMetrics

    metrics = ServerMetrics()
    metrics.latency.labels("lenet5", "spline", "ok").observe(0.06)
    metrics.group("lenet5", 8, 0.004)
    metrics.in_flight.labels("lenet5").set(0)
    metrics.rejected.labels("lenet5", "queue_full").inc()
    metrics.rows_answered.labels("lenet5", "own").inc()
    return metrics.exposition().decode()


@pytest.fixture(scope="module")
def digits_batch() -> np.ndarray:
    from codedfarm.models.digits import load_digits_split

    return load_digits_split().test_x[:6]


@pytest.mark.slow
def test_workers_and_the_collector_answer_their_probes(monitored):
    """/livez and /readyz on the metrics port of both engines and of the collector service;
    /metrics is still there."""
    _, ports = monitored
    for name in ("w1", "w2", "collector"):
        assert get(ports[name], "/livez") == (200, "ok\n")
        assert get(ports[name], "/readyz") == (200, "ok\n")
        status, text = get(ports[name], "/metrics")
        assert status == 200 and "# TYPE" in text
        component = "collector" if name == "collector" else "worker"
        assert re.search(rf'codedfarm_build_info{{.*component="{component}".*}} 1.0', text), name


@pytest.mark.slow
def test_worker_metrics_carry_the_engine(monitored, digits_batch):
    farm, ports = monitored
    with FarmClient(farm.settings) as client:
        for queue in ("m1", "m2"):
            spec = BatchSpec(model="lenet5", codec="uncoded", queues=(queue,))
            assert client.submit(digits_batch[:4], spec).outcome == "decoded"
    for name, engine in (("w1", "celery"), ("w2", "batch")):
        _, text = get(ports[name], "/metrics")
        assert re.search(rf'codedfarm_worker_tasks_total{{.*engine="{engine}".*status="ok"}}',
                         text), name  # fmt: skip
        assert f'codedfarm_worker_task_work_seconds_count{{engine="{engine}"' in text, name


@pytest.mark.slow
def test_in_process_batches_reach_the_collector_services_metrics(monitored, digits_batch):
    """A client without --collector decodes its own batches; they are counted on the
    collector service's /metrics all the same (relayed through Redis)."""
    farm, ports = monitored

    def decoded() -> float:
        _, text = get(ports["collector"], "/metrics")
        found = re.search(r'codedfarm_batches_total{codec="lagrange",model="lenet5",'
                          r'outcome="decoded"} ([0-9.]+)', text)  # fmt: skip
        return float(found.group(1)) if found else 0.0

    before = decoded()
    spec = BatchSpec(model="lenet5", codec="lagrange", n=12, s=2, queues=("m2",))
    with (
        FarmClient(farm.settings) as client,  # in-process: no collector service involved
        pytest.warns(InputWarning, match="model lenet5 is not declared a polynomial"),
    ):
        outcomes = [client.submit(digits_batch[:4], spec).outcome for _ in range(3)]
    assert outcomes == ["decoded"] * 3
    end = time.monotonic() + 10
    while decoded() < before + 3 and time.monotonic() < end:
        time.sleep(0.2)
    assert decoded() == before + 3
