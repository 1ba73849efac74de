"""Per-process worker state: settings, options, the Redis client and the loaded models.

``codedfarm worker`` calls :func:`configure` before it forks (the supervisor's child and
Celery's pool processes inherit it); a worker started by ``celery -A`` reads its options
from the environment instead. Connections and models are made lazily inside the process
that uses them, so a prefork child builds its own Redis connection and loads its models
after the fork.
"""

from __future__ import annotations

import os
import socket
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import redis

from codedfarm.settings import Settings
from codedfarm.stragglers import StragglerSpec
from codedfarm.worker.options import WorkerOptions

if TYPE_CHECKING:
    from torch import nn

__all__ = ["WorkerState", "configure", "state"]


@dataclass
class WorkerState:
    settings: Settings
    options: WorkerOptions
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _redis: redis.Redis | None = None
    _scripts: dict[str, Any] = field(default_factory=dict)
    _models: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def straggle(self) -> StragglerSpec:
        return self.options.straggler_spec

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

    def script(self, source: str) -> Any:
        """The Lua script ``source`` registered on this process's client (once)."""
        registered = self._scripts.get(source)
        if registered is None:
            registered = self._scripts[source] = self.redis.register_script(source)
        return registered

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


_configured: tuple[Settings, WorkerOptions] | None = None
_state: WorkerState | None = None


def configure(settings: Settings, options: WorkerOptions) -> None:
    """Set this process's (and its future children's) settings and options."""
    global _configured, _state
    _configured = (settings, options)
    _state = None


def state() -> WorkerState:
    """This process's worker state (built on first use, rebuilt after a fork)."""
    global _state
    if _state is None:
        settings, options = _configured or (Settings.from_env(), WorkerOptions.from_env())
        _state = WorkerState(settings, options)
    return _state


def _forget_after_fork() -> None:
    global _state
    _state = None


os.register_at_fork(after_in_child=_forget_after_fork)
