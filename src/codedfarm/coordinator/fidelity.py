"""Fidelity sampling: for a sampled fraction of batches (``CODEDFARM_FIDELITY_SAMPLE``) the
K raw inputs also run uncoded (reference tasks ``n..n+k-1``), and once every reference
result is in, the collector reports the decode's MSE against them (a metric) and, for the
rows the decoder reconstructed (not answered from their own result), how many have the
reference's argmax (the decoded rows' agreement: what a systematic code's users watch)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import redis

from codedfarm.errors import ProtocolError
from codedfarm.protocol import BatchRegistration, array_from_bytes

__all__ = ["FidelitySampler"]

log = logging.getLogger(__name__)


@dataclass
class _Sampled:
    """A decoded batch waiting for its uncoded reference results."""

    reg: BatchRegistration
    codec: str
    predictions: np.ndarray
    references: set[int]
    expires_at: float
    decoded_rows: list[int]


class FidelitySampler:
    """Decoded sampled batches, until their reference results are in (or they expire).

    ``report(codec, model, mse)`` receives each measurement, ``report_rows(codec, model,
    checked, agreed)`` the decoded rows' agreement (batches with decoded rows); ``cleanup``
    collects the keys the collector deletes at its next poll.
    """

    def __init__(
        self,
        client: redis.Redis,
        report: Callable[[str, str, float], None],
        cleanup: Callable[[list[str]], None],
        report_rows: Callable[[str, str, int, int], None] | None = None,
    ) -> None:
        self.redis = client
        self._report = report
        self._report_rows = report_rows
        self._cleanup = cleanup
        self._sampled: dict[str, _Sampled] = {}

    def add(
        self, reg: BatchRegistration, codec: str, predictions: np.ndarray, references: set[int],
        expires_at: float, decoded_rows: list[int] | None = None,
    ) -> None:  # fmt: skip
        """A sampled batch was decoded; ``references`` are the reference results already in,
        ``decoded_rows`` the rows the decoder reconstructed (None: every row)."""
        rows = list(range(reg.k)) if decoded_rows is None else list(decoded_rows)
        self._sampled[reg.batch] = _Sampled(reg, codec, predictions, set(references), expires_at,
                                            rows)  # fmt: skip
        self._check(reg.batch)

    def on_reference(self, batch: str, index: int, ok: bool) -> bool:
        """A notice for task ``index`` of ``batch``; True if it was a reference result of a
        sampled batch (and so consumed here)."""
        sampled = self._sampled.get(batch)
        if sampled is None or index < sampled.reg.n:
            return False
        if ok:
            sampled.references.add(index - sampled.reg.n)
            self._check(batch)
        return True

    def _check(self, batch: str) -> None:
        """Once every reference result of a sampled batch is in: MSE of the decode against it."""
        sampled = self._sampled[batch]
        reg = sampled.reg
        if len(sampled.references) < reg.k:
            return
        del self._sampled[batch]
        raw = self.redis.hmget(reg.output_key, [str(reg.n + i) for i in range(reg.k)])
        self._cleanup([reg.output_key, reg.reference_key])
        try:
            shape = list(sampled.predictions.shape[1:])
            truth = np.stack([array_from_bytes(r or b"", "float32", shape) for r in raw])
        except ProtocolError as exc:
            log.warning("batch %s: reference results unusable: %s", batch, exc)
            return
        flat, reference = sampled.predictions.reshape(reg.k, -1), truth.reshape(reg.k, -1)
        mse = float(np.mean(np.sum((flat - reference) ** 2, axis=1)))
        self._report(sampled.codec, reg.model, mse)
        rows = sampled.decoded_rows
        if rows and self._report_rows is not None:
            agreed = int(np.sum(flat[rows].argmax(1) == reference[rows].argmax(1)))
            self._report_rows(sampled.codec, reg.model, len(rows), agreed)

    def expire(self, now: float) -> None:
        """Forget sampled batches whose reference results did not come in time."""
        for batch in [b for b, s in self._sampled.items() if s.expires_at <= now]:
            del self._sampled[batch]
