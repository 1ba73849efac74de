"""Serving the user's own models: a model repository with versions, on real worker processes.

The repository is made here: a TorchScript affine map (mds decodes it exactly), a
torch.export MLP and a factory model (Python code with weights_only weights), both served
with spline; then a version added while the workers run, broken models, and an unprepared
zoo model. Every failure must be a clear error at once, never a silent timeout.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from codedfarm import BatchSpec, FarmClient, ModelConfigError, UnknownModelError
from codedfarm.cli import cli
from codedfarm.errors import InputError
from codedfarm.local import LocalFarm
from codedfarm.models.config import read_model_config
from codedfarm.models.digits import load_digits_split
from codedfarm.models.manage import add_model
from codedfarm.models.repository import ModelRepository
from codedfarm.models.resolve import load_served_model, parse_model_ref, resolve_model
from codedfarm.server.farm import MODEL_CACHE_S
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions
from codedfarm.worker.state import WorkerState

SHAPE = (1, 32, 32)
FACTORY_CODE = """
from torch import nn


def build():
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 32), nn.Tanh(), nn.Linear(32, 10))
"""


def affine(scale: float = 1.0) -> nn.Module:
    torch.manual_seed(7)
    layer = nn.Linear(1024, 10)
    with torch.no_grad():
        layer.weight.mul_(scale)
        layer.bias.mul_(scale)
    return nn.Sequential(nn.Flatten(), layer).eval()


def mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(1024, 64), nn.Tanh(), nn.Linear(64, 10)).eval()


def save_torchscript(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


def save_export(module: nn.Module, path: Path, dynamic: bool = True) -> Path:
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic else None
    program = torch.export.export(module, (torch.zeros(2, *SHAPE),), dynamic_shapes=shapes)
    torch.export.save(program, str(path))
    return path


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repository")
    files = tmp_path_factory.mktemp("exports")
    add_model(root, "affine", save_torchscript(affine(), files / "affine.pt"), input_shape=SHAPE,
              polynomial_degree=1)  # fmt: skip
    add_model(root, "mlp", save_export(mlp(), files / "mlp.pt2"), input_shape=SHAPE,
              description="an exported MLP")  # fmt: skip
    factory = root / "factmlp"
    (factory / "1").mkdir(parents=True)
    (factory / "factmlp_code.py").write_text(FACTORY_CODE)
    (factory / "config.json").write_text(json.dumps(
        {"input_shape": list(SHAPE), "output_shape": [10], "factory": "factmlp_code:build",
         "serving": {"codec": "spline", "n": 24, "s": 4}}))  # fmt: skip
    torch.manual_seed(11)
    weights = nn.Sequential(nn.Flatten(), nn.Linear(1024, 32), nn.Tanh(), nn.Linear(32, 10))
    torch.save(weights.state_dict(), factory / "1" / "weights.pt")
    broken = root / "broken"
    (broken / "1").mkdir(parents=True)
    (broken / "1" / "model.pt").write_bytes(b"this is not a zip archive")
    (broken / "config.json").write_text(json.dumps({"input_shape": list(SHAPE),
                                                    "output_shape": [10]}))  # fmt: skip
    liar = root / "liar"  # says 5 outputs, gives 10
    liar.mkdir()
    (liar / "config.json").write_text(json.dumps({"input_shape": list(SHAPE),
                                                  "output_shape": [5]}))  # fmt: skip
    (liar / "1").mkdir()
    save_torchscript(affine(), liar / "1" / "model.pt")
    noshape = root / "noshape"
    noshape.mkdir()
    (noshape / "config.json").write_text(json.dumps({"input_shape": list(SHAPE)}))
    return root


@pytest.fixture(scope="module")
def repo_farm(repo: Path, tmp_path_factory: pytest.TempPathFactory, model_cache: Path
              ) -> Iterator[LocalFarm]:  # fmt: skip
    """A batch engine and a Celery worker serving the repository; the cache has only LeNet5
    trained (so repvgg is a zoo model that is not prepared)."""
    base = Settings(key_prefix="repo", key_ttl=60.0, deadline=10.0, cache_dir=model_cache,
                    model_repository=repo)  # fmt: skip
    workers = [
        WorkerOptions(queues=("r0",), engine="batch", concurrency=24, preload=("affine",)),
        WorkerOptions(queues=("r1",), concurrency=6),
    ]
    with LocalFarm(workers, settings=base) as farm:
        yield farm


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return load_digits_split().test_x[:8]


def direct(module: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = module(torch.from_numpy(np.ascontiguousarray(x))).numpy()
    return out


def submit(farm: LocalFarm, x: np.ndarray, **spec: object):
    with FarmClient(farm.settings) as client:
        start = time.monotonic()
        result = client.submit(x, BatchSpec(queues=("r0", "r1"), **spec))  # type: ignore[arg-type]
        return result, time.monotonic() - start


@pytest.mark.slow
def test_torchscript_affine_with_mds_decodes_exactly(repo_farm, digits):
    result, _ = submit(repo_farm, digits, model="affine", codec="mds", n=12, s=2)
    assert result.outcome == "decoded", result.record.error
    assert result.record.model == "affine" and result.record.model_version == 1
    truth = direct(affine(), digits)
    relative = np.abs(result.predictions - truth).max() / np.abs(truth).max()
    assert relative <= 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("model", ["mlp", "factmlp"])
def test_export_and_factory_models_serve_with_spline(repo_farm, digits, repo, model):
    result, _ = submit(repo_farm, digits, model=model, codec="spline", n=24, s=4)
    assert result.outcome == "decoded", result.record.error
    assert result.record.k == 8 and result.record.n == 24
    truth = direct(load_served_model(model, None, repository=repo, cache_dir=repo), digits)
    assert np.mean((result.predictions - truth) ** 2) / np.mean(truth**2) < 1e-2
    assert (result.predictions.argmax(1) == truth.argmax(1)).mean() >= 0.75


@pytest.mark.slow
def test_serving_defaults_come_from_the_models_config(repo_farm, digits):
    result, _ = submit(repo_farm, digits, model="factmlp")  # codec, n and s from config.json
    assert result.outcome == "decoded", result.record.error
    assert result.record.codec.startswith("spline") and (result.record.n, result.record.s) == (
        24, 4)  # fmt: skip


@pytest.mark.slow
def test_a_new_version_is_used_by_the_next_batch_without_a_restart(repo_farm, digits, repo,
                                                                   tmp_path):  # fmt: skip
    before, _ = submit(repo_farm, digits, model="affine", codec="mds", n=12, s=2)
    assert before.record.model_version == 1
    file = save_torchscript(affine(scale=2.0), tmp_path / "affine2.pt")
    result = CliRunner().invoke(cli, ["models", "add", "affine", str(file), "--input-shape",
                                      "1,32,32", "--model-repository", str(repo), "--json"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["version"] == 2
    after, _ = submit(repo_farm, digits, model="affine", codec="mds", n=12, s=2)
    assert after.outcome == "decoded" and after.record.model_version == 2
    np.testing.assert_allclose(after.predictions, direct(affine(2.0), digits), rtol=1e-4,
                               atol=1e-4)  # fmt: skip
    pinned, _ = submit(repo_farm, digits, model="affine@1", codec="mds", n=12, s=2)
    assert pinned.record.model_version == 1
    np.testing.assert_allclose(pinned.predictions, before.predictions, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "reason"),
    [
        ("broken", "cannot load"),
        ("liar", "returned outputs of shape (10,)"),
        ("repvgg", "not prepared"),
    ],
)
def test_a_model_workers_cannot_serve_fails_the_batch_fast_with_the_reason(
    repo_farm, digits, model, reason
):
    x = np.zeros((8, 3, 32, 32), np.float32) if model == "repvgg" else digits
    result, elapsed = submit(repo_farm, x, model=model, codec="berrut", n=16, s=2, deadline=30.0)
    assert result.outcome == "failed", result.record
    assert result.record.worker_errors > 0 and result.record.results_received == 0
    # only a clock tells a fast failure from one at the deadline (both say "failed"): a
    # one-sided bound, far below the 30 s deadline and far above the second it takes
    assert elapsed < 15.0, elapsed
    assert reason in result.record.error and "worker " in result.record.error
    if model == "repvgg":
        assert "codedfarm models prepare repvgg" in result.record.error


@pytest.mark.slow
def test_bad_requests_are_refused_at_the_client_with_exit_2(repo_farm, repo, tmp_path):
    batch = tmp_path / "x.npy"
    np.save(batch, np.zeros((4, 3, 32, 32), np.float32))
    base = ["--redis-url", repo_farm.settings.redis_url, "submit", str(batch),
            "--model-repository", str(repo)]  # fmt: skip
    cases = [
        (["-m", "affine@1"], "model affine@1 takes a batch of shape (K, 1, 32, 32), got (4, 3, 32, 32)"),
        (["-m", "affine@9"], "model affine has no version 9"),
        (["-m", "noshape"], f"{repo / 'noshape' / 'config.json'}: missing field 'output_shape'"),
        (["-m", "nosuch"], "unknown model 'nosuch'"),
    ]  # fmt: skip
    for args, message in cases:
        result = CliRunner().invoke(cli, [*base, *args])
        assert result.exit_code == 2, result.output
        assert message in result.output and len(result.output.strip().splitlines()) == 1


def test_models_lists_the_repository_and_the_zoo(repo, model_cache, monkeypatch):
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(model_cache))
    result = CliRunner().invoke(cli, ["models", "--model-repository", str(repo), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    assert rows["affine"]["source"] == "repository" and rows["affine"]["versions"][0] == 1
    assert rows["mlp"]["description"] == "an exported MLP" and rows["mlp"]["ready"]
    assert not rows["noshape"]["ready"] and "missing field 'output_shape'" in rows[
        "noshape"]["status"]  # fmt: skip
    assert rows["lenet5"]["source"] == "zoo" and rows["lenet5"]["ready"]
    assert not rows["repvgg"]["ready"] and "models prepare repvgg" in rows["repvgg"]["status"]
    text = CliRunner().invoke(cli, ["models", "--model-repository", str(repo)]).output
    assert "affine" in text and "repository versions 1" in text


def test_models_prepare_checks_a_repository_model(repo):
    result = CliRunner().invoke(cli, ["models", "prepare", "mlp@1", "--model-repository",
                                      str(repo)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "mlp@1: loads and runs, (1, 32, 32) -> (10,)"
    result = CliRunner().invoke(cli, ["models", "prepare", "broken", "--model-repository",
                                      str(repo)])  # fmt: skip
    assert result.exit_code == 2 and "model broken@1: cannot load" in result.output


def test_models_add_checks_the_file_before_adding(repo, tmp_path):
    good = save_torchscript(affine(), tmp_path / "a.pt")
    text = tmp_path / "a.txt"
    text.write_text("hello")
    corrupt = tmp_path / "c.pt"
    corrupt.write_bytes(b"garbage")
    cases = [
        ([str(good), "--input-shape", "1,32,32", "--output-shape", "7"],
         "outputs have shape (10,) for one input of shape (1, 32, 32), but --output-shape says (7,)"),
        ([str(good), "--input-shape", "3,32,32"], "does not run on a zero input of shape (3, 32, 32)"),
        ([str(text), "--input-shape", "1,32,32"], "must be TorchScript (.pt"),
        ([str(corrupt), "--input-shape", "1,32,32"], "cannot load"),
        ([str(good), "--input-shape", "1,x"], "--input-shape takes positive integers"),
    ]  # fmt: skip
    for args, message in cases:
        result = CliRunner().invoke(cli, ["models", "add", "newbie", *args,
                                          "--model-repository", str(repo)])  # fmt: skip
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
    assert not (repo / "newbie").exists() or ModelRepository(repo).versions("newbie") == []
    result = CliRunner().invoke(cli, ["models", "add", "affine", str(good), "--input-shape",
                                      "3,32,32", "--model-repository", str(repo)])  # fmt: skip
    assert result.exit_code == 2 and "a new version must too" in result.output


def test_a_program_exported_for_one_batch_size_still_serves(tmp_path, digits):
    file = save_export(mlp(), tmp_path / "static.pt2", dynamic=False)
    added = add_model(tmp_path / "repo", "static", file, input_shape=SHAPE)
    module = load_served_model("static", added.version, repository=tmp_path / "repo",
                               cache_dir=tmp_path)  # fmt: skip
    np.testing.assert_allclose(direct(module, digits), direct(mlp(), digits), rtol=1e-5,
                               atol=1e-6)  # fmt: skip


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"input_shape": [1, 32, 32]}, "missing field 'output_shape'"),
        ({"input_shape": [1, 0], "output_shape": [10]}, "field 'input_shape' must be"),
        ({"input_shape": [1], "output_shape": [10], "inputshape": 1}, "unknown field(s) inputshape"),
        ({"input_shape": [1], "output_shape": [10], "input_dtype": "int8"}, "field 'input_dtype'"),
        ({"input_shape": [1], "output_shape": [10], "factory": "no colon"}, "field 'factory'"),
        ({"input_shape": [1], "output_shape": [10], "serving": {"n": 0}}, "field 'serving.n'"),
        ({"input_shape": [1], "output_shape": [10], "serving": {"x": 1}}, "serving.x"),
        ([1, 2], "must be a JSON object"),
    ],
)  # fmt: skip
def test_config_errors_name_the_file_and_the_field(tmp_path, config, message):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    with pytest.raises(ModelConfigError) as info:
        read_model_config(path)
    assert str(path) in str(info.value) and message in str(info.value)
    path.write_text("{not json")
    with pytest.raises(ModelConfigError, match="not valid JSON"):
        read_model_config(path)


def test_resolution_prefers_the_repository_and_ignores_unfinished_versions(repo, tmp_path):
    assert resolve_model("lenet5", repo).source == "zoo"
    assert resolve_model("affine@1", repo).version == 1
    highest = resolve_model("affine", repo).version
    (repo / "affine" / str(highest + 5)).mkdir()  # a folder being copied in: no model file yet
    assert resolve_model("affine", repo).version == highest
    (repo / "affine" / str(highest + 5)).rmdir()
    for bad in ("affine@0", "affine@x", "@1"):
        with pytest.raises(UnknownModelError, match="bad model reference"):
            parse_model_ref(bad)
    with pytest.raises(UnknownModelError, match="built-in model and has no versions"):
        resolve_model("lenet5@1", repo)
    with pytest.raises(UnknownModelError, match="no model repository"):
        resolve_model("affine", None)


def test_a_worker_drops_versions_no_longer_asked_for(repo, model_cache, monkeypatch, tmp_path):
    import codedfarm.worker.state as state_module

    local = tmp_path / "repo"
    for scale in (1.0, 2.0):
        add_model(local, "aff", save_torchscript(affine(scale), tmp_path / f"{scale}.pt"),
                  input_shape=SHAPE)  # fmt: skip
    worker = WorkerState(Settings(cache_dir=model_cache, model_repository=local),
                         WorkerOptions())  # fmt: skip
    assert worker.model("aff").version == 2  # a bare name: the highest version
    assert worker.model("aff", 1).version == 1
    assert worker.loaded_models() == ["aff@1", "aff@2"]  # both recently used
    monkeypatch.setattr(state_module, "IDLE_VERSION_S", 0.0)
    worker.model("aff", 1)
    assert worker.loaded_models() == ["aff@1"]


def test_a_model_that_fails_to_load_is_not_retried_for_every_task(repo, model_cache):
    worker = WorkerState(Settings(cache_dir=model_cache, model_repository=repo),
                         WorkerOptions())  # fmt: skip
    from codedfarm.errors import ModelUnavailableError

    with pytest.raises(ModelUnavailableError, match="cannot load") as first:
        worker.model("broken", 1)
    with pytest.raises(ModelUnavailableError) as second:
        worker.model("broken", 1)
    assert second.value is first.value
    assert f"worker {worker.name}" in str(first.value)


@pytest.mark.slow
def test_the_client_checks_the_input_before_writing_to_redis(repo_farm, redis_client, repo):
    settings = replace(repo_farm.settings)
    with FarmClient(settings) as client:
        keys_before = set(client.redis.keys("*"))
        with pytest.raises(InputError, match="takes a batch of shape"):
            client.submit(np.zeros((2, 1, 16, 16), np.float32), BatchSpec(model="affine"))
        assert set(client.redis.keys("*")) == keys_before


@pytest.mark.slow
def test_the_http_server_serves_repository_models_with_their_own_serving_settings(
    repo_farm, digits, repo
):
    """`codedfarm serve` in front of the repository: the KServe client gets exact answers
    from a TorchScript model (mds, from the server's flags), a version by URL, and a model
    whose config.json names its codec (spline) is coded with it, not the server's."""
    import subprocess
    import sys
    import urllib.request

    from codedfarm.local.redis_server import free_port

    httpclient = pytest.importorskip("tritonclient.http")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "codedfarm", "serve", "--port", str(port), "-Q", "r0",
         "--group-size", "4", "--codec", "mds", "-n", "6", "-s", "2"],
        env=repo_farm.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        client = httpclient.InferenceServerClient(f"127.0.0.1:{port}")
        end = time.monotonic() + 60
        while time.monotonic() < end:
            try:
                if client.is_server_ready():
                    break
            except Exception:  # not listening yet
                pass
            time.sleep(0.2)
        versions = client.get_model_metadata("affine")["versions"]  # others' tests add some
        assert "1" in versions
        x = digits[:3]
        tensor = httpclient.InferInput("input__0", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x)
        latest = load_served_model("affine", None, repository=repo, cache_dir=repo)
        for version, model in (("1", affine()), ("", latest)):
            y = client.infer("affine", [tensor], model_version=version).as_numpy("output__0")
            truth = direct(model, x)
            assert np.abs(y - truth).max() / np.abs(truth).max() <= 1e-5
        y = client.infer("factmlp", [tensor]).as_numpy("output__0")
        assert y.shape == (3, 10)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        assert 'codec="spline",model="factmlp"' in metrics
        assert 'codec="mds",model="affine"' in metrics
        # a config.json change: the next groups are coded with the new codec, and the
        # requests' codec label moves with it (one resolution gives both)
        config = repo / "factmlp" / "config.json"
        original = config.read_text()
        changed = json.loads(original)
        changed["serving"]["codec"] = "berrut"
        try:
            config.write_text(json.dumps(changed))
            time.sleep(MODEL_CACHE_S + 0.1)  # the server reuses a resolved model this long
            y = client.infer("factmlp", [tensor]).as_numpy("output__0")
            assert y.shape == (3, 10)
        finally:
            config.write_text(original)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            metrics = response.read().decode()
        request = re.compile(r'codedfarm_server_request_seconds_count\{codec="(\w+)",'
                             r'model="factmlp",outcome="ok"\} (\S+)')  # fmt: skip
        used = re.compile(r'codedfarm_server_groups_total\{codec="(\w+)",model="factmlp",'
                          r'outcome="decoded"\} (\S+)')  # fmt: skip
        assert {c: float(v) for c, v in request.findall(metrics)} == {"spline": 1, "berrut": 1}
        assert {c: float(v) for c, v in used.findall(metrics)} == {"spline": 1, "berrut": 1}
    finally:
        server.terminate()
        server.wait(30)
