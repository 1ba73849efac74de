"""``codedfarm shuffle``: bad input exits 2 with one line, a run reports verified epochs
beside the theory, a killed worker fails the run in bounded time (exit 3)."""

from __future__ import annotations

import functools
import json
import time

import numpy as np
import pytest
from click.testing import CliRunner

from codedfarm.cli import cli


@pytest.fixture
def run(monkeypatch):
    for name in ("CODEDFARM_REDIS_URL", "CODEDFARM_SHUFFLE_WORKERS", "CODEDFARM_SHUFFLE_STORAGE"):
        monkeypatch.delenv(name, raising=False)

    def invoke(*args: str):
        return CliRunner().invoke(cli, ["shuffle", *args])

    return invoke


def _one_line_error(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines
    assert "Traceback" not in result.output


@pytest.mark.parametrize(("args", "words"), [
    (["--workers", "4", "--storage", "0.2"], "--storage must be between 1/n = 0.25 and 1"),
    (["--workers", "4", "--storage", "1.5"], "--storage must be between 1/n = 0.25 and 1"),
    (["--workers", "1", "--storage", "1"], "--workers must be an integer >= 2"),
    (["--workers", "16", "--storage", "0.5"], "C(15,7) = 6435 chunks"),
    (["--epochs", "0"], "--epochs must be an integer >= 1"),
])  # fmt: skip
def test_bad_options_exit_2_with_one_line(run, args, words):
    _one_line_error(run(*args), words)


def _npy(tmp_path, name, array, allow_pickle=False):
    path = tmp_path / name
    np.save(path, array, allow_pickle=allow_pickle)
    return str(path)


def test_data_files_whose_rows_cannot_be_split_exit_2(run, tmp_path):
    few = _npy(tmp_path, "few.npy", np.zeros((3, 5)))
    _one_line_error(run("--workers", "4", "--data", few), "has 3 rows, fewer than the 4 workers")
    scalar = _npy(tmp_path, "scalar.npy", np.array(2.0))
    _one_line_error(run("--data", scalar), "0-d array")
    text = _npy(tmp_path, "text.npy", np.array([["ab"]] * 8))
    _one_line_error(run("--data", text), "must be numeric")
    objects = _npy(tmp_path, "objects.npy", np.array([{}, {}], dtype=object), allow_pickle=True)
    _one_line_error(run("--data", objects), "cannot read")
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not an array")
    _one_line_error(run("--data", str(junk)), "cannot read")
    _one_line_error(run("--train", "--data", few), "give no --data with --train")


def test_a_run_on_a_private_redis_reports_verified_epochs(run, tmp_path):
    data = _npy(tmp_path, "rows.npy", np.random.default_rng(0).integers(0, 9, (41, 6)))
    result = run("--workers", "4", "--storage", "0.5", "--epochs", "2", "--data", data, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["q"] == 40 and report["dropped_rows"] == 1 and report["ok"]
    for epoch in report["epochs"]:
        assert epoch["verified"] == [True] * 4
        assert epoch["payload_bytes"] == epoch["broadcast_bytes"] == epoch["theory_bytes"] > 0
        assert epoch["overhead_bytes"] > 0 and epoch["seconds"] > 0


def test_the_table_uses_the_given_redis(run, redis_server, monkeypatch):
    monkeypatch.setenv("CODEDFARM_REDIS_URL", redis_server.url)
    result = run("--workers", "2", "--storage", "0.5", "--epochs", "1", "--scheme", "uncoded")
    assert result.exit_code == 0, result.output
    header, first = result.stdout.splitlines()[1:3]
    assert header.split()[:3] == ["epoch", "broadcast", "B"] and "verified" in header
    assert first.split()[0] == "1" and first.split()[-1] == "2/2"


def test_a_killed_worker_fails_the_command_with_a_clear_error(run, redis_server, monkeypatch):
    import codedfarm.local.shuffle as local

    monkeypatch.setenv("CODEDFARM_REDIS_URL", redis_server.url)
    killing = functools.partial(local.shuffle_locally, kill_at=(1, 2))
    monkeypatch.setattr(local, "shuffle_locally", killing)
    started = time.monotonic()
    result = run("--workers", "3", "--storage", "0.5", "--epochs", "3", "--scheme", "lee")
    assert time.monotonic() - started < 30
    assert result.exit_code == 3, result.output
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("error: shuffle epoch 2 failed: worker 1 died (exit code -9)"), line
