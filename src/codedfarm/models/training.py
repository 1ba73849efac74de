"""Train the offline models on sklearn's digits and cache their weights with metadata."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from torch import nn

__all__ = ["train_lenet5", "trained_lenet5"]

LENET5_FILE = "lenet5-digits.pt"


def train_lenet5(epochs: int = 15, seed: int = 0) -> tuple[Any, dict[str, Any]]:
    """Train LeNet5 on digits (1x32x32); returns the model and its training metadata."""
    import torch
    from torch import nn

    from codedfarm.models.digits import load_digits_split
    from codedfarm.models.lenet import LeNet5

    torch.manual_seed(seed)
    data = load_digits_split((1, 32, 32), seed=seed)
    model = LeNet5()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    x = torch.from_numpy(data.train_x)
    y = torch.from_numpy(data.train_y)
    start = time.perf_counter()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(y), generator=generator).split(64):  # type: ignore[no-untyped-call]
            optimizer.zero_grad()
            loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    model.eval()
    with torch.no_grad():
        predicted = model(torch.from_numpy(data.test_x)).argmax(1).numpy()
    metadata = {
        "model": "lenet5",
        "dataset": "sklearn digits resized to 1x32x32",
        "train_size": len(data.train_y),
        "test_size": len(data.test_y),
        "test_accuracy": float(np.mean(predicted == data.test_y)),
        "epochs": epochs,
        "seed": seed,
        "train_seconds": round(time.perf_counter() - start, 2),
        "torch": str(torch.__version__),
    }
    return model, metadata


def trained_lenet5(cache_dir: Path) -> nn.Module:
    """LeNet5 with cached digits weights, training them first if the cache has none.

    Concurrent callers (several worker processes starting at once) serialize on a lock
    file, so the model is trained once; the weights are written atomically.
    """
    import torch

    from codedfarm.models.lenet import LeNet5

    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / LENET5_FILE
    with open(cache_dir / (LENET5_FILE + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.exists():
            model, metadata = train_lenet5()
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save({"state_dict": model.state_dict(), "metadata": metadata}, tmp)
            os.replace(tmp, path)
            path.with_suffix(".json").write_text(json.dumps(metadata, indent=2))
    saved = torch.load(path, map_location="cpu", weights_only=True)
    model = LeNet5()
    model.load_state_dict(saved["state_dict"])
    model.eval()
    return model
