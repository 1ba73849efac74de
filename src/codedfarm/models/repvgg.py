"""RepVGG (Ding et al. 2021) for ``3x32x32`` images, 10 classes: NeRCC's CIFAR-10 model.

Training-time blocks have a 3x3 conv+BN, a 1x1 conv+BN and (when shapes allow) an
identity BN branch; :meth:`RepVGG.reparameterize` fuses each block into one 3x3 conv
with the same outputs, the form served in production.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["RepVGG", "RepVGGBlock"]


class _ConvBN(nn.Module):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.bn(self.conv(x))
        return out


def _fuse(
    conv: nn.Conv2d | None, bn: nn.BatchNorm2d, cin: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv (or identity when ``conv`` is None) followed by BN as one 3x3 kernel and bias."""
    if conv is None:
        kernel = torch.zeros(bn.num_features, cin, 3, 3)
        for i in range(bn.num_features):
            kernel[i, i % cin, 1, 1] = 1.0
    else:
        kernel = conv.weight
        if kernel.shape[-1] == 1:
            kernel = nn.functional.pad(kernel, [1, 1, 1, 1])
    assert bn.running_var is not None and bn.running_mean is not None
    std = (bn.running_var + bn.eps).sqrt()
    scale = (bn.weight / std).reshape(-1, 1, 1, 1)
    return kernel * scale, bn.bias - bn.running_mean * bn.weight / std


class RepVGGBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.cin = cin
        self.stride = stride
        self.dense = _ConvBN(cin, cout, 3, stride)
        self.one_by_one = _ConvBN(cin, cout, 1, stride)
        self.identity = nn.BatchNorm2d(cout) if cin == cout and stride == 1 else None
        self.fused: nn.Conv2d | None = None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            out: torch.Tensor = self.act(self.fused(x))
            return out
        y = self.dense(x) + self.one_by_one(x)
        if self.identity is not None:
            y = y + self.identity(x)
        result: torch.Tensor = self.act(y)
        return result

    @torch.no_grad()
    def reparameterize(self) -> None:
        k3, b3 = _fuse(self.dense.conv, self.dense.bn, self.cin)
        k1, b1 = _fuse(self.one_by_one.conv, self.one_by_one.bn, self.cin)
        kernel, bias = k3 + k1, b3 + b1
        if self.identity is not None:
            ki, bi = _fuse(None, self.identity, self.cin)
            kernel, bias = kernel + ki, bias + bi
        self.fused = nn.Conv2d(self.cin, kernel.shape[0], 3, self.stride, 1, bias=True)
        self.fused.weight.copy_(kernel)
        assert self.fused.bias is not None
        self.fused.bias.copy_(bias)
        del self.dense, self.one_by_one, self.identity
        self.identity = None


class RepVGG(nn.Module):
    """``(B, 3, 32, 32) -> (B, 10)``. Defaults: RepVGG-A0 depths (2, 4, 14, 1) with width
    multipliers (0.75, 2.5) on CIFAR-sized inputs (stride-1 stem), about 7.8M parameters;
    ``width`` scales every stage for a lighter model."""

    input_shape = (3, 32, 32)
    num_classes = 10

    def __init__(
        self,
        depths: tuple[int, ...] = (2, 4, 14, 1),
        widths: tuple[int, ...] = (48, 96, 192, 1280),
        num_classes: int = 10,
    ) -> None:
        super().__init__()
        stem = min(64, widths[0])
        layers: list[nn.Module] = [RepVGGBlock(3, stem, 1)]
        cin = stem
        for depth, width in zip(depths, widths, strict=True):
            for i in range(depth):
                layers.append(RepVGGBlock(cin, width, 2 if i == 0 else 1))
                cin = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.features(x))
        return out

    def reparameterize(self) -> RepVGG:
        """Fuse every block into a single 3x3 conv (inference only); returns self."""
        for module in self.modules():
            if isinstance(module, RepVGGBlock) and module.fused is None:
                module.reparameterize()
        return self
