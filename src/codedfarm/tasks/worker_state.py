"""Per-process worker state: options, the Redis client and the loaded models.

Everything here is created lazily inside the process that uses it, so a prefork child
builds its own Redis connection and loads its models after the fork.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from codedfarm.settings import Settings
from codedfarm.stragglers import StragglerSpec, parse_straggler_spec

if TYPE_CHECKING:
    from torch import nn

__all__ = ["WorkerOptions", "WorkerState", "state"]


@dataclass(frozen=True)
class WorkerOptions:
    """Options of one ``codedfarm worker`` (passed to its processes as env variables)."""

    device: str = "cpu"
    slowdown: float = 1.0  # a persistently slow node multiplies its compute time by this
    straggle: str = "none"  # default straggler spec for tasks that carry no plan
    torch_threads: int = 1
    preload: tuple[str, ...] = ()

    @classmethod
    def from_env(cls) -> WorkerOptions:
        env = os.environ
        return cls(
            device=env.get("CODEDFARM_DEVICE", "cpu"),
            slowdown=float(env.get("CODEDFARM_SLOWDOWN", "1.0")),
            straggle=env.get("CODEDFARM_WORKER_STRAGGLE", "none"),
            torch_threads=int(env.get("CODEDFARM_TORCH_THREADS", "1")),
            preload=tuple(p for p in env.get("CODEDFARM_PRELOAD", "").split(",") if p),
        )

    def to_env(self) -> dict[str, str]:
        return {
            "CODEDFARM_DEVICE": self.device,
            "CODEDFARM_SLOWDOWN": repr(self.slowdown),
            "CODEDFARM_WORKER_STRAGGLE": self.straggle,
            "CODEDFARM_TORCH_THREADS": str(self.torch_threads),
            "CODEDFARM_PRELOAD": ",".join(self.preload),
        }


@dataclass
class WorkerState:
    settings: Settings
    options: WorkerOptions
    straggle: StragglerSpec
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _redis: redis.Redis | None = None
    _report_script: Any = None
    _models: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis.Redis.from_url(
                self.settings.redis_url,
                socket_connect_timeout=5,
                socket_keepalive=True,
                health_check_interval=10,
                retry_on_timeout=True,
            )
        return self._redis

    @property
    def report_script(self) -> Any:
        """The worker's report script (see ``tasks.inference``), registered once."""
        if self._report_script is None:
            from codedfarm.tasks.inference import REPORT_SCRIPT

            self._report_script = self.redis.register_script(REPORT_SCRIPT)
        return self._report_script

    def model(self, name: str) -> nn.Module:
        """The model ``name`` on this worker's device, loaded once per process."""
        with self._lock:
            model = self._models.get(name)
            if model is None:
                import torch

                from codedfarm.models.registry import load_model

                torch.set_num_threads(self.options.torch_threads)
                model = load_model(name, self.settings.cache_dir, self.options.device)
                self._models[name] = model
            return model


_state: WorkerState | None = None


def state() -> WorkerState:
    """This process's worker state (built on first use, rebuilt after a fork)."""
    global _state
    if _state is None:
        options = WorkerOptions.from_env()
        _state = WorkerState(Settings.from_env(), options, parse_straggler_spec(options.straggle))
    return _state


def _forget_after_fork() -> None:
    global _state
    _state = None


os.register_at_fork(after_in_child=_forget_after_fork)
