"""A farm on this machine: a private Redis (unless given one) and ``codedfarm worker`` processes.

Used by ``codedfarm demo``, ``codedfarm scale``, the integration tests and the benchmarks.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from codedfarm.errors import ConfigError
from codedfarm.local.redis_server import LocalRedis
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

__all__ = ["LocalFarm", "WorkerProcess", "collector_argv"]


def collector_argv(name: str, metrics_port: int = 0) -> list[str]:
    """The command line of a ``codedfarm collector`` service process."""
    return [sys.executable, "-m", "codedfarm", "collector", "--name", name,
            "--metrics-port", str(metrics_port)]  # fmt: skip


class WorkerProcess:
    """One worker process group (the Celery main process and its pool children)."""

    def __init__(
        self, options: WorkerOptions, hostname: str, env: dict[str, str], log: Path
    ) -> None:
        self.options = replace(options, hostname=hostname)
        self.hostname = hostname
        self.log = log
        self._log_file = open(log, "ab")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            self.options.argv(),
            env=env,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def wait_ready(self, timeout: float = 90.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise ConfigError(f"worker {self.hostname} exited at start:\n{tail}")
            if b" ready." in self.log.read_bytes():
                return
            time.sleep(0.1)
        raise ConfigError(f"worker {self.hostname} not ready after {timeout:g}s (log: {self.log})")

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group: the main process and every pool child."""
        self.signal_group(signal.SIGKILL)
        self.process.wait(10)
        self._log_file.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Cold shutdown (SIGQUIT: running tasks are not awaited), then SIGKILL if needed."""
        if self.alive():
            self.signal_group(signal.SIGQUIT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout)
        self.signal_group(signal.SIGKILL)  # pool children left behind, if any
        if self.alive():
            self.process.wait(10)
        self._log_file.close()


class LocalFarm:
    """Redis (private unless ``redis_url`` is given) plus worker processes."""

    def __init__(
        self,
        workers: list[WorkerOptions],
        *,
        redis_url: str | None = None,
        settings: Settings | None = None,
        log_dir: Path | None = None,
    ) -> None:
        self.worker_options = workers
        self.base_settings = settings or Settings.from_env()
        self._redis_url = redis_url
        self.redis_server: LocalRedis | None = None
        self._tmp = tempfile.TemporaryDirectory(prefix="codedfarm-farm-")
        self.log_dir = log_dir or Path(self._tmp.name)
        self.workers: list[WorkerProcess] = []
        self.collectors: list[subprocess.Popen[bytes]] = []
        self._counter = 0

    @property
    def settings(self) -> Settings:
        url = self._redis_url or (self.redis_server.url if self.redis_server else None)
        return replace(self.base_settings, redis_url=url or self.base_settings.redis_url)

    def env(self) -> dict[str, str]:
        s = self.settings
        env = dict(os.environ)
        env.update(
            {
                "CODEDFARM_REDIS_URL": s.redis_url,
                "CODEDFARM_KEY_PREFIX": s.key_prefix,
                "CODEDFARM_KEY_TTL": repr(s.key_ttl),
                "CODEDFARM_CACHE_DIR": str(s.cache_dir),
                "CODEDFARM_VISIBILITY_TIMEOUT": repr(s.visibility_timeout),
                "PYTHONUNBUFFERED": "1",
            }
        )
        if s.model_repository is not None:
            env["CODEDFARM_MODEL_REPOSITORY"] = str(s.model_repository)
        return env

    def start(self) -> LocalFarm:
        if self._redis_url is None:
            self.redis_server = LocalRedis().start()
        for options in self.worker_options:
            self.add_worker(options, wait=False)
        for worker in self.workers:
            worker.wait_ready()
        return self

    def add_worker(self, options: WorkerOptions, *, wait: bool = True) -> WorkerProcess:
        self._counter += 1
        name = f"w{self._counter}-{os.getpid()}@localhost"
        log = self.log_dir / f"worker-{self._counter}.log"
        worker = WorkerProcess(options, name, self.env(), log)
        self.workers.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    def start_collector(self, name: str, timeout: float = 30.0) -> subprocess.Popen[bytes]:
        """Start a ``codedfarm collector --name NAME`` service; returns once it listens."""
        log_path = self.log_dir / f"collector-{name}.log"
        with open(log_path, "ab") as log:
            process = subprocess.Popen(
                collector_argv(name), env=self.env(), stdout=log, stderr=subprocess.STDOUT
            )
        self.collectors.append(process)
        end = time.monotonic() + timeout
        while b"listening" not in log_path.read_bytes():
            if process.poll() is not None or time.monotonic() > end:
                tail = log_path.read_text(errors="replace")[-2000:]
                raise ConfigError(f"collector {name!r} did not start:\n{tail}")
            time.sleep(0.05)
        return process

    def stop(self) -> None:
        for collector in self.collectors:
            collector.terminate()
            try:
                collector.wait(10)
            except subprocess.TimeoutExpired:
                collector.kill()
                collector.wait(5)
        self.collectors.clear()
        for worker in self.workers:
            worker.stop()
        self.workers.clear()
        if self.redis_server is not None:
            self.redis_server.close()
            self.redis_server = None
        self._tmp.cleanup()

    def __enter__(self) -> LocalFarm:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
