"""The training use: distributed SGD of a softmax (multinomial logistic) regression, each
worker taking local gradient steps on the batch the shuffle just gave it, the master
averaging the workers' weights after every epoch (local SGD / model averaging).

Rows are float64 ``[x_1 .. x_F, label]`` (:func:`training_rows`), sent as raw bytes; the
weights ``(F+1, classes)`` float64 (the last row the bias) travel as raw bytes too. Every
step is a fixed function of (weights, batch, seed, epoch, worker), so two runs whose
workers hold the same batches end with the same weights, bit for bit, whatever the scheme.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from codedfarm.errors import InputError

__all__ = ["TrainSpec", "accuracy", "average", "local_sgd", "training_rows"]

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TrainSpec:
    """``features`` F inputs, ``classes`` labels, ``lr`` the step size, ``local_steps``
    minibatch steps per worker per epoch of ``batch_size`` rows each."""

    features: int
    classes: int
    lr: float = 0.5
    local_steps: int = 20
    batch_size: int = 32

    @property
    def shape(self) -> tuple[int, int]:
        return (self.features + 1, self.classes)

    def zeros(self) -> Floats:
        return np.zeros(self.shape, dtype=np.float64)


def training_rows(x: npt.NDArray[np.generic], y: npt.NDArray[np.generic]) -> Floats:
    """``(q, F)`` inputs and ``(q,)`` integer labels -> ``(q, F+1)`` float64 rows."""
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise InputError(f"training rows need x (q, F) and y (q,), got {x.shape} and {y.shape}")
    return np.column_stack([x.astype(np.float64), y.astype(np.float64)])


def _split(rows: Floats) -> tuple[Floats, npt.NDArray[np.int64]]:
    x = np.column_stack([rows[:, :-1], np.ones(len(rows))])
    return x, rows[:, -1].astype(np.int64)


def _softmax(z: Floats) -> Floats:
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: Floats = e / e.sum(axis=1, keepdims=True)
    return out


def local_sgd(weights: Floats, rows: Floats, spec: TrainSpec, seed: tuple[int, ...]) -> Floats:
    """``spec.local_steps`` minibatch gradient steps of the cross-entropy on ``rows``
    ``(b, F+1)`` from ``weights`` ``(F+1, classes)``; minibatches drawn with ``seed``."""
    x, y = _split(rows)
    w: Floats = weights.copy()
    rng = np.random.default_rng(list(seed))
    size = min(spec.batch_size, len(x))
    onehot = np.eye(spec.classes)[y]
    for _ in range(spec.local_steps):
        pick = rng.choice(len(x), size=size, replace=False)
        p = _softmax(x[pick] @ w)
        w -= spec.lr * (x[pick].T @ (p - onehot[pick])) / size
    return w


def average(weights: list[Floats]) -> Floats:
    """The workers' weights averaged, in worker order."""
    out: Floats = np.mean(np.stack(weights), axis=0)
    return out


def accuracy(weights: Floats, rows: Floats) -> float:
    """Fraction of ``rows`` ``(m, F+1)`` whose label is the model's top class."""
    x, y = _split(rows)
    return float(np.mean(np.argmax(x @ weights, axis=1) == y))
