"""``codedfarm shuffle`` on this machine: the data (sklearn's digits or a ``.npy`` file), a
private redis-server unless a Redis URL was given, and :func:`codedfarm.shuffle.run_shuffle`
with the workers as processes."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from codedfarm.errors import InputError
from codedfarm.local.redis_server import LocalRedis
from codedfarm.shuffle import (
    EpochReport,
    ShuffleConfig,
    ShuffleReport,
    TrainSpec,
    check_shuffle,
    run_shuffle,
)
from codedfarm.shuffle.training import training_rows

__all__ = [
    "PreparedShuffle",
    "digits_rows",
    "digits_training",
    "load_rows",
    "prepare_shuffle",
    "shuffle_locally",
]

DIGITS_CLASSES = 10


def digits_rows() -> npt.NDArray[np.float64]:
    """sklearn's digits as rows ``(1797, 64)`` float64 (pixel values 0..16): 512 bytes a row."""
    from sklearn.datasets import load_digits

    data: npt.NDArray[np.float64] = load_digits().data.astype(np.float64)
    return data


def digits_training(seed: int = 0, test_fraction: float = 0.2
                    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:  # fmt: skip
    """The training use's rows: digits pixels scaled to [0, 1] plus the label, shuffled
    with ``seed`` and split into training ``(1438, 65)`` and test ``(359, 65)`` rows."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rows = training_rows(digits.data / 16.0, digits.target)
    order = np.random.default_rng(seed).permutation(len(rows))
    cut = round(len(rows) * (1 - test_fraction))
    return rows[order[:cut]], rows[order[cut:]]


def load_rows(path: Path) -> npt.NDArray[np.generic]:
    """The array of a ``.npy`` file (no pickled objects); :class:`InputError` in one line if
    it cannot be read."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"cannot read {path} as a .npy array: {reason}") from exc
    if not isinstance(data, np.ndarray):
        raise InputError(f"{path} holds several arrays (.npz); give one .npy array")
    return data


@contextlib.contextmanager
def _redis(url: str | None) -> Iterator[str]:
    if url is not None:
        yield url
        return
    with LocalRedis() as server:
        yield server.url


@dataclass(frozen=True)
class PreparedShuffle:
    """A run's checked rows, and the training use's spec and held-out rows (or None)."""

    data: npt.NDArray[np.generic]
    train: TrainSpec | None = None
    test_rows: npt.NDArray[np.float64] | None = None


def prepare_shuffle(
    config: ShuffleConfig, data: npt.NDArray[np.generic] | None = None, *, train: bool = False
) -> PreparedShuffle:
    """The rows to shuffle, checked (:class:`InputError`, :class:`ConfigError`) before any
    Redis or process is started. ``data`` None: the digits; ``train``: the training use on
    the digits (softmax regression, accuracy on held-out rows after every epoch)."""
    if train:
        if data is not None:
            raise InputError("the training use trains on the digits: give no --data with --train")
        rows, test_rows = digits_training(config.seed)
        prepared = PreparedShuffle(rows, TrainSpec(rows.shape[1] - 1, DIGITS_CLASSES), test_rows)
    else:
        prepared = PreparedShuffle(digits_rows() if data is None else data)
    check_shuffle(prepared.data, config)
    return prepared


def shuffle_locally(
    config: ShuffleConfig,
    prepared: PreparedShuffle,
    *,
    redis_url: str | None = None,
    key_prefix: str = "cf",
    progress: Callable[[EpochReport], None] | None = None,
    kill_at: tuple[int, int] | None = None,
) -> ShuffleReport:
    """Run a shuffle of ``prepared`` (:func:`prepare_shuffle`) on the Redis at ``redis_url``
    (None: a private redis-server, stopped after, also on Ctrl-C)."""
    with _redis(redis_url) as url:
        return run_shuffle(prepared.data, config, url, key_prefix=key_prefix,
                           train=prepared.train, test_rows=prepared.test_rows,
                           progress=progress, kill_at=kill_at)  # fmt: skip
