"""Wrong results on purpose: a worker fault for testing ``byzantine`` decoding.

A worker started with ``--corrupt MODE:p=P`` replaces each of its outputs, with probability
``P``, by a wrong one (a testing facility, like ``--straggle``; never for production)::

    none
    large:p=0.2     output + noise of 100x the output's spread (a faulty GPU, garbage)
    subtle:p=0.2    output + noise of the output's spread (one standard deviation of its
                    entries): wrong, but of the size of honest outputs
    swap:p=0.2      the output's entries rotated along its last (class) axis: a plausible
                    answer for another class (still a probability vector, if it was one)

The spread of an output is the standard deviation of its entries (1 where they are all
equal), so the fault scales with whatever the model returns: logits or probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from codedfarm.errors import ConfigError

__all__ = ["CORRUPTION_MODES", "CorruptionSpec", "corrupt_rows", "parse_corruption_spec"]

CORRUPTION_MODES = ("none", "large", "subtle", "swap")
NOISE = {"large": 100.0, "subtle": 1.0}
"""Noise standard deviation in units of the output's spread."""


def corrupt_rows(rows: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    """``rows`` ``(G, *out_shape)`` made wrong by ``mode`` (a new array)."""
    out = np.array(rows, copy=True)
    if not out.size:
        return out
    if mode == "swap":
        flat = out.reshape(-1, out.shape[-1])  # a view: out is a fresh copy
        shifts = rng.integers(1, max(flat.shape[1], 2), len(flat))
        for row, shift in zip(flat, shifts, strict=True):
            row[:] = np.roll(row.copy(), int(shift))
        return out
    flat = out.reshape(len(out), -1)
    spread = flat.std(axis=1, keepdims=True)
    spread[spread == 0] = 1.0
    flat += rng.standard_normal(flat.shape) * spread * NOISE[mode]
    return flat.reshape(out.shape)


@dataclass(frozen=True)
class CorruptionSpec:
    """``mode`` (a key of :data:`CORRUPTION_MODES`) applied to a fraction ``p`` of outputs."""

    mode: str = "none"
    p: float = 0.0

    @property
    def active(self) -> bool:
        return self.mode != "none" and self.p > 0

    def apply(self, outputs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, int]:
        """``outputs`` ``(G, *out_shape)`` with each row corrupted with probability ``p``;
        returns the (new) array and the number of rows corrupted."""
        if not self.active:
            return outputs, 0
        hit = rng.random(len(outputs)) < self.p
        if not hit.any():
            return outputs, 0
        out = np.array(outputs, dtype=np.float32, copy=True)
        out[hit] = corrupt_rows(out[hit], self.mode, rng).astype(np.float32)
        return out, int(hit.sum())

    def __str__(self) -> str:
        return "none" if self.mode == "none" else f"{self.mode}:p={self.p:g}"


def parse_corruption_spec(text: str) -> CorruptionSpec:
    """``"large:p=0.2"`` -> :class:`CorruptionSpec`; raises :class:`ConfigError`."""
    mode, _, rest = text.strip().partition(":")
    if mode not in CORRUPTION_MODES:
        raise ConfigError(
            f"--corrupt: unknown mode {mode!r} in {text!r}; use none, large:p=P, subtle:p=P "
            "or swap:p=P"
        )
    if mode == "none":
        if rest:
            raise ConfigError(f"--corrupt: 'none' takes no parameters, got {text!r}")
        return CorruptionSpec()
    key, sep, value = rest.partition("=")
    try:
        p = float(value) if sep and key.strip() == "p" else float("nan")
    except ValueError:
        p = float("nan")
    if not 0.0 < p <= 1.0:
        raise ConfigError(f"--corrupt: {mode} needs p in (0, 1], as {mode}:p=0.2; got {text!r}")
    return CorruptionSpec(mode, p)
