"""A short soak: memory and Redis keys stay flat under steady load."""

from __future__ import annotations

import pytest

from codedfarm.local.soak import SoakConfig, run_soak
from codedfarm.settings import Settings

pytestmark = pytest.mark.slow  # a live farm under load for 24 s each


@pytest.mark.parametrize("engine", ["celery", "batch"])
def test_short_soak_keeps_memory_and_keys_flat(model_cache, engine):
    settings = Settings(key_prefix="soak", key_ttl=30.0, cache_dir=model_cache)
    config = SoakConfig(seconds=24.0, rate=5.0, sample_every=2.0, engine=engine)
    report = run_soak(config, settings, echo=lambda _: None)
    assert report.outcomes.get("decoded", 0) >= 100 and set(report.outcomes) == {"decoded"}
    assert len(report.samples) >= 10
    keys = [s.redis_keys for s in report.samples[2:]]
    # a handful of kombu/queue keys plus at most a few batches in flight; nothing per batch
    assert max(keys) <= 40, keys
    assert report.growth("redis_keys") <= 5
    assert report.growth("collector_rss_mb") < 15, [s.collector_rss_mb for s in report.samples]
    assert report.growth("redis_memory_mb") < 5
