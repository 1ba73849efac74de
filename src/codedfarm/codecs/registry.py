"""Codec names, construction from keyword arguments, and codec spec strings."""

from __future__ import annotations

from typing import Any

from codedfarm.codecs.base import Codec, byzantine_unsupported
from codedfarm.codecs.berrut import BerrutCodec
from codedfarm.codecs.lagrange import LagrangeCodec
from codedfarm.codecs.mds import MDSCodec
from codedfarm.codecs.params import check_bool
from codedfarm.codecs.parm import ParmCodec
from codedfarm.codecs.replication import ReplicationCodec, UncodedCodec
from codedfarm.codecs.spline import LetccCodec, SplineCodec
from codedfarm.codecs.systematic import systematic_unsupported
from codedfarm.errors import CodecParameterError, UnknownCodecError

__all__ = ["CODECS", "available_codecs", "codec_class", "make_codec", "parse_codec_spec"]

CODECS: dict[str, type[Codec]] = {
    cls.name: cls
    for cls in (
        UncodedCodec,
        ReplicationCodec,
        MDSCodec,
        LagrangeCodec,
        BerrutCodec,
        SplineCodec,
        LetccCodec,
        ParmCodec,
    )
}


def available_codecs() -> list[str]:
    """Names accepted by :func:`make_codec`, in a stable order."""
    return list(CODECS)


def codec_class(name: str) -> type[Codec]:
    """The codec class registered as ``name``; raises :class:`UnknownCodecError`."""
    try:
        return CODECS[name]
    except KeyError as exc:
        raise UnknownCodecError(
            f"unknown codec {name!r}; available: {', '.join(available_codecs())}"
        ) from exc


def make_codec(name: str, k: int, n: int | None = None, **params: Any) -> Codec:
    """Build codec ``name`` for ``k`` inputs and ``n`` workers (``n`` defaults to ``k``)."""
    cls = codec_class(name)
    if "byzantine" in params and "byzantine" not in cls.PARAMS:
        if params["byzantine"]:
            raise CodecParameterError(byzantine_unsupported(name))
        params = {key: value for key, value in params.items() if key != "byzantine"}
    if "systematic" in params and "systematic" not in cls.PARAMS:
        if check_bool(name, "systematic", params["systematic"]):
            raise CodecParameterError(systematic_unsupported(name))
        params = {key: value for key, value in params.items() if key != "systematic"}
    unknown = sorted(set(params) - set(cls.PARAMS) - {"cache_size"})
    if unknown:
        allowed = ", ".join(cls.PARAMS) or "none"
        raise CodecParameterError(
            f"{name}: unknown parameter(s) {', '.join(unknown)}; allowed: {allowed}"
        )
    return cls(k, k if n is None else n, **params)


def parse_codec_spec(spec: str) -> tuple[str, dict[str, Any]]:
    """Split ``"spline:lam_enc=1e-6,lam_dec=auto"`` into a name and typed parameters
    (bools written ``true``/``false`` or ``1``/``0``: ``berrut:systematic=true``)."""
    name, _, rest = spec.strip().partition(":")
    name = name.strip()
    if name not in CODECS:
        raise UnknownCodecError(
            f"unknown codec {name!r} in spec {spec!r}; available: {', '.join(available_codecs())}"
        )
    kinds = CODECS[name].PARAMS
    params: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if key == "byzantine" and sep and key not in kinds:
            raise CodecParameterError(byzantine_unsupported(name))
        if key == "systematic" and sep and key not in kinds:
            raise CodecParameterError(systematic_unsupported(name))
        if not sep or key not in kinds:
            allowed = ", ".join(kinds) or "none"
            raise CodecParameterError(
                f"{name}: bad parameter {item!r} in spec {spec!r}; allowed: {allowed}"
            )
        if key in ("lam_dec", "sigma") and value == "auto":
            params[key] = "auto"
            continue
        if kinds[key] is bool:
            params[key] = check_bool(name, key, value)
            continue
        try:
            params[key] = kinds[key](value)
        except ValueError as exc:
            raise CodecParameterError(
                f"{name}: parameter {key} must be {kinds[key].__name__}, got {value!r}"
            ) from exc
    return name, params
