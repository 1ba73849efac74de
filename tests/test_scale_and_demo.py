"""`codedfarm scale` against real processes, and a short `codedfarm demo`."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.local.scaling import LocalWorkers
from codedfarm.worker.celery_engine import make_celery


@pytest.mark.slow
def test_scale_grows_and_shrinks_local_workers(settings, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(settings.cache_dir))
    run_dir = tmp_path / "run"
    base = ["--redis-url", settings.redis_url, "scale", "--run-dir", str(run_dir),
            "--queues", "scaled"]  # fmt: skip
    runner = CliRunner()
    try:
        result = runner.invoke(cli, [*base, "--workers", "2"])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == "local worker processes: 2 (started 2, stopped 0)"
        app = make_celery(settings)
        replies: list[object] = []
        end = time.monotonic() + 15
        while len(replies) < 2 and time.monotonic() < end:  # both answer Celery's ping
            replies = app.control.ping(timeout=1.0)
        assert len(replies) == 2, replies
        result = runner.invoke(cli, [*base, "--workers", "1", "--now"])
        assert result.output.strip() == "local worker processes: 1 (started 0, stopped 1)"
        assert len(LocalWorkers(settings, run_dir).list()) == 1
        result = runner.invoke(cli, [*base, "--workers", "1"])
        assert result.output.strip() == "local worker processes: 1 (started 0, stopped 0)"
        result = runner.invoke(cli, [*base, "--workers", "2", "--engine", "celery"])
        assert result.output.strip() == "local worker processes: 2 (started 1, stopped 0)"
        engines = sorted(w.options.engine for w in LocalWorkers(settings, run_dir).list())
        assert engines == ["batch", "celery"]
    finally:
        result = runner.invoke(cli, [*base, "--workers", "0", "--now"])
    assert result.output.strip().startswith("local worker processes: 0")
    assert LocalWorkers(settings, run_dir).list() == []


def test_scale_needs_a_count_and_reachable_redis():
    result = CliRunner().invoke(
        cli, ["--redis-url", "redis://127.0.0.1:1", "scale", "--workers", "1"]
    )
    assert result.exit_code == 3
    assert result.output.startswith("error: cannot reach Redis at redis://127.0.0.1:1")
    result = CliRunner().invoke(cli, ["scale"])
    assert result.exit_code == 2 and "Missing option '--workers'" in result.output


@pytest.mark.slow
def test_demo_runs_end_to_end_and_cleans_up(model_cache):
    env = {k: v for k, v in os.environ.items() if k != "CODEDFARM_REDIS_URL"}
    env["CODEDFARM_CACHE_DIR"] = str(model_cache)
    proc = subprocess.run(
        [sys.executable, "-m", "codedfarm", "demo", "-k", "4", "-n", "8", "-s", "2",
         "--batches", "2", "--straggle", "fixed:S=2,delay=1.0"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("codec"))
    rows = {line.split()[0]: line.split() for line in lines[header + 1 : header + 5]}
    assert set(rows) == {"uncoded", "replication", "berrut", "spline"}
    assert float(rows["uncoded"][2]) >= 1000  # p50 ms: uncoded waits for its stragglers
    assert float(rows["spline"][2]) < 1000
    assert rows["uncoded"][4] == "2/2"
    assert "shutting down" in proc.stdout
    pattern = "codedfarm worker.*-Q demo"
    leftover = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
    assert leftover.stdout == ""  # no demo worker outlives the demo


def test_demo_rejects_bad_options():
    result = CliRunner().invoke(cli, ["demo", "-n", "8", "-s", "8"])
    assert result.exit_code == 2
    assert result.output.startswith("error: need 1 <= k <= n and 0 <= s < n")
    result = CliRunner().invoke(cli, ["demo", "--straggle", "zzz"])
    assert result.exit_code == 2 and "unknown straggler model 'zzz'" in result.output


def test_scale_compose_runs_docker_compose_and_reports_replicas(tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    fake = tmp_path / "docker"
    fake.write_text(
        f'#!/bin/sh\necho "$@" >> {calls}\ncase "$*" in *" ps "*) printf "c1\\nc2\\nc3\\n";; esac\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    result = CliRunner().invoke(cli, ["scale", "--workers", "3", "--compose",
                                      "--compose-file", "compose.yaml"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "compose worker replicas: 3"
    up, ps = calls.read_text().splitlines()
    assert up == "compose -f compose.yaml up -d --no-recreate --no-build --scale worker=3 worker"
    assert ps == "compose -f compose.yaml ps -q worker"


def test_scale_compose_failure_is_one_clear_line(tmp_path, monkeypatch):
    fake = tmp_path / "docker"
    fake.write_text("#!/bin/sh\necho 'Cannot connect to the Docker daemon' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    result = CliRunner().invoke(cli, ["scale", "--workers", "2", "--compose"])
    assert result.exit_code == 2
    assert result.output.startswith("error: docker compose failed")
    assert "Cannot connect to the Docker daemon" in result.output
