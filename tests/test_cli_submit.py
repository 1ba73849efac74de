"""`codedfarm submit`: bad input exits 2 with one line, no traceback, nothing left in Redis."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import redis
from click.testing import CliRunner

from codedfarm.cli import cli


@pytest.fixture
def inputs(tmp_path):
    good = np.random.default_rng(0).random((8, 1, 32, 32)).astype(np.float32)
    files = {"good": tmp_path / "good.npy"}
    np.save(files["good"], good)
    nan = good.copy()
    nan[2, 0, 3, 3] = np.nan
    for name, array in {
        "nan": nan,
        "shape": good[:, 0, :28, :28],
        "strings": np.array(["a", "b"]),
        "ints": (good * 10).astype(np.int64),
        "empty": good[:0],
    }.items():
        files[name] = tmp_path / f"{name}.npy"
        np.save(files[name], array)
    files["objects"] = tmp_path / "objects.npy"
    np.save(files["objects"], np.array([{"a": 1}], dtype=object), allow_pickle=True)
    files["garbage"] = tmp_path / "garbage.npy"
    files["garbage"].write_bytes(b"not a numpy file at all")
    files["text"] = tmp_path / "batch.txt"
    files["text"].write_text("1 2 3")
    files["npz"] = tmp_path / "batch.npy"
    np.savez(tmp_path / "batch.npz", good)
    (tmp_path / "batch.npz").rename(files["npz"])
    return files


CASES = [
    ("text", [], "batch.txt: expected a .npy file"),
    (
        "garbage",
        [],
        "garbage.npy: not a .npy array file (no .npy header); save the batch with numpy.save",
    ),
    (
        "objects",
        [],
        "objects.npy: holds Python objects (a pickled object array), which the farm never loads",
    ),
    ("ints", [], "batch of dtype int64: the farm serves float32 inputs; convert it"),
    ("npz", [], "batch.npy: expected one .npy array, got an .npz archive"),
    ("missing", [], "missing.npy: no such file"),
    ("shape", [], "model lenet5 takes a batch of shape (K, 1, 32, 32), got (8, 28, 28)"),
    ("nan", [], "batch contains 1 NaN/Inf values"),
    ("strings", [], "batch must be numeric, got dtype <U1"),
    ("empty", [], "batch is empty (K = 0)"),
    ("good", ["-n", "0"], "n must be an integer in [1, 1024], got 0"),
    ("good", ["-n", "5000"], "n must be an integer in [1, 1024], got 5000"),
    ("good", ["-n", "4"], "spline: n must be >= k (one coded input per worker), got k=8, n=4"),
    ("good", ["-s", "-1"], "s (stragglers to tolerate) must be an integer >= 0, got -1"),
    ("good", ["-n", "12", "-s", "12"], "s must be < n (some workers must answer), got n=12, s=12"),
    ("good", ["--codec", "turbo"], "unknown codec 'turbo' in spec 'turbo'"),
    ("good", ["--model", "resnet"], "unknown model 'resnet'; available: lenet5, repvgg"),
    (
        "good",
        ["--codec", "mds", "-n", "10", "-s", "4"],
        "mds: S=4 is too large for this exact code: it needs 8 of n=10 results, but n - S = 6",
    ),
    ("good", ["--codec", "uncoded", "-s", "1"], "uncoded: S=1 is too large for this exact code"),
    ("good", ["--straggle", "slow:x=1"], "unknown straggler model 'slow' in 'slow:x=1'"),
    ("good", ["--straggle", "fixed:S=2"], "straggler model 'fixed' needs S, delay; missing delay"),
    ("good", ["--deadline", "-1"], "deadline must be in (0, 60) seconds"),
    ("good", ["-n", "24", "--wait", "30"], "wait_for must be in [1, 24]"),
    ("good", ["-Q", "a:b"], "queue names must be non-empty without ':'"),
]


@pytest.mark.parametrize(("name", "args", "message"), CASES)
def test_bad_input_exits_2_with_one_line_and_leaves_nothing(
    inputs, settings, redis_client, name, args, message, monkeypatch, tmp_path
):
    monkeypatch.setenv("CODEDFARM_KEY_TTL", "60")
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(settings.cache_dir))
    path = inputs.get(name, tmp_path / "missing.npy")
    argv = ["--redis-url", settings.redis_url, "submit", str(path), *args]
    if "--model" not in args:
        argv += ["--model", "lenet5"]
    result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert "Traceback" not in result.output
    assert redis_client.dbsize() == 0


def test_unreachable_redis_names_the_url(inputs):
    url = "redis://user:secret@127.0.0.1:1/0"
    result = CliRunner().invoke(
        cli, ["--redis-url", url, "submit", str(inputs["good"]), "-m", "lenet5"]
    )
    assert result.exit_code == 3  # the farm is unavailable, not a bad call
    assert result.output.startswith("error: cannot reach Redis at redis://user:***@127.0.0.1:1/0")
    assert "secret" not in result.output and len(result.output.strip().splitlines()) == 1


def test_real_process_exit_code_and_no_traceback(inputs, settings):
    proc = subprocess.run(
        [sys.executable, "-m", "codedfarm", "--redis-url", settings.redis_url, "submit",
         str(inputs["nan"]), "--model", "lenet5"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip() == "error: batch contains 1 NaN/Inf values"
    assert "Traceback" not in proc.stderr + proc.stdout


@pytest.mark.parametrize("where", ["missing-folder", "a-folder"])
def test_a_bad_out_path_is_refused_before_anything_runs(inputs, tmp_path, where):
    out = tmp_path / "nowhere" / "p.npy" if where == "missing-folder" else tmp_path
    # an unreachable Redis: the check comes first, so this is a bad call (2), not a farm (3)
    result = CliRunner().invoke(cli, ["--redis-url", "redis://127.0.0.1:1/0", "submit",
                                      str(inputs["good"]), "-m", "lenet5", "--out", str(out)])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --out {out}:")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_warnings_for_uint8_images_and_exact_codes_on_general_models(farm, tmp_path):
    images = (np.random.default_rng(1).random((8, 1, 32, 32)) * 255).astype(np.uint8)
    batch = tmp_path / "u8.npy"
    np.save(batch, images)
    out = tmp_path / "predout"  # no suffix: written at exactly this path
    env = {"CODEDFARM_KEY_PREFIX": "e2e", "CODEDFARM_CACHE_DIR": str(farm.settings.cache_dir),
           "CODEDFARM_KEY_TTL": "60"}  # fmt: skip
    base = ["--redis-url", farm.settings.redis_url, "submit", str(batch), "-Q", "gpu0,gpu1"]
    result = CliRunner().invoke(cli, [*base, "-m", "lenet5", "--codec", "mds", "-s", "2",
                                      "--out", str(out)], env=env)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "warning: uint8 batch converted to float32 in [0, 1] (divided by 255)" in result.stderr
    assert "warning: mds decodes exactly only models of degree <= 1" in result.stderr
    assert "model lenet5 is not declared a polynomial" in result.stderr
    assert f"saved to {out}" in result.stdout and out.exists()
    assert not (tmp_path / "predout.npy").exists() and np.load(out).shape == (8, 10)
    linear = CliRunner().invoke(cli, [*base, "-m", "linear", "--codec", "mds", "-s", "2"],
                                env=env)  # fmt: skip
    assert linear.exit_code == 0 and "mds decodes exactly" not in linear.stderr


def test_a_busy_metrics_port_is_one_line(redis_server):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(cli, ["--redis-url", redis_server.url, "collector",
                                          "--metrics-port", str(port), "--metrics-addr",
                                          "127.0.0.1"])  # fmt: skip
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"error: --metrics-port {port}: cannot listen on")
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.slow
def test_submit_against_a_live_farm_prints_json_and_saves(farm, inputs, tmp_path):
    out = tmp_path / "pred.npy"
    result = CliRunner().invoke(
        cli,
        ["--redis-url", farm.settings.redis_url, "submit", str(inputs["good"]), "-m", "lenet5",
         "--codec", "berrut", "-n", "16", "-s", "2", "-Q", "gpu0,gpu1",
         "--json", "--out", str(out)],
        env={"CODEDFARM_KEY_PREFIX": "e2e", "CODEDFARM_CACHE_DIR": str(farm.settings.cache_dir),
             "CODEDFARM_KEY_TTL": "60"},
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert record["outcome"] == "decoded" and record["n"] == 16 and record["k"] == 8
    assert set(record["timings"]) >= {"encode", "dispatch", "wait", "decode", "end_to_end"}
    assert np.load(out).shape == (8, 10)
    r = redis.Redis.from_url(farm.settings.redis_url)
    assert not r.exists(f"e2e:b:{record['batch']}:in")


@pytest.mark.parametrize(
    "args",
    [["submit", "x.npy", "-m", "linear", "--redundancy", "0.5"],
     ["serve", "--redundancy", "0.9"],
     ["bench", "--redundancy", "0"],
     ["bench", "--redundancy", "1.5", "-n", "12"]],
)  # fmt: skip
def test_an_impossible_redundancy_is_refused_with_exit_2(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert "redundancy" in result.output and "Traceback" not in result.output
