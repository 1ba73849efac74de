"""The models the farm serves, by name, with their input shapes and cached weights."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from codedfarm.errors import UnknownModelError

if TYPE_CHECKING:
    from torch import nn

__all__ = ["MODELS", "ModelSpec", "get_model_spec", "load_model"]


@dataclass(frozen=True)
class ModelSpec:
    """A servable model: ``(B, *input_shape) -> (B, num_outputs)``."""

    name: str
    input_shape: tuple[int, ...]
    num_outputs: int
    description: str
    build: Callable[[Path, bool], nn.Module]  # (cache_dir, train) -> model on CPU, eval mode
    polynomial_degree: int | None = None  # declared degree (1: linear/affine); None: general


def _trained(name: str) -> Callable[[Path, bool], nn.Module]:
    def build(cache_dir: Path, train: bool) -> nn.Module:
        from codedfarm.models.training import trained_model

        return trained_model(name, cache_dir, train=train)

    return build


def _vit(cache_dir: Path, train: bool) -> nn.Module:
    from codedfarm.models.vit import vit_b_16

    return vit_b_16(cache_dir)


def _linear(cache_dir: Path, train: bool) -> nn.Module:
    import torch
    from torch import nn

    generator = torch.Generator().manual_seed(5)
    layer = nn.Linear(32 * 32, 10)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(10, 32 * 32, generator=generator) / 32)
        layer.bias.copy_(torch.randn(10, generator=generator))
    return nn.Sequential(nn.Flatten(), layer)


def _noop(cache_dir: Path, train: bool) -> nn.Module:
    from codedfarm.models.lenet import FirstPixels

    return FirstPixels()


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "lenet5",
            (1, 32, 32),
            10,
            "LeNet5 trained on sklearn's digits (cached after the first use)",
            _trained("lenet5"),
        ),
        ModelSpec(
            "repvgg",
            (3, 32, 32),
            10,
            "RepVGG-A0 (CIFAR-sized) trained on digits; about 80 s on 2 CPU cores, then cached",
            _trained("repvgg"),
        ),
        ModelSpec(
            "vit_small",
            (3, 32, 32),
            10,
            "a 4-layer ViT (patch 4, width 128) trained on digits; about 150 s, then cached",
            _trained("vit_small"),
        ),
        ModelSpec(
            "vit",
            (3, 224, 224),
            1000,
            "torchvision vit_b_16 with ImageNet weights (downloaded once; needs internet)",
            _vit,
        ),
        ModelSpec(
            "linear",
            (1, 32, 32),
            10,
            "a fixed random affine map (mds decodes it exactly)",
            _linear,
            polynomial_degree=1,
        ),
        ModelSpec(
            "noop",
            (1, 32, 32),
            10,
            "returns the first 10 pixels: no compute, for throughput tests",
            _noop,
            polynomial_degree=1,
        ),
    )
}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError as exc:
        raise UnknownModelError(f"unknown model {name!r}; available: {', '.join(MODELS)}") from exc


def load_model(name: str, cache_dir: Path, device: str = "cpu", *, train: bool = True) -> nn.Module:
    """Build zoo model ``name`` with its weights, in eval mode, on ``device``. A model that
    needs training trains first (minutes) unless ``train=False``, which raises
    :class:`~codedfarm.errors.ModelUnavailableError` instead."""
    spec = get_model_spec(name)
    model = spec.build(cache_dir, train).eval()
    return model.to(device)
