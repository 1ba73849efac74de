"""Settings from ``CODEDFARM_*`` environment variables, as one frozen value object."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from codedfarm.errors import ConfigError

__all__ = ["Settings"]


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "codedfarm"


@dataclass(frozen=True)
class Settings:
    """Farm-wide settings. ``Settings.from_env()`` reads ``CODEDFARM_<FIELD>`` for each field.

    Units: seconds for times, bytes for sizes.
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

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then ``CODEDFARM_*`` variables, then ``overrides`` (None values ignored)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"CODEDFARM_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _parse(f.name, str(f.type), raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        try:
            settings = cls(**values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise ConfigError(f"bad settings: {exc}") from exc
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.key_ttl <= 0:
            raise ConfigError(f"CODEDFARM_KEY_TTL must be > 0 seconds, got {self.key_ttl}")
        if self.deadline <= 0:
            raise ConfigError(f"CODEDFARM_DEADLINE must be > 0 seconds, got {self.deadline}")
        if self.max_batch_bytes <= 0:
            raise ConfigError(f"CODEDFARM_MAX_BATCH_BYTES must be > 0, got {self.max_batch_bytes}")
        if not 0.0 <= self.fidelity_sample <= 1.0:
            raise ConfigError(
                f"CODEDFARM_FIDELITY_SAMPLE must be in [0, 1], got {self.fidelity_sample}"
            )
        if self.max_workers < 1:
            raise ConfigError(f"CODEDFARM_MAX_WORKERS must be >= 1, got {self.max_workers}")
        if not self.queues or any(not q for q in self.queues):
            raise ConfigError(f"CODEDFARM_QUEUES must name at least one queue, got {self.queues}")
        if not self.key_prefix or ":" in self.key_prefix:
            raise ConfigError(
                f"CODEDFARM_KEY_PREFIX must be non-empty without ':', got {self.key_prefix!r}"
            )


def _parse(name: str, kind: str, raw: str) -> object:
    env_name = f"CODEDFARM_{name.upper()}"
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
