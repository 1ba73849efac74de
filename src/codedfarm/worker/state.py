"""Per-process worker state: settings, options, the Redis client and the loaded models.

``codedfarm worker`` calls :func:`configure` before it forks (the supervisor's child and
Celery's pool processes inherit it); a worker started by ``celery -A`` reads its options
from the environment instead. Connections and models are made lazily inside the process
that uses them, so a prefork child builds its own Redis connection and loads its models
after the fork. The worker's hooks (:func:`worker_hooks`: its metrics, when installed) are
installed before anything forks, and every child keeps them.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from codedfarm.errors import CodedFarmError, ModelUnavailableError
from codedfarm.monitoring.hooks import WorkerHooks
from codedfarm.redis_conn import redis_from_url
from codedfarm.settings import Settings
from codedfarm.stragglers import StragglerSpec
from codedfarm.worker.options import WorkerOptions

__all__ = ["LoadedModel", "WorkerState", "configure", "install_worker_hooks", "state",
           "worker_hooks"]  # fmt: skip

IDLE_VERSION_S = 30.0
"""A model version no task asked for in this long is dropped once another version is used."""
FAILURE_MEMORY_S = 2.0
"""A model that failed to load is not retried for this long (tasks fail at once meanwhile)."""


@dataclass(frozen=True)
class LoadedModel:
    """A model on this worker's device, with the output shape its config declares."""

    module: Any
    name: str
    version: int | None
    output_shape: tuple[int, ...]

    @property
    def ref(self) -> str:
        return self.name if self.version is None else f"{self.name}@{self.version}"


@dataclass
class WorkerState:
    settings: Settings
    options: WorkerOptions
    name: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}")
    _redis: redis.Redis | None = None
    _scripts: dict[str, Any] = field(default_factory=dict)
    _models: dict[tuple[str, int | None], LoadedModel] = field(default_factory=dict)
    _used: dict[tuple[str, int | None], float] = field(default_factory=dict)
    _failed: dict[tuple[str, int | None], tuple[float, CodedFarmError]] = field(
        default_factory=dict
    )
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def straggle(self) -> StragglerSpec:
        return self.options.straggler_spec

    @property
    def redis(self) -> redis.Redis:
        if self._redis is None:
            self._redis = redis_from_url(
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

    def model(self, name: str, version: int | None = None, *, train: bool = False) -> LoadedModel:
        """Model ``name`` (version ``version``; None: a zoo model, or the highest version of a
        repository model) on this worker's device, loaded once per process.

        Raises :class:`ModelUnavailableError` naming the model, this worker and the fix when
        it cannot be served now (a zoo model that needs training trains only with ``train``,
        which ``--preload`` uses). Versions no task asked for in ``IDLE_VERSION_S`` are
        dropped when another version of the model is used."""
        now = time.monotonic()
        if version is None and self.settings.model_repository is not None:
            version = self._latest_version(name)
        with self._lock:
            key = (name, version)
            loaded = self._models.get(key)
            if loaded is None:
                failed = self._failed.get(key)
                if failed is not None and now - failed[0] < FAILURE_MEMORY_S:
                    raise failed[1]
                try:
                    loaded = self._load(name, version, train)
                except CodedFarmError as exc:
                    error = ModelUnavailableError(f"worker {self.name}: {exc}")
                    self._failed[key] = (now, error)
                    raise error from exc
                key = (loaded.name, loaded.version)  # a bare repository name: its version
                loaded = self._models.setdefault(key, loaded)
            self._used[key] = now
            for other in [k for k in self._models if k[0] == name and k != key]:
                if now - self._used.get(other, 0.0) > IDLE_VERSION_S:
                    del self._models[other]
                    self._used.pop(other, None)
            return loaded

    def _latest_version(self, name: str) -> int | None:
        """The highest version of repository model ``name`` (None: not a repository model)."""
        from codedfarm.models.repository import ModelRepository

        assert self.settings.model_repository is not None
        repo = ModelRepository(self.settings.model_repository)
        if not repo.has(name):
            return None
        try:
            return repo.get(name).version
        except CodedFarmError as exc:
            raise ModelUnavailableError(f"worker {self.name}: {exc}") from exc

    def _load(self, name: str, version: int | None, train: bool) -> LoadedModel:
        import torch

        from codedfarm.models.resolve import load_served_model, resolve_model

        torch.set_num_threads(self.options.torch_threads)
        repository = self.settings.model_repository
        resolved = resolve_model(name if version is None else f"{name}@{version}", repository)
        module = load_served_model(
            resolved.name, resolved.version, repository=repository,
            cache_dir=self.settings.cache_dir, device=self.options.device, train=train,
        )  # fmt: skip
        return LoadedModel(module, resolved.name, resolved.version, resolved.output_shape)

    def loaded_models(self) -> list[str]:
        """References of the models in memory (``name`` or ``name@version``)."""
        with self._lock:
            return sorted(m.ref for m in self._models.values())


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


_hooks = WorkerHooks()


def install_worker_hooks(hooks: WorkerHooks) -> None:
    """Report tasks and refused messages to ``hooks`` in this process and in the children
    it forks from now on (install before the fork: a Celery pool inherits them)."""
    global _hooks
    _hooks = hooks


def worker_hooks() -> WorkerHooks:
    """The hooks the engines report to (the no-op :class:`WorkerHooks` unless installed)."""
    return _hooks


def _forget_after_fork() -> None:
    global _state
    _state = None


os.register_at_fork(after_in_child=_forget_after_fork)
