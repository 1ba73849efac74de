"""Codec parameter values as specs write them (bools: ``berrut:systematic=true``), and the
check of a decode's worker ids."""

from __future__ import annotations

import operator
from collections import Counter
from collections.abc import Iterable

import numpy as np

from codedfarm.errors import CodecParameterError, WorkerSetError

__all__ = ["BOOL_WORDS", "check_bool", "check_workers", "format_param"]

BOOL_WORDS = {"true": True, "1": True, "false": False, "0": False}
"""How a spec writes a bool parameter, case-insensitive."""


def check_bool(codec: str, name: str, value: object) -> bool:
    """``value`` as a bool: a bool, or one of :data:`BOOL_WORDS` (spec text), else
    :class:`CodecParameterError`."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in BOOL_WORDS:
        return BOOL_WORDS[value.strip().lower()]
    raise CodecParameterError(f"{codec}: {name} must be true or false (also 1 or 0), got {value!r}")


def format_param(value: object) -> str:
    """A parameter value as a spec writes it (bools as ``true``/``false``)."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    return str(value)


def check_workers(codec: str, n: int, workers: Iterable[int]) -> tuple[int, ...]:
    """``workers`` as a tuple of distinct ints in ``[0, n)``, else :class:`WorkerSetError`."""
    try:
        ids = tuple(operator.index(w) for w in workers)
    except TypeError as exc:
        raise WorkerSetError(f"{codec}: worker ids must be integers in [0, {n}): {exc}") from exc
    for w in ids:
        if not 0 <= w < n:
            raise WorkerSetError(f"{codec}: worker id {w} is out of range [0, {n}) (n={n})")
    if len(set(ids)) != len(ids):
        repeated = sorted(w for w, count in Counter(ids).items() if count > 1)
        raise WorkerSetError(
            f"{codec}: worker ids must not repeat; repeated {repeated} among {len(ids)} workers"
        )
    return ids
