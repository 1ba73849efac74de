"""``codedfarm loadgen``: an open-loop load on a ``codedfarm serve`` (or any KServe v2) server.

Requests arrive as a Poisson process at ``rate`` per second for ``seconds``, each sent at
its arrival time whether or not earlier ones have been answered (open loop: a slow server
gets no relief, as from real users). Latency is measured from the *scheduled* arrival, so
a client that falls behind cannot hide the server's queueing (no coordinated omission).
HTTP keep-alive through httpx's connection pool. Inputs are the digit images the project
ships, as JSON tensors. The run stops by itself: arrivals end after ``seconds``, and
requests still out get ``timeout`` more.
"""

from __future__ import annotations

import asyncio
import gc
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from codedfarm.errors import ConfigError
from codedfarm.server.oip import infer_request
from codedfarm.settings import check_float, check_int

__all__ = ["LoadConfig", "LoadReport", "run_load"]

JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class LoadConfig:
    url: str = "http://127.0.0.1:8000"
    model: str = "lenet5"
    rate: float = 100.0  # requests per second, on average
    seconds: float = 60.0  # how long requests keep arriving
    rows: int = 1  # inputs per request
    timeout: float = 30.0  # seconds a request may take
    seed: int = 0
    max_connections: int = 512

    def __post_init__(self) -> None:
        """Checks every field: a bad value raises :class:`ConfigError` naming it."""
        if not isinstance(self.url, str) or not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"--url must start with http:// or https://, got {self.url!r}")
        if not isinstance(self.model, str) or not self.model:
            raise ConfigError(f"model must be a model name, got {self.model!r}")
        for name in ("rate", "seconds", "timeout"):
            object.__setattr__(self, name, check_float(getattr(self, name), name, above=0))
        check_int(self.rows, "rows", minimum=1)
        check_int(self.seed, "seed")
        check_int(self.max_connections, "max_connections", minimum=1)


@dataclass(frozen=True)
class LoadReport:
    config: LoadConfig
    sent: int
    ok: int
    errors: dict[str, int]  # by HTTP status or exception name
    offered_rate: float  # requests sent per second of the arrival window
    achieved_rate: float  # successful answers per second, the whole run
    latency_ms: dict[str, float] = field(default_factory=dict)  # of successful requests

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _bodies(config: LoadConfig, count: int = 64) -> list[bytes]:
    from codedfarm.models.digits import load_digits_split

    images = load_digits_split().test_x
    rng = np.random.default_rng(config.seed)
    bodies = []
    for _ in range(count):
        x = images[rng.choice(len(images), config.rows, replace=False)]
        bodies.append(json.dumps(infer_request(x)).encode())
    return bodies


async def _run(config: LoadConfig, progress: Callable[[int], None]) -> LoadReport:
    import httpx

    bodies = _bodies(config)
    # the bodies come from torch and sklearn, whose ~250k objects would make every full
    # garbage collection a ~100 ms stall of this loop, counted as the server's latency
    gc.collect()
    gc.freeze()
    rng = np.random.default_rng(config.seed)
    gaps = rng.exponential(1.0 / config.rate, int(config.rate * config.seconds * 1.5) + 16)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < config.seconds]
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    path = f"{config.url.rstrip('/')}/v2/models/{config.model}/infer"
    limits = httpx.Limits(max_connections=config.max_connections,
                          max_keepalive_connections=config.max_connections)  # fmt: skip
    async with httpx.AsyncClient(limits=limits, timeout=config.timeout) as client:

        async def one(i: int, due: float) -> None:
            try:
                body = bodies[i % len(bodies)]
                response = await client.post(path, content=body, headers=JSON_HEADERS)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
            else:
                if response.status_code == 200:
                    latencies.append(time.perf_counter() - due)
                else:
                    errors[str(response.status_code)] += 1
            progress(1)

        start = time.perf_counter()
        tasks = []
        for i, at in enumerate(arrivals):
            due = start + float(at)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, due)))
        window = time.perf_counter() - start
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - start
    report: dict[str, float] = {}
    if latencies:
        ms = np.asarray(latencies) * 1e3
        report = {f"p{q}": float(np.percentile(ms, q)) for q in (50, 95, 99)}
        report.update(max=float(ms.max()), mean=float(ms.mean()))
    return LoadReport(
        config=config,
        sent=len(tasks),
        ok=len(latencies),
        errors=dict(errors),
        offered_rate=len(tasks) / max(window, 1e-9),
        achieved_rate=len(latencies) / max(elapsed, 1e-9),
        latency_ms=report,
    )


def run_load(config: LoadConfig, progress: Callable[[int], None] = lambda _: None) -> LoadReport:
    """Run the load; returns what it measured. Raises :class:`ConfigError` for bad settings."""
    return asyncio.run(_run(config, progress))
