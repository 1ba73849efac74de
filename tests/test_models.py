"""The model zoo: shapes, RepVGG re-parameterization, training/caching, offline errors."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch

from codedfarm.errors import ConfigError, UnknownModelError
from codedfarm.models.datasets import DatasetUnavailableError, load_dataset
from codedfarm.models.digits import DigitsSplit
from codedfarm.models.registry import MODELS, get_model_spec, load_model
from codedfarm.models.repvgg import RepVGG
from codedfarm.models.training import train_classifier
from codedfarm.models.vit import small_vit, vit_b_16


def test_registry_lists_the_zoo_with_shapes():
    assert set(MODELS) >= {"lenet5", "repvgg", "vit_small", "vit", "linear", "noop"}
    assert get_model_spec("vit").input_shape == (3, 224, 224)
    assert get_model_spec("repvgg").input_shape == (3, 32, 32)
    with pytest.raises(UnknownModelError, match="unknown model 'resnet'; available: lenet5"):
        get_model_spec("resnet")


def test_repvgg_reparameterized_matches_training_form():
    model = RepVGG(depths=(1, 2, 2, 1), widths=(8, 16, 16, 32))
    x = torch.randn(4, 3, 32, 32)
    model.train()
    model(torch.randn(16, 3, 32, 32))  # give BN running statistics something non-trivial
    model.eval()
    with torch.no_grad():
        before = model(x)
        model.reparameterize()
        after = model(x)
    assert after.shape == (4, 10)
    torch.testing.assert_close(before, after, atol=1e-4, rtol=1e-4)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.features.modules())


@pytest.mark.slow  # a whole quick evaluation or a training run
def test_small_vit_and_training_loop_learn_something():
    rng = np.random.default_rng(0)
    # two classes that differ by brightness: a model that trains at all separates them
    x = rng.random((64, 3, 32, 32)).astype(np.float32) * 0.3
    y = (np.arange(64) % 2).astype(np.int64)
    x[y == 1] += 0.6
    data = DigitsSplit(x[:48], y[:48], x[48:], y[48:])
    meta = train_classifier(small_vit(num_classes=2), data, epochs=8, lr=3e-3, batch_size=16)
    assert meta["test_accuracy"] >= 0.9 and meta["epochs"] == 8


def test_trained_models_are_cached_with_metadata(model_cache):
    model = load_model("lenet5", model_cache)
    assert (model_cache / "lenet5-digits.json").exists()
    digits = load_dataset("digits", (1, 32, 32), model_cache)
    with torch.no_grad():
        accuracy = (
            model(torch.from_numpy(digits.test_x)).argmax(1).numpy() == digits.test_y
        ).mean()
    assert accuracy > 0.9


def test_offline_downloads_fail_with_a_clear_error(monkeypatch, tmp_path):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(
        DatasetUnavailableError, match=r"cannot download mnist .*use --dataset digits"
    ):
        load_dataset("mnist", (1, 32, 32), tmp_path)
    import torchvision.models.vision_transformer as vt

    monkeypatch.setattr(vt, "_vision_transformer", offline)
    with pytest.raises(
        ConfigError, match="vit \\(vit_b_16\\) needs its pretrained ImageNet weights"
    ):
        vit_b_16(tmp_path)
    with pytest.raises(DatasetUnavailableError, match="imagenet needs --data-dir"):
        load_dataset("imagenet", (3, 224, 224), tmp_path)
    with pytest.raises(DatasetUnavailableError, match="unknown data set 'svhn'"):
        load_dataset("svhn", (3, 32, 32), tmp_path)


def test_models_command_lists_the_zoo_with_accuracy(model_cache, monkeypatch):
    from click.testing import CliRunner

    from codedfarm.cli import cli

    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(model_cache))
    result = CliRunner().invoke(cli, ["models"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("lenet5") and "1x32x32 -> 10" in lines[0]
    assert "digits test accuracy 0.9" in lines[1]
    assert any(line.startswith("vit ") and "3x224x224 -> 1000" in line for line in lines)
