"""Data sets as numpy arrays ``(B, C, H, W)`` float32 with integer labels.

``digits`` (sklearn's 1797 real 8x8 digits, shipped with scikit-learn) works offline and is
the default. ``mnist`` and ``cifar10`` are downloaded through torchvision into the cache
once; ``imagenet`` reads an ImageFolder directory (e.g. the ILSVRC2012 validation set
sorted into class folders). Without a network a download fails with a clear error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from codedfarm.errors import DatasetUnavailableError
from codedfarm.models.digits import DigitsSplit, load_digits_split, resize_images

__all__ = ["DATASETS", "DatasetUnavailableError", "load_dataset"]

DATASETS = ("digits", "mnist", "cifar10", "imagenet")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _to_shape(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """``(B, H, W)`` or ``(B, H, W, C)`` uint8/float -> ``(B, *shape)`` float32 in [0, 1]."""
    import torch
    import torch.nn.functional as F  # noqa: N812

    x = torch.from_numpy(np.asarray(images, dtype=np.float32) / 255.0)
    x = x[:, None] if x.ndim == 3 else x.permute(0, 3, 1, 2)
    channels, height, width = shape
    if x.shape[1] != channels:
        x = x.mean(1, keepdim=True).repeat(1, channels, 1, 1)
    if tuple(x.shape[2:]) != (height, width):
        x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False)
    out: np.ndarray = x.numpy()
    return out


def _torchvision(name: str, root: Path, train: bool) -> tuple[np.ndarray, np.ndarray]:
    from torchvision import datasets

    cls = {"mnist": datasets.MNIST, "cifar10": datasets.CIFAR10}[name]
    try:
        data = cls(str(root), train=train, download=True)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError
        raise DatasetUnavailableError(
            f"cannot download {name} into {root} ({exc}); offline, use --dataset digits"
        ) from exc
    images = data.data.numpy() if hasattr(data.data, "numpy") else np.asarray(data.data)
    return images, np.asarray(data.targets, dtype=np.int64)


def _imagenet(folder: Path | None, limit: int) -> tuple[np.ndarray, np.ndarray]:
    if folder is None or not folder.is_dir():
        raise DatasetUnavailableError(
            f"imagenet needs --data-dir pointing at an ImageFolder directory, got {folder}"
        )
    from torchvision import datasets, transforms

    transform = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    data = datasets.ImageFolder(str(folder), transform=transform)
    if len(data) == 0:
        raise DatasetUnavailableError(f"no images under {folder}")
    order = np.random.default_rng(0).permutation(len(data))[:limit]
    images = np.stack([data[int(i)][0].numpy() for i in order])
    labels = np.array([data.targets[int(i)] for i in order], dtype=np.int64)
    return images, labels


def load_dataset(
    name: str,
    shape: tuple[int, int, int],
    cache_dir: Path,
    *,
    data_dir: Path | None = None,
    limit: int = 2000,
) -> DigitsSplit:
    """Data set ``name`` at input ``shape`` (test split capped at ``limit`` images)."""
    if name == "digits":
        return load_digits_split(shape)
    if name in ("mnist", "cifar10"):
        root = data_dir or cache_dir / "data"
        train_x, train_y = _torchvision(name, root, train=True)
        test_x, test_y = _torchvision(name, root, train=False)
        return DigitsSplit(
            _to_shape(train_x, shape), train_y, _to_shape(test_x[:limit], shape), test_y[:limit]
        )
    if name == "imagenet":
        images, labels = _imagenet(data_dir, limit)
        if tuple(images.shape[1:]) != shape:
            raise DatasetUnavailableError(f"imagenet images are 3x224x224; the model takes {shape}")
        empty = np.zeros((0, *shape), np.float32)
        return DigitsSplit(empty, np.zeros(0, np.int64), images, labels)
    raise DatasetUnavailableError(f"unknown data set {name!r}; choose from {', '.join(DATASETS)}")


__all__ += ["resize_images"]
