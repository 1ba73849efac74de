"""A Redis primary, a replica and three Sentinels on this machine (the Sentinel tests and
chaos runs): a high-availability Redis to fail over."""

from __future__ import annotations

import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import redis

from codedfarm.errors import ConfigError
from codedfarm.local.redis_server import LocalRedis, find_redis_server, free_port

__all__ = ["LocalSentinelRedis"]

SERVICE = "codedfarm"


class LocalSentinelRedis:
    """Primary + replica + three Sentinels on 127.0.0.1 (quorum 2, down after
    ``down_after_ms``). ``url`` is the farm's ``redis+sentinel://`` URL."""

    def __init__(self, down_after_ms: int = 1000, failover_timeout_ms: int = 4000) -> None:
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.primary = LocalRedis()
        self.replica = LocalRedis()
        self.sentinel_ports = [free_port() for _ in range(3)]
        self._dir = tempfile.TemporaryDirectory(prefix="codedfarm-sentinel-")
        self._sentinels: list[subprocess.Popen[bytes]] = []

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinel_ports)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def start(self, timeout: float = 20.0) -> LocalSentinelRedis:
        self.primary.start()
        self.replica.extra_args = ("--replicaof", "127.0.0.1", str(self.primary.port))
        self.replica.start()
        binary = find_redis_server()
        for i, port in enumerate(self.sentinel_ports):
            conf = Path(self._dir.name) / f"sentinel-{i}.conf"
            conf.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self._dir.name}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
                f"sentinel failover-timeout {SERVICE} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self._sentinels.append(subprocess.Popen(
                [binary, str(conf), "--sentinel"], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL, start_new_session=True,
            ))  # fmt: skip
        end = time.monotonic() + timeout
        while time.monotonic() < end:  # every Sentinel knows the primary and its replica
            try:
                if all(self._sentinel(p).sentinel_slaves(SERVICE) for p in self.sentinel_ports):
                    return self
            except redis.RedisError:
                pass
            time.sleep(0.2)
        self.close()
        raise ConfigError("the Sentinels did not find the primary and its replica in time")

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=1)

    def primary_port(self) -> int:
        """The port of the primary the Sentinels name now."""
        address: Any = self._sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(
            SERVICE
        )
        return int(address[1])

    def kill_primary(self) -> None:
        """SIGKILL the current primary (the Sentinels then promote the replica)."""
        port = self.primary_port()
        victim = self.primary if port == self.primary.port else self.replica
        victim.stop(kill=True)

    def close(self) -> None:
        for process in self._sentinels:
            process.kill()
            process.wait(5)
        self._sentinels.clear()
        self.primary.close()
        self.replica.close()
        self._dir.cleanup()

    def __enter__(self) -> LocalSentinelRedis:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
