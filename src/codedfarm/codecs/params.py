"""Codec parameter values as specs write them: bools (``berrut:systematic=true``)."""

from __future__ import annotations

import numpy as np

from codedfarm.errors import CodecParameterError

__all__ = ["BOOL_WORDS", "check_bool", "format_param"]

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
