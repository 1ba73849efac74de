"""``codedfarm scale``: grow or shrink the local worker processes.

Local worker processes started by ``scale`` are tracked by pid files in a run directory
(``<cache_dir>/run`` unless ``--run-dir`` is given), so later ``scale`` calls find them.
With Docker Compose, scale the ``worker`` service instead (see README).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path

from codedfarm.errors import ConfigError
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions

__all__ = ["LocalWorkers", "TrackedWorker", "scale_compose", "scale_local"]


class _Detached(subprocess.Popen[bytes]):
    """A worker process that outlives the command starting it, so never waited for here:
    dropping it is no ResourceWarning ("subprocess ... is still running"). If it exits
    while this process lives (the tests), :meth:`TrackedWorker.alive` reaps it."""

    def __del__(self) -> None:
        pass


@dataclass(frozen=True)
class TrackedWorker:
    pid: int
    hostname: str
    options: WorkerOptions
    log: str

    def alive(self) -> bool:
        with contextlib.suppress(ChildProcessError):  # only a worker this process started
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                return False  # it exited: reaped now
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return _not_zombie(self.pid)


def _not_zombie(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split()
    except OSError:
        return True  # no /proc: trust kill(0)
    return fields[2] != "Z"


class LocalWorkers:
    """Worker processes on this machine, tracked in ``run_dir``."""

    def __init__(self, settings: Settings, run_dir: Path | None = None) -> None:
        self.settings = settings
        self.run_dir = run_dir or settings.cache_dir / "run"
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def _pidfiles(self) -> list[Path]:
        return sorted(self.run_dir.glob("worker-*.json"))

    def list(self) -> list[TrackedWorker]:
        """Live tracked workers (pid files of dead ones are removed)."""
        live = []
        for path in self._pidfiles():
            try:
                data = json.loads(path.read_text())
                worker = TrackedWorker(
                    data["pid"],
                    data["hostname"],
                    WorkerOptions.from_dict(data["options"]),
                    data["log"],
                )
            except (OSError, ValueError, KeyError, TypeError):
                path.unlink(missing_ok=True)
                continue
            if worker.alive():
                live.append(worker)
            else:
                path.unlink(missing_ok=True)
        return live

    def start(self, options: WorkerOptions) -> TrackedWorker:
        index = uuid.uuid4().hex[:10]  # unique even for workers started in the same instant
        hostname = f"scaled-{index}@localhost"
        options = replace(options, hostname=hostname)
        log = self.run_dir / f"worker-{index}.log"
        env = dict(os.environ)
        env["CODEDFARM_REDIS_URL"] = self.settings.redis_url
        env["CODEDFARM_CACHE_DIR"] = str(self.settings.cache_dir)
        if self.settings.model_repository is not None:
            env["CODEDFARM_MODEL_REPOSITORY"] = str(self.settings.model_repository)
        with open(log, "ab") as out:
            process = _Detached(
                options.argv(),
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # survives this command
            )
        worker = TrackedWorker(process.pid, hostname, options, str(log))
        record = {"pid": worker.pid, "hostname": hostname, "options": options.to_dict(),
                  "log": worker.log}  # fmt: skip
        (self.run_dir / f"worker-{index}.json").write_text(json.dumps(record))
        return worker

    def stop(self, worker: TrackedWorker, *, now: bool = False) -> None:
        """SIGTERM: warm shutdown (running tasks finish); ``now``: SIGQUIT, cold shutdown."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGQUIT if now else signal.SIGTERM)

    def scale(
        self, count: int, options: WorkerOptions, *, now: bool = False, wait: float = 60.0
    ) -> tuple[int, int, int]:
        """Start or stop processes until ``count`` run; returns (count, started, stopped)."""
        if count < 0:
            raise ConfigError(f"--workers must be >= 0, got {count}")
        live = self.list()
        started = stopped = 0
        new: list[TrackedWorker] = []
        while len(live) + len(new) < count:
            new.append(self.start(options))
            started += 1
        for worker in live[count:]:
            self.stop(worker, now=now)
            stopped += 1
        end = time.monotonic() + wait
        for worker in new:
            while b" ready." not in Path(worker.log).read_bytes():
                if not worker.alive():
                    tail = Path(worker.log).read_text(errors="replace")[-1500:]
                    raise ConfigError(f"worker {worker.hostname} exited at start:\n{tail}")
                if time.monotonic() > end:
                    raise ConfigError(f"worker {worker.hostname} not ready after {wait:g}s")
                time.sleep(0.1)
        for worker in live[count:]:
            while worker.alive() and time.monotonic() < end:
                time.sleep(0.1)
        return len(self.list()), started, stopped


def scale_compose(count: int, files: tuple[Path, ...] = (), service: str = "worker") -> int:
    """``docker compose up -d --no-recreate --scale worker=N``; returns the running replicas."""
    if count < 0:
        raise ConfigError(f"--workers must be >= 0, got {count}")
    base = ["docker", "compose", *[arg for f in files for arg in ("-f", str(f))]]
    up = [*base, "up", "-d", "--no-recreate", "--no-build", "--scale", f"{service}={count}",
          service]  # fmt: skip
    try:
        done = subprocess.run(up, capture_output=True, text=True, timeout=600)
    except FileNotFoundError as exc:
        raise ConfigError("docker is not installed: --compose needs Docker Compose v2") from exc
    if done.returncode != 0:
        detail = " ".join((done.stderr or done.stdout).split())[:300]
        raise ConfigError(f"docker compose failed ({' '.join(up)}): {detail}")
    ps = subprocess.run([*base, "ps", "-q", service], capture_output=True, text=True, timeout=60)
    return len([line for line in ps.stdout.splitlines() if line.strip()])


def scale_local(
    settings: Settings,
    options: WorkerOptions,
    count: int,
    run_dir: Path | None = None,
    *,
    now: bool = False,
) -> tuple[int, int, int]:
    """``codedfarm scale --workers N``: check the options and Redis, then start or stop local
    worker processes; returns (count, started, stopped)."""
    from codedfarm.redis_conn import connect

    options.validate().check_models(settings.model_repository)
    connect(settings).close()
    return LocalWorkers(settings, run_dir).scale(count, options, now=now)
