"""sklearn's digits (1797 real 8x8 handwritten digits) resized to a model's input shape."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["DigitsSplit", "load_digits_split", "resize_images"]


@dataclass(frozen=True)
class DigitsSplit:
    """Images ``(B, C, H, W)`` float32 in [0, 1] and labels ``(B,)``, split train/test."""

    train_x: npt.NDArray[np.float32]
    train_y: npt.NDArray[np.int64]
    test_x: npt.NDArray[np.float32]
    test_y: npt.NDArray[np.int64]


def resize_images(
    images: npt.NDArray[np.float32], shape: tuple[int, int, int]
) -> npt.NDArray[np.float32]:
    """``(B, h, w)`` -> ``(B, C, H, W)`` by bilinear resize, repeated over ``C`` channels."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    channels, height, width = shape
    tensor = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]
    resized = F.interpolate(tensor, size=(height, width), mode="bilinear", align_corners=False)
    out: npt.NDArray[np.float32] = resized.repeat(1, channels, 1, 1).numpy()
    return out


def load_digits_split(
    shape: tuple[int, int, int] = (1, 32, 32), test_fraction: float = 0.2, seed: int = 0
) -> DigitsSplit:
    """The digits data set at ``shape``, shuffled with ``seed`` and split."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(seed).permutation(len(labels))
    images, labels = resize_images(images[order], shape), labels[order]
    cut = round(len(labels) * (1 - test_fraction))
    return DigitsSplit(images[:cut], labels[:cut], images[cut:], labels[cut:])
