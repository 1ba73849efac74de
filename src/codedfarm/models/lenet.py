"""LeNet5 for ``1x32x32`` images, 10 classes (LeCun et al. 1998)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["FirstPixels", "LeNet5"]


class LeNet5(nn.Module):
    """``(B, 1, 32, 32) -> (B, 10)`` logits."""

    input_shape = (1, 32, 32)
    num_classes = 10

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(),
            nn.Linear(120, 84),
            nn.ReLU(),
            nn.Linear(84, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.classifier(self.features(x))
        return out


class FirstPixels(nn.Module):
    """``(B, ...) -> (B, 10)``: the first 10 input values; a model that costs nothing."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1)[:, :10]
