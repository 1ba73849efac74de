"""Vision Transformers: torchvision's vit_b_16 (NeRCC's ImageNet model) and a small ViT for
``3x32x32`` inputs that trains on a CPU in about a minute."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from codedfarm.errors import ConfigError

__all__ = ["small_vit", "vit_b_16"]


def small_vit(num_classes: int = 10) -> nn.Module:
    """``(B, 3, 32, 32) -> (B, num_classes)``: patch 4, 4 layers, 4 heads, width 128."""
    from torchvision.models.vision_transformer import VisionTransformer

    model: nn.Module = VisionTransformer(
        image_size=32,
        patch_size=4,
        num_layers=4,
        num_heads=4,
        hidden_dim=128,
        mlp_dim=256,
        num_classes=num_classes,
    )
    return model


def vit_b_16(cache_dir: Path, *, pretrained: bool = True) -> nn.Module:
    """torchvision's ``vit_b_16``, ``(B, 3, 224, 224) -> (B, 1000)``.

    With ``pretrained`` the ImageNet-1K weights are downloaded once through torchvision
    into ``cache_dir/torch`` (about 330 MB); offline, a clear error says so.
    """
    import torch
    from torchvision.models import ViT_B_16_Weights
    from torchvision.models import vit_b_16 as build

    if not pretrained:
        plain: nn.Module = build()
        return plain
    torch.hub.set_dir(str(cache_dir / "torch"))
    try:
        model: nn.Module = build(weights=ViT_B_16_Weights.IMAGENET1K_V1)
        return model
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise ConfigError(
            "vit (vit_b_16) needs its pretrained ImageNet weights, which could not be "
            f"downloaded into {cache_dir / 'torch'} ({exc}); connect once to fetch them, "
            "or use vit_small, which trains offline"
        ) from exc
