"""A codec spec parsed once: what the farm and the evaluation need to know about a code.

>>> plan = plan_codec("letcc")
>>> plan.exact, plan.takes_s, plan.default_n(k=8, s=4)
(False, True, 24)
>>> codec = plan.codec(k=8, n=24, s=4)     # built once per (spec, k, n, s) and shared

Everything that depends on the codec class (exactness, the default n, whether S is a
parameter) comes from the class, not from lists kept elsewhere.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from codedfarm.codecs.base import Codec
from codedfarm.codecs.params import format_param
from codedfarm.codecs.registry import codec_class, make_codec, parse_codec_spec

__all__ = ["DEFAULT_CODEC", "CodecPlan", "plan_codec"]

DEFAULT_CODEC = "spline"
"""The codec of a batch when neither the batch, its model's ``config.json`` nor the server
names one."""

SHARED_CODECS = 64
"""Codecs (with their decoder caches) kept for reuse across batches."""


@dataclass(frozen=True)
class CodecPlan:
    """A parsed codec spec: ``name`` and its typed ``params`` as given (sorted pairs)."""

    name: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def cls(self) -> type[Codec]:
        return codec_class(self.name)

    @property
    def exact(self) -> bool:
        """True for codes that decode exactly (for the functions they are made for)."""
        return self.cls.exact

    @property
    def takes_s(self) -> bool:
        """True if the code's parameters depend on S (``letcc``)."""
        return self.cls.takes_s

    def parameters(self, s: int = 0) -> dict[str, Any]:
        """Keyword arguments for :func:`make_codec`: the spec's, plus ``s`` where the code
        takes it and the spec does not set it."""
        params = dict(self.params)
        if self.takes_s:
            params.setdefault("s", s)
        return params

    @property
    def exact_degree(self) -> int | None:
        """The highest polynomial degree of f this code is exact for (None: any f, or the
        code is approximate)."""
        return self.cls.exact_degree(dict(self.params))

    @property
    def exact_for_any_model(self) -> bool:
        """True for codes whose decode is the model's own output whatever the model
        (uncoded, replication): there is no decode error to sample."""
        return self.exact and self.exact_degree is None

    def default_wait_for(self, k: int, n: int, s: int) -> int:
        """Results a batch of ``k`` inputs on ``n`` workers decodes at by default."""
        return self.cls.default_wait_for(k, n, s)

    def fit_workers(self, k: int, n: int, s: int) -> tuple[int, int]:
        """``(n, s)`` for ``k`` inputs within a worker budget ``n`` tolerating ``s``."""
        return self.cls.fit_workers(k, n, s)

    def default_n(self, k: int, s: int) -> int:
        """Workers for ``k`` inputs tolerating ``s`` stragglers when the batch names none."""
        return self.cls.default_n(k, s, dict(self.params))

    def codec(self, k: int, n: int, s: int = 0) -> Codec:
        """The codec for ``k`` inputs on ``n`` workers, built once and shared (codecs keep
        no per-decode state, so sharing is safe across batches and threads)."""
        return _shared_codec(self.name, k, n, tuple(sorted(self.parameters(s).items())))

    @property
    def spec(self) -> str:
        """The spec in canonical form, e.g. ``spline:lam_dec=auto``."""
        if not self.params:
            return self.name
        return f"{self.name}:" + ",".join(
            f"{key}={format_param(value)}" for key, value in self.params
        )


@functools.lru_cache(maxsize=256)
def plan_codec(spec: str) -> CodecPlan:
    """Parse ``spec`` (``"spline:lam_enc=0,lam_dec=auto"``) once; raises
    :class:`~codedfarm.errors.UnknownCodecError` or
    :class:`~codedfarm.errors.CodecParameterError`."""
    name, params = parse_codec_spec(spec)
    return CodecPlan(name, tuple(sorted(params.items())))


@functools.lru_cache(maxsize=SHARED_CODECS)
def _shared_codec(name: str, k: int, n: int, params: tuple[tuple[str, Any], ...]) -> Codec:
    return make_codec(name, k, n, **dict(params))
