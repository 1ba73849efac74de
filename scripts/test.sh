#!/usr/bin/env bash
# The project's test command. Installs what it needs (a .venv with the package and its dev
# tools; Debian's prometheus for promtool and the monitoring tests when run as root), then
# runs ruff, mypy, the deployment-file checks and pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
quiet_pip() { grep -v -E "is ignored: it is neither a file nor a directory" || true; }
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | quiet_pip
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing Debian's prometheus (promtool and the server for the monitoring tests)"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus >/dev/null
  else
    echo "== prometheus/promtool missing and not root: deployment checks and monitoring tests will skip"
  fi
fi
echo "== ruff"; .venv/bin/ruff check src tests benchmarks
.venv/bin/ruff format --check src tests benchmarks
echo "== mypy"; .venv/bin/mypy
if command -v promtool >/dev/null 2>&1; then
  echo "== deployment files"; bash scripts/check_deploy.sh
fi
echo "== pytest"; .venv/bin/python -m pytest "$@"
