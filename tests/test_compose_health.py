"""compose.yaml's healthchecks, run for real: each codedfarm service's command (the CPU
override's worker) against a private Redis, then its healthcheck command, which must pass."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import free_port
from codedfarm.settings import Settings

pytestmark = pytest.mark.slow  # each service's real process

ROOT = Path(__file__).resolve().parents[1]


class _ComposeLoader(yaml.SafeLoader):
    """Reads compose files with their merge tags (`!override`, `!reset`) as plain values."""


def _untagged(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    return loader.construct_scalar(node)


for _tag in ("!override", "!reset"):
    _ComposeLoader.add_constructor(_tag, _untagged)


def services() -> dict[str, dict[str, Any]]:
    base = yaml.load((ROOT / "compose.yaml").read_text(), Loader=_ComposeLoader)["services"]
    cpu = yaml.load((ROOT / "compose.cpu.yaml").read_text(), Loader=_ComposeLoader)["services"]
    base["worker"] = {**base["worker"], "command": cpu["worker"]["command"]}
    return base  # type: ignore[no-any-return]


def localize(argv: list[str], ports: dict[str, str]) -> list[str]:
    """The container's command on this machine: its ports moved to free ones, and the
    ``codedfarm`` console script run by this interpreter."""
    out = []
    for arg in argv:
        for old, new in ports.items():
            arg = arg.replace(f":{old}/", f":{new}/") if "://" in arg else arg
            arg = new if arg == old else arg
        out.append(arg)
    return [sys.executable, "-m", "codedfarm", *out[1:]] if out[0] == "codedfarm" else out


STARTS = {"collector": ["collector"], "worker": ["worker"], "server": ["worker", "server"]}
"""What runs for each check: the server is ready only when a worker serves its queue."""


@pytest.mark.parametrize("service", list(STARTS))
def test_a_services_healthcheck_passes_on_its_real_process(service, model_cache):
    compose = services()
    test = compose[service]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "codedfarm", "probe"] and test[3].endswith("/readyz")
    ports = {p: str(free_port()) for p in ("9808", "9809", "8000")}
    settings = Settings(key_prefix=f"ch{service}", cache_dir=model_cache)
    with LocalFarm([], settings=settings) as farm:
        env = {**farm.env(), "CODEDFARM_QUEUES": "cpu"}
        processes = [
            subprocess.Popen(localize(compose[name]["command"], ports), env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for name in STARTS[service]
        ]  # fmt: skip
        process = processes[-1]
        try:
            probe = localize(test[1:], ports)
            end = time.monotonic() + 120  # within the service's start_period
            while True:
                check = subprocess.run(probe, env=env, capture_output=True, text=True, timeout=30)
                if check.returncode == 0 or time.monotonic() > end or process.poll() is not None:
                    break
                time.sleep(0.5)
            assert check.returncode == 0, (service, check.stdout, check.stderr)
            assert check.stdout.strip() in ("ok", '{"ready": true}')
        finally:
            for started in processes:
                started.terminate()
            for started in processes:
                started.wait(60)
