from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from codedfarm.local import LocalFarm
from codedfarm.local.redis_server import LocalRedis
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test on the session's live ``farm`` is ``slow``: ``-m "not slow"`` (the fast
    tier) never starts it. Tests on a farm of their own module are marked there."""
    for item in items:
        if "farm" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A cache dir with LeNet5 trained once for the whole session."""
    from codedfarm.models.training import trained_lenet5

    path = tmp_path_factory.mktemp("model-cache")
    trained_lenet5(path)
    return path


@pytest.fixture
def redis_server() -> Iterator[LocalRedis]:
    """A private redis-server on a random port (killed and restartable by the test)."""
    with LocalRedis() as server:
        yield server


@pytest.fixture
def settings(redis_server: LocalRedis, model_cache: Path) -> Settings:
    return Settings(
        redis_url=redis_server.url,
        key_prefix=f"t{uuid.uuid4().hex[:6]}",
        key_ttl=60.0,
        deadline=10.0,
        cache_dir=model_cache,
    )


@pytest.fixture
def redis_client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url)


@pytest.fixture(scope="session")
def farm(model_cache: Path) -> Iterator[LocalFarm]:
    """Real Redis plus two real `codedfarm worker` processes (queues gpu0, gpu1): a Celery
    worker of 12 prefork children and a batch engine of 12 slots."""
    base = Settings(key_prefix="e2e", key_ttl=60.0, deadline=20.0, cache_dir=model_cache)
    workers = [
        WorkerOptions(
            queues=("gpu0",), engine="celery", concurrency=12, preload=("lenet5", "linear")
        ),
        WorkerOptions(queues=("gpu1",), concurrency=12, preload=("lenet5", "linear")),
    ]
    with LocalFarm(workers, settings=base) as local:
        yield local
