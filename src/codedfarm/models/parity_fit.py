"""Fitting a parity model (ParM, Kosaian et al., SOSP'19): its data, the training loop with a
checkpoint after every epoch, the held-out numbers, and the export. torch is imported inside
the functions; :mod:`codedfarm.models.parity` is the interface.

The code is ParM's: an addition encoder (the parity query of ``k`` inputs is their sum
``P = x_1 + … + x_k``, ``(*input_shape)``) and a subtraction decoder (a missing prediction
is ``F_P(P) − Σ_{j≠i} T(F(x_j))``). The parity model ``F_P`` is trained so that
``F_P(P) ≈ Σ_i T(F(x_i))``, by the mean squared error over the output entries, where ``T``
is the target space: ``logits`` (the base model's outputs as served, ``T`` the identity) or
``probs`` (their softmax over the last dimension).
"""

from __future__ import annotations

import hashlib
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from codedfarm.errors import DatasetUnavailableError, InputError

if TYPE_CHECKING:
    import torch
    from torch import nn

__all__ = [
    "FitSettings",
    "HeldoutReport",
    "ParityData",
    "ParityProgress",
    "export_parity",
    "fit_parity",
    "heldout_report",
    "load_parity_data",
    "outputs_are_probabilities",
    "probe_lr",
]

HELDOUT_FRACTION = 0.2  # of a data file's rows; digits keeps the base model's own test split
_CHUNK = 256  # rows per forward pass outside training
_MAX_BATCH = 4096  # the exported program's largest batch


@dataclass(frozen=True)
class ParityData:
    """Single inputs ``(N, *input_shape)`` float32 to draw parity queries from, split into
    training and held-out rows; ``label`` says where they came from (written to the parity
    model's config.json), ``digest`` identifies them (a checkpoint's key)."""

    train_x: npt.NDArray[np.float32]
    heldout_x: npt.NDArray[np.float32]
    label: str
    digest: str


def load_parity_data(data: str, input_shape: tuple[int, ...], k: int) -> ParityData:
    """``digits`` (sklearn's digits at ``input_shape``, which must be ``(C, H, W)``: the
    base zoo models' training split, and their test split held out) or a ``.npz`` file with
    an array ``x`` of shape ``(N, *input_shape)`` (a fixed 20 % held out). Raises
    :class:`InputError` for a file of the wrong shape or with NaN/Inf, and
    :class:`DatasetUnavailableError` for a missing or unreadable one."""
    if data == "digits":
        if len(input_shape) != 3:
            raise InputError(
                f"--data digits gives images (C, H, W); the model takes inputs of shape "
                f"{input_shape}: give a .npz file with an array x of shape (N, "
                f"{', '.join(map(str, input_shape))})"
            )
        from codedfarm.models.digits import load_digits_split

        split = load_digits_split((input_shape[0], input_shape[1], input_shape[2]))
        return ParityData(split.train_x, split.test_x, "digits", "digits")
    path = Path(data)
    if path.suffix != ".npz":
        raise InputError(f"--data takes digits or a .npz file with an array x, got {data!r}")
    try:
        raw = path.read_bytes()
        with np.load(path, allow_pickle=False) as archive:
            if "x" not in archive.files:
                raise InputError(f"{path}: no array 'x' (it has: {', '.join(archive.files)})")
            x = archive["x"]
    except InputError:
        raise
    except FileNotFoundError as exc:
        raise DatasetUnavailableError(f"{path}: no such file") from exc
    except (OSError, ValueError) as exc:
        raise DatasetUnavailableError(f"{path}: not a readable .npz file ({exc})") from exc
    expected = f"(N, {', '.join(map(str, input_shape))})"
    if tuple(x.shape[1:]) != tuple(input_shape) or x.ndim != len(input_shape) + 1:
        raise InputError(f"{path}: x has shape {x.shape}; the model takes {expected}")
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise InputError(f"{path}: x must hold real numbers, got dtype {x.dtype}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.isfinite(x).all():
        raise InputError(f"{path}: x holds NaN or Inf")
    heldout = max(k, round(len(x) * HELDOUT_FRACTION))
    if len(x) - heldout < k:
        raise InputError(f"{path}: x has {len(x)} rows; k={k} needs at least {2 * k}")
    order = np.random.default_rng(0).permutation(len(x))
    digest = hashlib.sha256(raw).hexdigest()[:16]
    return ParityData(
        x[order[heldout:]], x[order[:heldout]], f"{path.name} sha256:{digest}", digest
    )


@dataclass(frozen=True)
class FitSettings:
    """How a parity model is trained: ``epochs`` over ``N`` parity queries each (every
    training row in ``k`` random groups per epoch), Adam at ``lr`` with a cosine schedule
    to 0, minibatches of ``batch_size`` queries, on ``threads`` CPU threads."""

    k: int
    epochs: int
    seed: int
    target: str  # "logits" or "probs"
    combine: str = "sum"  # "sum": F_P(P) ≈ Σ T(F(x_i)); "mean": ≈ the mean (probabilities)
    batch_size: int = 64
    lr: float = 1e-3
    threads: int = 1


@dataclass(frozen=True)
class ParityProgress:
    """Where a training run is: minibatch ``step`` of ``steps`` in epoch ``epoch`` (from 1)
    of ``epochs``; ``loss`` the running mean of this epoch's loss (MSE, target units²)."""

    epoch: int
    epochs: int
    step: int
    steps: int
    loss: float


@dataclass(frozen=True)
class HeldoutReport:
    """The parity model on held-out parity queries: ``mse`` of ``F_P(P)`` against
    ``Σ T(F(x_i))`` (per output entry, target units²) and ``agreement``, the fraction of
    reconstructed rows (every one of the ``k`` taken as missing in turn, ``rows`` in all)
    whose top-1 class is the base model's own."""

    mse: float
    agreement: float
    rows: int


@contextmanager
def _torch_settings(threads: int) -> Iterator[None]:
    """Deterministic algorithms on ``threads`` threads, restored afterwards."""
    import torch

    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


def _outputs(module: Any, x: torch.Tensor) -> torch.Tensor:
    import torch

    with torch.no_grad():
        return torch.cat([module(chunk) for chunk in x.split(_CHUNK)])  # type: ignore[no-untyped-call]


def _targets(base: Any, x: npt.NDArray[np.float32], target: str) -> tuple[Any, Any]:
    """The base model's outputs on ``x`` and their target-space values ``T(F(x))``."""
    import torch

    outputs = _outputs(base, torch.from_numpy(x)).float()
    return outputs, outputs.softmax(-1) if target == "probs" else outputs


def _groups(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``(n, k)`` row indices: ``k`` independent permutations side by side."""
    import torch

    return torch.stack([torch.randperm(n, generator=generator) for _ in range(k)], dim=1)


def _state_arrays(net: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    arrays = {f"model/{name}": t.detach().cpu().numpy() for name, t in net.state_dict().items()}
    for index, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            arrays[f"opt/{index}/{name}"] = value.detach().cpu().numpy()
    return arrays


def _save_checkpoint(
    path: Path, key: str, epoch: int, net: nn.Module, optimizer: torch.optim.Optimizer
) -> None:
    """``epoch`` epochs done: the weights, buffers and Adam's moments in one ``.npz``
    (written aside, then renamed into place; never a pickle)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    arrays = _state_arrays(net, optimizer)
    with open(tmp, "wb") as file:
        np.savez(file, key=np.array(key), epoch=np.array(epoch), **arrays)
    os.replace(tmp, path)


def _load_checkpoint(path: Path, key: str, net: nn.Module, optimizer: torch.optim.Optimizer) -> int:
    """Restore a checkpoint written for ``key``; returns the epochs it had done (0: none)."""
    import torch

    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        return 0
    with archive:
        if str(archive["key"]) != key:
            return 0
        state = {name[6:]: torch.from_numpy(archive[name].copy())
                 for name in archive.files if name.startswith("model/")}  # fmt: skip
        moments: dict[int, dict[str, torch.Tensor]] = {}
        for name in archive.files:
            if name.startswith("opt/"):
                _, index, field = name.split("/")
                moments.setdefault(int(index), {})[field] = torch.from_numpy(archive[name].copy())
        epoch = int(archive["epoch"])
    net.load_state_dict(state)
    groups = optimizer.state_dict()["param_groups"]
    optimizer.load_state_dict({"state": moments, "param_groups": groups})
    return epoch


def fit_parity(
    net: nn.Module,
    base: Any,
    data: ParityData,
    settings: FitSettings,
    checkpoint: Path,
    key: str,
    *,
    progress: Callable[[ParityProgress], None] | None = None,
) -> int:
    """Train ``net`` (in place) as the parity model of ``base`` on ``data``; after every
    epoch the state goes to ``checkpoint``, and a checkpoint written for the same ``key``
    is resumed from. Returns the epochs the checkpoint had already done. Deterministic:
    epoch ``e``'s parity queries and dropout draw from ``seed`` and ``e`` alone, so a
    resumed run ends with the weights of an uninterrupted one, bit for bit."""
    import torch

    with _torch_settings(settings.threads):
        _, train_t = _targets(base, data.train_x, settings.target)
        x = torch.from_numpy(data.train_x)
        optimizer = torch.optim.Adam(net.parameters(), lr=settings.lr)
        done = _load_checkpoint(checkpoint, key, net, optimizer) if checkpoint.exists() else 0
        steps = -(-len(x) // settings.batch_size)
        total = settings.epochs * steps
        for epoch in range(done, settings.epochs):
            net.train()
            torch.manual_seed(settings.seed * 100_003 + epoch)  # dropout, if any
            generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
            groups = _groups(len(x), settings.k, generator)
            running = 0.0
            for step, idx in enumerate(groups.split(settings.batch_size)):  # type: ignore[no-untyped-call]
                lr = settings.lr * 0.5 * (1 + math.cos(math.pi * (epoch * steps + step) / total))
                for group in optimizer.param_groups:
                    group["lr"] = lr
                optimizer.zero_grad()
                goal = train_t[idx].sum(1) / (settings.k if settings.combine == "mean" else 1)
                loss = torch.nn.functional.mse_loss(net(x[idx].sum(1)), goal)
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                running += float(loss.detach())
                if progress is not None:
                    progress(ParityProgress(epoch + 1, settings.epochs, step + 1, steps,
                                            running / (step + 1)))  # fmt: skip
            _save_checkpoint(checkpoint, key, epoch + 1, net, optimizer)
        net.eval()
    return done


LR_CANDIDATES = (1e-3, 3e-4, 1e-4)
"""Adam learning rates :func:`probe_lr` tries (1e-3 is ParM's and best for lenet5 and
repvgg; a random-feature CNN ending in a softmax diverged at 1e-3 and learned at 1e-4)."""
PROBE_STEPS = 30  # minibatches per candidate


def probe_lr(net: nn.Module, base: Any, data: ParityData, settings: FitSettings) -> float:
    """The candidate learning rate whose short run from ``net``'s weights ends with the
    lowest loss (the mean of its last 10 minibatches; a copy of ``net`` per candidate, the
    same minibatches, so the choice is deterministic). A rate too large for a model makes
    its loss climb within a few steps; one too small barely moves it."""
    import copy

    import torch

    with _torch_settings(settings.threads):
        _, train_t = _targets(base, data.train_x, settings.target)
        x = torch.from_numpy(data.train_x)
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + 99_991)
        batches = _groups(len(x), settings.k, generator).split(settings.batch_size)  # type: ignore[no-untyped-call]
        batches = [batches[i % len(batches)] for i in range(PROBE_STEPS)]
        scale = settings.k if settings.combine == "mean" else 1
        best: tuple[float, float] | None = None
        for lr in LR_CANDIDATES:
            with torch.no_grad():  # a TorchScript module's copy would clone with autograd
                trial = copy.deepcopy(net)
            for parameter in trial.parameters():
                parameter.requires_grad_(True)
            trial.train()
            optimizer = torch.optim.Adam(trial.parameters(), lr=lr)
            losses = []
            for idx in batches:
                optimizer.zero_grad()
                loss = torch.nn.functional.mse_loss(trial(x[idx].sum(1)),
                                                    train_t[idx].sum(1) / scale)  # fmt: skip
                loss.backward()  # type: ignore[no-untyped-call]
                optimizer.step()
                losses.append(float(loss.detach()))
            final = float(np.mean(losses[-10:]))
            if math.isfinite(final) and (best is None or final < best[1]):
                best = (lr, final)
    return LR_CANDIDATES[0] if best is None else best[0]


def heldout_report(
    net: Any, base: Any, data: ParityData, k: int, target: str, combine: str = "sum"
) -> HeldoutReport:
    """The parity model on held-out queries: ``k`` fixed permutations of the held-out rows
    grouped side by side (the same queries for every seed, so runs compare). MSE in the
    parity model's own units (a sum, or a mean under ``combine="mean"``)."""
    import torch

    with _torch_settings(torch.get_num_threads()):
        outputs, values = _targets(base, data.heldout_x, target)
        x = torch.from_numpy(data.heldout_x)
        groups = _groups(len(x), k, torch.Generator().manual_seed(12345))
        parity = _outputs(net, x[groups].sum(1)).float()
    total = values[groups].sum(1)
    scale = k if combine == "mean" else 1
    mse = float(((parity - total / scale) ** 2).mean())
    agree = 0
    for i in range(k):
        reconstructed = scale * parity - (total - values[groups[:, i]])
        agree += int((reconstructed.argmax(-1) == outputs[groups[:, i]].argmax(-1)).sum())
    return HeldoutReport(mse, agree / (k * len(groups)), k * len(groups))


def outputs_are_probabilities(base: Any, x: npt.NDArray[np.float32]) -> bool:
    """True when ``base``'s outputs on ``x`` (its first rows) are probability vectors (>= 0,
    summing to 1 over the last axis): a model that ends in a softmax, whose parity model
    (the same architecture) can only output probability vectors too, so it is trained on
    the mean of the outputs instead of their sum (``combine="mean"``)."""
    import torch

    outputs = _outputs(base, torch.from_numpy(x[:_CHUNK])).double()
    return bool(
        (outputs >= 0).all() and torch.allclose(outputs.sum(-1), torch.ones(1).double(), atol=1e-4)
    )


def export_parity(net: Any, input_shape: tuple[int, ...], folder: Path) -> Path:
    """Write ``net`` (eval mode) as the workers load it: a TorchScript module as
    ``model.pt`` (``torch.jit.save``), anything else as ``model.pt2`` (``torch.export``, a
    dynamic batch dimension up to 4096 rows). Returns the file."""
    import torch

    net = net.eval()
    if isinstance(net, torch.jit.ScriptModule):
        path = folder / "model.pt"
        with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; the base is one
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(net, str(path))
        return path
    path = folder / "model.pt2"
    batch = torch.export.Dim("batch", min=1, max=_MAX_BATCH)
    example = (torch.zeros((2, *input_shape)),)
    program = torch.export.export(net, example, dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def seconds_since(start: float) -> float:
    """Wall seconds since ``start`` (``time.perf_counter``), rounded to 0.01."""
    return round(time.perf_counter() - start, 2)
