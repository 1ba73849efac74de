"""Helpers of the tests that run real processes next to a LocalFarm: a collector service
with a metrics port, a Prometheus on a config, and a plain GET."""

from __future__ import annotations

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import IO, Any

import yaml

from codedfarm.local import LocalFarm


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of ``GET http://127.0.0.1:port/path`` (errors included)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def start_collector(
    farm: LocalFarm, name: str, port: int, log: IO[bytes]
) -> subprocess.Popen[bytes]:
    """`codedfarm collector --name NAME` on ``farm``, metrics on 127.0.0.1:port."""
    return subprocess.Popen(
        [sys.executable, "-m", "codedfarm", "collector", "--name", name,
         "--metrics-port", str(port), "--metrics-addr", "127.0.0.1"],
        env=farm.env(), stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip


def start_prometheus(binary: str, folder: Path, config: dict[str, Any],
                     port: int) -> subprocess.Popen[bytes]:  # fmt: skip
    """Prometheus on ``config`` (written to folder/prometheus.yml), data in folder/data."""
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    return subprocess.Popen(
        [binary, f"--config.file={folder / 'prometheus.yml'}",
         f"--storage.tsdb.path={folder / 'data'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
