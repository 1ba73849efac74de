"""Settings from ``CODEDFARM_*`` environment variables, as one frozen value object.

A :class:`Settings` checks every field when it is built, however it is built (directly,
by ``dataclasses.replace`` or by :meth:`Settings.from_env`): a bad value raises
:class:`~codedfarm.errors.ConfigError` naming the field and its variable. The rules the
other configuration objects share live here too: :func:`check_queue_names` (the one rule
for queue names), :func:`check_int` and :func:`check_float`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codedfarm.errors import ConfigError

__all__ = [
    "REMOVED_IN",
    "Settings",
    "check_float",
    "check_int",
    "check_queue_names",
    "deprecation_message",
    "setting_variable",
]

REMOVED_IN = "0.3"
"""The release that drops the deprecated spellings (options and environment variables)."""


_OLD_VARIABLE = r"CODEDFARM_\w+ is deprecated and will be removed in codedfarm "
# an old variable's DeprecationWarning is shown by default (unlike other DeprecationWarnings
# outside __main__): whoever set the variable is the one to tell
warnings.filterwarnings("default", message=_OLD_VARIABLE, category=DeprecationWarning)


def deprecation_message(old: str, new: str) -> str:
    """The one wording of a deprecated spelling ``old`` replaced by ``new`` (a
    ``DeprecationWarning``'s; an old ``CODEDFARM_*`` variable's is shown by default)."""
    return (f"{old} is deprecated and will be removed in codedfarm {REMOVED_IN}; use {new} "
            f"(old spellings work until {REMOVED_IN})")  # fmt: skip


def setting_variable(name: str) -> str:
    """The environment variable of the setting ``name``: ``CODEDFARM_<NAME>``."""
    return f"CODEDFARM_{name.upper()}"


def check_queue_names(names: Iterable[str], what: str = "queues") -> tuple[str, ...]:
    """The one rule for queue names (settings, workers, the dispatcher): at least one name,
    each non-empty, without ``:``, ``,`` or whitespace. Returns them as a tuple; raises
    :class:`ConfigError` naming ``what``. A lone string is not a list of names."""
    if isinstance(names, (str, bytes)) or not isinstance(names, Iterable):
        raise ConfigError(f"{what} must be a list of queue names, got {names!r}")
    result = tuple(names)
    if not result:
        raise ConfigError(f"{what} must name at least one queue, got {result!r}")
    if any(not isinstance(q, str) or not q or any(c in ":," or c.isspace() for c in q)
           for q in result):  # fmt: skip
        raise ConfigError(
            f"{what}: queue names must be non-empty without ':', ',' or whitespace, got {result!r}"
        )
    return result


def check_int(value: object, what: str, *, minimum: int | None = None,
              maximum: int | None = None) -> int:  # fmt: skip
    """``value`` as an int in ``[minimum, maximum]``; raises :class:`ConfigError` naming
    ``what``. Booleans and floats are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ConfigError(f"{what} must be an integer, got {value!r}")
    number = int(value)
    if minimum is not None and number < minimum:
        raise ConfigError(f"{what} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{what} must be <= {maximum}, got {number}")
    return number


def check_float(
    value: object,
    what: str,
    *,
    minimum: float | None = None,
    above: float | None = None,
    maximum: float | None = None,
    unit: str = "",
) -> float:
    """``value`` as a finite float, ``>= minimum``, ``> above`` and ``<= maximum``; raises
    :class:`ConfigError` naming ``what``. Booleans and strings are refused."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    number = float(value)
    suffix = f" {unit}" if unit else ""
    if not math.isfinite(number):
        raise ConfigError(f"{what} must be a finite number, got {value}")
    if above is not None and not number > above:
        raise ConfigError(f"{what} must be > {above:g}{suffix}, got {value}")
    if minimum is not None and number < minimum:
        raise ConfigError(f"{what} must be >= {minimum:g}{suffix}, got {value}")
    if maximum is not None and number > maximum:
        raise ConfigError(f"{what} must be <= {maximum:g}{suffix}, got {value}")
    return number


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codedfarm"


@dataclass(frozen=True)
class Settings:
    """Farm-wide settings. ``Settings.from_env()`` reads ``CODEDFARM_<FIELD>`` for each field.

    Units: seconds for times, bytes for sizes. Every field is checked when the object is
    built (a list for ``queues`` becomes a tuple, a string for a path a Path).
    """

    redis_url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = "cf"
    queues: tuple[str, ...] = ("cpu",)
    key_ttl: float = 600.0  # every key the farm writes expires after this
    deadline: float = 30.0  # default batch deadline after submit
    max_batch_bytes: int = 256 * 1024 * 1024
    max_workers: int = 1024  # largest n a batch may use
    collector: str = ""  # name of a collector service to use; empty: in-process
    cache_dir: Path = field(default_factory=_default_cache_dir)
    model_repository: Path | None = None  # a Triton-style folder of the user's models
    fidelity_sample: float = 0.0  # fraction of batches also computed uncoded (decode MSE)
    visibility_timeout: float = 0.0  # unacked tasks of dead workers return after this; 0: key_ttl
    late_after: float = 1.0  # a missing own result is late after this fraction of the time its
    # batch took to get enough results to decode (then its row is decoded; docs/serve.md)

    def __post_init__(self) -> None:
        def what(name: str) -> str:
            return f"{name} ({setting_variable(name)})"

        def put(name: str, value: object) -> None:
            object.__setattr__(self, name, value)

        for name in ("redis_url", "key_prefix", "collector"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"{what(name)} must be a string, got {getattr(self, name)!r}")
        if not self.redis_url:
            raise ConfigError(f"{what('redis_url')} must not be empty")
        if not self.key_prefix or ":" in self.key_prefix:
            raise ConfigError(
                f"{what('key_prefix')} must be non-empty without ':', got {self.key_prefix!r}"
            )
        put("queues", check_queue_names(self.queues, what("queues")))
        put("key_ttl", check_float(self.key_ttl, what("key_ttl"), above=0, unit="seconds"))
        put("deadline", check_float(self.deadline, what("deadline"), above=0, unit="seconds"))
        put("max_batch_bytes", check_int(self.max_batch_bytes, what("max_batch_bytes"), minimum=1))
        put("max_workers", check_int(self.max_workers, what("max_workers"), minimum=1))
        put("cache_dir", _path(self.cache_dir, what("cache_dir")))
        if self.model_repository is not None:
            put("model_repository", _path(self.model_repository, what("model_repository")))
        put("fidelity_sample", check_float(
            self.fidelity_sample, what("fidelity_sample"), minimum=0, maximum=1))  # fmt: skip
        put("late_after", check_float(self.late_after, what("late_after"), minimum=0))
        put("visibility_timeout", check_float(
            self.visibility_timeout, what("visibility_timeout"), minimum=0, unit="seconds"
        ))  # fmt: skip

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``CODEDFARM_*`` variables, then ``overrides`` (None values ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(setting_variable(f.name))
            if raw is not None:
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            return cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:  # an override that is no setting
            raise ConfigError(f"bad settings: {exc}") from exc

    def validate(self) -> Settings:
        """Returns self: a Settings is checked when it is built (kept for old callers)."""
        return self


def _path(value: object, what: str) -> Path:
    if isinstance(value, Path):
        return value
    if isinstance(value, (str, os.PathLike)) and str(value):
        return Path(value)
    raise ConfigError(f"{what} must be a path, got {value!r}")


def _parse(name: str, kind: str, raw: str) -> object:
    env_name = setting_variable(name)
    try:
        if "tuple" in kind:
            return tuple(part.strip() for part in raw.split(",") if part.strip())
        if kind == "float":
            return float(raw)
        if kind == "int":
            return int(raw)
        if "Path" in kind:
            return Path(raw).expanduser() if raw or "None" not in kind else None
    except ValueError as exc:
        raise ConfigError(f"{env_name} must be a {kind}, got {raw!r}") from exc
    return raw
