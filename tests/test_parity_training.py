"""Learned parity models (ParM, issue 25): `codedfarm parity train` trains a parity model
F_P so that F_P(x1+...+xk) ≈ F(x1)+...+F(xk), stores it in the model repository as
<base>.parity-k<k> with a `parity` block in its config.json, and the codec side finds it
with parity_model_for. Small models (the zoo's `linear`, a factory conv net) and a few
epochs keep this file fast; the real runs are in docs/cli.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from codedfarm.cli import cli
from codedfarm.errors import ConfigError, ModelConfigError, UnknownModelError
from codedfarm.models.config import ParityInfo, parse_model_config, read_model_config
from codedfarm.models.digits import load_digits_split
from codedfarm.models.manage import add_model
from codedfarm.models.parity import (
    ParityProgress,
    ParityTraining,
    parity_model_for,
    parity_models_of,
    train_parity,
)
from codedfarm.models.repository import ModelRepository
from codedfarm.models.resolve import load_served_model

SHAPE = (1, 32, 32)
FACTORY_CODE = """
from torch import nn


def build():
    return nn.Sequential(
        nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(), nn.Linear(4 * 7 * 7, 10)
    )
"""


def tiny_conv_repository(root: Path) -> Path:
    """A repository with ``tinyconv``: a factory conv net with random weights."""
    folder = root / "tinyconv"
    (folder / "1").mkdir(parents=True)
    (folder / "tinyconv_code.py").write_text(FACTORY_CODE)
    config = {"input_shape": list(SHAPE), "output_shape": [10], "factory": "tinyconv_code:build"}
    (folder / "config.json").write_text(json.dumps(config))
    torch.manual_seed(5)
    net = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(4), nn.Flatten(),
                        nn.Linear(4 * 7 * 7, 10))  # fmt: skip
    torch.save(net.state_dict(), folder / "1" / "weights.pt")
    return root


def weights(model_dir: Path) -> dict[str, torch.Tensor]:
    program = torch.export.load(str(model_dir / "model.pt2"))
    return dict(program.state_dict)


def train(repo: Path, cache: Path, ref: str = "linear", **fields: object):
    request = ParityTraining(ref, **{"k": 2, "epochs": 3, **fields})  # type: ignore[arg-type]
    return train_parity(request, repo, cache)


def test_train_store_resolve_load_and_reconstruct(tmp_path):
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    steps: list[ParityProgress] = []
    request = ParityTraining("linear", k=2, epochs=3)
    trained = train_parity(request, repo, cache, progress=steps.append)
    assert trained.model.ref == "linear.parity-k2@1" and trained.resumed_from == 0
    assert steps[-1].epoch == steps[-1].epochs == 3 and steps[-1].step == steps[-1].steps
    config = read_model_config(repo / "linear.parity-k2" / "config.json")
    assert config.input_shape == SHAPE and config.output_shape == (10,)
    info = config.parity
    assert info is not None and (info.base, info.k, info.data, info.target) == (
        "linear", 2, "digits", "logits")  # fmt: skip
    assert info.base_version is None and info.seed == 0 and info.epochs == 3
    assert info.heldout_agreement is not None and info.heldout_agreement > 0.8  # chance: 0.1
    assert not list((cache / "parity").glob("*.npz"))  # the checkpoint goes once stored

    found = parity_model_for("linear", 2, repo)
    assert found is not None and found.ref == "linear.parity-k2@1" and found.parity == info
    assert parity_models_of("linear", repo) == {2: "linear.parity-k2"}
    assert parity_model_for("linear", 3, repo) is None
    assert parity_model_for("linear", 2, None) is None and parity_models_of("linear", None) == {}

    # the stored file, loaded as a worker loads it: F_P(x1 + x2) - F(x2) ≈ F(x1)
    parity = load_served_model(found.name, found.version, repository=repo, cache_dir=cache)
    base = load_served_model("linear", None, repository=repo, cache_dir=cache)
    x = torch.from_numpy(load_digits_split().test_x[:200])
    x1, x2 = x[:100], x[100:]
    with torch.inference_mode():
        f1, f2 = base(x1), base(x2)
        reconstructed = parity(x1 + x2) - f2
    agreement = float((reconstructed.argmax(1) == f1.argmax(1)).float().mean())
    assert agreement > 0.8  # chance: about 0.1
    error = float(((reconstructed - f1) ** 2).mean())
    assert error < 0.2 * float(((f1 - f1.mean(0)) ** 2).mean())  # far better than the mean


def test_a_repository_base_lists_its_parity_models_and_a_new_base_version_hides_them(tmp_path):
    repo, cache = tiny_conv_repository(tmp_path / "repo"), tmp_path / "cache"
    trained = train(repo, cache, "tinyconv", epochs=1)
    assert trained.info.base_version == 1 and trained.model.format == "export"
    assert read_model_config(repo / "tinyconv" / "config.json").parity_models == (
        "tinyconv.parity-k2",
    )
    assert parity_models_of("tinyconv", repo) == {2: "tinyconv.parity-k2"}
    assert parity_models_of("tinyconv@1", repo) == {2: "tinyconv.parity-k2"}
    (repo / "tinyconv" / "2").mkdir()  # a new version of the base: trained for 1, not 2
    assert parity_model_for("tinyconv", 2, repo) is None
    assert parity_model_for("tinyconv@1", 2, repo) is not None
    with pytest.raises(UnknownModelError):
        parity_model_for("nosuch", 2, repo)


def test_a_torchscript_base_gives_a_torchscript_parity_model(tmp_path):
    torch.manual_seed(3)
    module = nn.Sequential(nn.Flatten(), nn.Linear(1024, 16), nn.Tanh(), nn.Linear(16, 10))
    file = tmp_path / "mlp.pt"
    torch.jit.save(torch.jit.script(module), str(file))
    repo = tmp_path / "repo"
    add_model(repo, "mlp", file, input_shape=SHAPE)
    trained = train(repo, tmp_path / "cache", "mlp", epochs=1)
    assert trained.model.format == "torchscript"
    with pytest.raises(ModelConfigError, match="--init scratch needs the architecture"):
        train(repo, tmp_path / "cache", "mlp", epochs=1, init="scratch")


def test_the_same_seed_gives_the_same_weights_and_another_seed_does_not(tmp_path):
    repo, cache = tiny_conv_repository(tmp_path / "repo"), tmp_path / "cache"
    runs = [train(repo, cache, "tinyconv", epochs=2, init="scratch", seed=s) for s in (7, 7, 8)]
    assert [r.model.version for r in runs] == [1, 2, 3]
    first, second, other = (weights(r.model.directory) for r in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert not all(torch.equal(first[name], other[name]) for name in first)


def test_an_interrupted_run_resumes_from_its_last_epoch(tmp_path):
    repo, cache = tiny_conv_repository(tmp_path / "repo"), tmp_path / "cache"

    def stop_in_epoch_3(step: ParityProgress) -> None:
        if step.epoch == 3:
            raise KeyboardInterrupt

    request = ParityTraining("tinyconv", k=2, epochs=4, seed=1)
    with pytest.raises(KeyboardInterrupt):
        train_parity(request, repo, cache, progress=stop_in_epoch_3)
    assert len(list((cache / "parity").glob("*.npz"))) == 1
    assert not (repo / "tinyconv.parity-k2" / "1").exists()
    epochs: set[int] = set()
    resumed = train_parity(request, repo, cache, progress=lambda s: epochs.add(s.epoch))
    assert resumed.resumed_from == 2 and epochs == {3, 4}
    straight = train_parity(request, repo, cache)  # no checkpoint left: all 4 epochs
    assert straight.resumed_from == 0
    a, b = weights(resumed.model.directory), weights(straight.model.directory)
    assert all(torch.equal(a[name], b[name]) for name in a)


def test_no_resume_starts_again(tmp_path):
    repo, cache = tmp_path / "repo", tmp_path / "cache"
    request = ParityTraining("linear", k=2, epochs=2)

    def stop(step: ParityProgress) -> None:
        if step.epoch == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_parity(request, repo, cache, progress=stop)
    again = ParityTraining("linear", k=2, epochs=2, resume=False)
    assert train_parity(again, repo, cache).resumed_from == 0


def test_a_data_file_is_split_and_named_by_its_digest(tmp_path):
    x = np.random.default_rng(0).random((60, *SHAPE), dtype=np.float32)
    np.savez(tmp_path / "mine.npz", x=x)
    trained = train(tmp_path / "repo", tmp_path / "cache", data=str(tmp_path / "mine.npz"))
    assert re.fullmatch(r"mine\.npz sha256:[0-9a-f]{16}", trained.info.data)
    assert trained.heldout.rows == 2 * 12  # 20 % of 60 rows held out, each missing in turn


def test_a_model_of_that_name_that_is_not_a_parity_model_is_left_alone(tmp_path):
    repo = tmp_path / "repo"
    (repo / "linear.parity-k2").mkdir(parents=True)
    (repo / "linear.parity-k2" / "config.json").write_text(
        json.dumps({"input_shape": list(SHAPE), "output_shape": [10]}))  # fmt: skip
    with pytest.raises(ModelConfigError, match="is not the parity model of linear for k=2"):
        train(repo, tmp_path / "cache")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k": 1}, "k must be an integer >= 2"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"target": "softmax"}, "target must be one of logits, probs"),
        ({"init": "random"}, "init one of base, scratch"),
    ],
)
def test_bad_requests(fields, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ParityTraining("linear", **{"k": 2, **fields})  # type: ignore[arg-type]


PARITY = {"base": "m", "k": 2, "target": "logits"}


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({**PARITY, "k": 1}, "field 'parity.k' must be an integer >= 2, got 1"),
        ({**PARITY, "target": "raw"}, "field 'parity.target' must be one of logits, probs"),
        ({**PARITY, "colour": 1}, "unknown field(s) parity.colour"),
        ({"base": "m", "k": 2}, "missing field 'parity.target'"),
        ({**PARITY, "base": "m@2"}, "field 'parity.base' must be a model name"),
        ({**PARITY, "heldout_agreement": 1.5}, "'parity.heldout_agreement' must be a number in"),
        ({**PARITY, "base_version": 0}, "'parity.base_version' must be an integer >= 1"),
        ({**PARITY, "init": "zero"}, "'parity.init' must be one of base, scratch"),
    ],
)
def test_a_bad_parity_block_is_a_model_config_error(block, message):
    data = {"input_shape": [1], "output_shape": [1], "parity": block}
    with pytest.raises(ModelConfigError, match=re.escape(message)):
        parse_model_config(Path("config.json"), data)


def test_the_parity_blocks_round_trip():
    info = ParityInfo("m", 4, "probs", 3, "x.npz sha256:ab", 5, 1, "scratch", 0.5, 0.75)
    data = {"input_shape": [1], "output_shape": [1], "parity": info.to_dict(),
            "parity_models": ["m.parity-k2"]}  # fmt: skip
    config = parse_model_config(Path("config.json"), data)
    assert config.parity == info and config.parity_models == ("m.parity-k2",)
    assert parse_model_config(Path("c"), json.loads(config.to_json())) == config
    with pytest.raises(ModelConfigError, match="'parity_models' must be a list of distinct"):
        parse_model_config(Path("c"), {**data, "parity_models": ["a", "a"]})


# ----- the command line --------------------------------------------------------------------
def run(tmp_path: Path, *args: str, repository: Path | None = None):
    env = {"CODEDFARM_CACHE_DIR": str(tmp_path / "cache"),
           "CODEDFARM_MODEL_REPOSITORY": str(repository) if repository else None}  # fmt: skip
    return CliRunner().invoke(cli, ["parity", "train", *args], env=env)


def test_the_command_trains_with_a_progress_bar_and_prints_json(tmp_path):
    repo = tmp_path / "repo"
    result = run(tmp_path, "linear", "-k", "2", "--epochs", "1", "--json", repository=repo)
    assert result.exit_code == 0, result.output
    assert "training linear.parity-k2" in result.stderr
    report = json.loads(result.stdout)
    assert report["name"] == "linear.parity-k2" and report["version"] == 1
    assert report["k"] == 2 and report["base"] == "linear" and report["heldout_rows"] == 718
    assert ModelRepository(repo).versions("linear.parity-k2") == [1]


def _npz(path: Path, shape: tuple[int, ...]) -> Path:
    np.savez(path, x=np.zeros(shape, np.float32))
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch", "-k", "2"], "error: unknown model 'nosuch'"),
        (["linear", "-k", "1"], "error: k must be an integer >= 2"),
        (["linear", "--k", "0"], "error: k must be an integer >= 2"),
        (
            ["linear", "-k", "2", "--data", "{wrong}"],
            "(20, 3, 32, 32); the model takes (N, 1, 32, 32)",
        ),
        (["linear", "-k", "2", "--data", "{missing}"], "missing.npz: no such file"),
        (["linear", "-k", "2", "--data", "digits.csv"], "--data takes digits or a .npz file"),
        (["linear@2", "-k", "2"], "error: linear is a built-in model and has no versions"),
    ],
)
def test_bad_input_exits_2_with_one_line(tmp_path, args, message):
    wrong = _npz(tmp_path / "wrong.npz", (20, 3, 32, 32))
    args = [a.format(wrong=wrong, missing=tmp_path / "missing.npz") for a in args]
    result = run(tmp_path, *args, repository=tmp_path / "repo")
    assert result.exit_code == 2, result.output
    assert message in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    assert not (tmp_path / "repo").exists()  # nothing stored, nothing trained


def test_without_a_repository_it_says_how_to_give_one(tmp_path):
    result = run(tmp_path, "linear", "-k", "2")
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: parity train stores the parity model in a model repository: set "
        "--model-repository or CODEDFARM_MODEL_REPOSITORY"
    )
