"""Configuration validates itself: every config object checks its fields when it is built
(directly, by ``dataclasses.replace`` or from the environment), and a bad value raises
ConfigError naming the field (and, for Settings, its variable CODEDFARM_<FIELD>)."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from codedfarm.errors import ConfigError
from codedfarm.evaluation.runner import EvalConfig
from codedfarm.local.bench import BenchConfig
from codedfarm.local.demo import DemoConfig
from codedfarm.local.loadgen import LoadConfig
from codedfarm.local.soak import SoakConfig
from codedfarm.server.batcher import BatcherConfig
from codedfarm.settings import Settings, check_queue_names
from codedfarm.worker import WorkerOptions


def _raises(message: str) -> Any:
    return pytest.raises(ConfigError, match=re.escape(message))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"key_ttl": 0}, "key_ttl (CODEDFARM_KEY_TTL) must be > 0 seconds, got 0"),
        ({"key_ttl": -5.0}, "key_ttl (CODEDFARM_KEY_TTL) must be > 0 seconds"),
        ({"key_ttl": "60"}, "key_ttl (CODEDFARM_KEY_TTL) must be a number, got '60'"),
        ({"key_ttl": float("inf")}, "key_ttl (CODEDFARM_KEY_TTL) must be a finite number"),
        ({"deadline": 0.0}, "deadline (CODEDFARM_DEADLINE) must be > 0 seconds"),
        ({"queues": "cpu"}, "queues (CODEDFARM_QUEUES) must be a list of queue names, got 'cpu'"),
        ({"queues": ("a:b",)}, "queues (CODEDFARM_QUEUES): queue names must be non-empty"),
        ({"queues": ("a,b",)}, "without ':', ',' or whitespace, got ('a,b',)"),
        ({"queues": ("gpu 0",)}, "without ':', ',' or whitespace"),
        ({"queues": ("",)}, "queue names must be non-empty"),
        ({"queues": ()}, "queues (CODEDFARM_QUEUES) must name at least one queue"),
        ({"max_batch_bytes": 0}, "max_batch_bytes (CODEDFARM_MAX_BATCH_BYTES) must be >= 1"),
        ({"max_batch_bytes": 1.5}, "(CODEDFARM_MAX_BATCH_BYTES) must be an integer, got 1.5"),
        ({"max_workers": True}, "max_workers (CODEDFARM_MAX_WORKERS) must be an integer"),
        ({"fidelity_sample": 1.5}, "fidelity_sample (CODEDFARM_FIDELITY_SAMPLE) must be <= 1"),
        ({"visibility_timeout": -1}, "(CODEDFARM_VISIBILITY_TIMEOUT) must be >= 0 seconds"),
        ({"key_prefix": "a:b"}, "key_prefix (CODEDFARM_KEY_PREFIX) must be non-empty without ':'"),
        ({"key_prefix": ""}, "key_prefix (CODEDFARM_KEY_PREFIX) must be non-empty"),
        ({"redis_url": ""}, "redis_url (CODEDFARM_REDIS_URL) must not be empty"),
        ({"redis_url": None}, "redis_url (CODEDFARM_REDIS_URL) must be a string"),
        ({"collector": 3}, "collector (CODEDFARM_COLLECTOR) must be a string"),
        ({"cache_dir": 3}, "cache_dir (CODEDFARM_CACHE_DIR) must be a path"),
        ({"model_repository": ""}, "model_repository (CODEDFARM_MODEL_REPOSITORY) must be a path"),
    ],
)  # fmt: skip
def test_settings_refuse_bad_values_when_built(change, message):
    with _raises(message):
        Settings(**change)
    with _raises(message):  # replace builds a new object: checked the same
        replace(Settings(), **change)


def test_settings_normalise_lists_paths_and_numbers():
    settings = Settings(queues=["a", "b"], cache_dir="cache", model_repository="models",
                        key_ttl=60, max_workers=8)  # fmt: skip
    assert settings.queues == ("a", "b")
    assert settings.cache_dir == Path("cache") and settings.model_repository == Path("models")
    assert isinstance(settings.key_ttl, float) and settings.key_ttl == 60.0
    assert Settings().validate() == Settings()  # kept for old callers: nothing to call


def test_settings_from_env_name_the_variable():
    with _raises("key_ttl (CODEDFARM_KEY_TTL) must be > 0 seconds, got 0.0"):
        Settings.from_env({"CODEDFARM_KEY_TTL": "0"})
    with _raises("CODEDFARM_KEY_TTL must be a float, got 'soon'"):
        Settings.from_env({"CODEDFARM_KEY_TTL": "soon"})
    with _raises("queues (CODEDFARM_QUEUES): queue names must be non-empty"):
        Settings.from_env({"CODEDFARM_QUEUES": "gpu0,gpu:1"})
    assert Settings.from_env({"CODEDFARM_QUEUES": "gpu0, gpu1"}).queues == ("gpu0", "gpu1")


def test_the_one_queue_name_rule():
    assert check_queue_names(["a", "gpu0"], "queues") == ("a", "gpu0")
    assert check_queue_names(("cpu",)) == ("cpu",)
    for bad in (("a:b",), ("a,b",), ("a b",), ("a\tb",), ("",), (3,)):
        with _raises("x: queue names must be non-empty without ':', ',' or whitespace"):
            check_queue_names(bad, "x")  # type: ignore[arg-type]
    with _raises("x must name at least one queue"):
        check_queue_names((), "x")
    with _raises("x must be a list of queue names, got 'cpu'"):
        check_queue_names("cpu", "x")
    # the same rule for the settings and a worker's queues
    with _raises("queues: queue names must be non-empty without ':'"):
        WorkerOptions(queues=("a b",))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"concurrency": 0}, "concurrency must be >= 1, got 0"),
        ({"concurrency": 2.5}, "concurrency must be an integer, got 2.5"),
        ({"queues": ("a:b",)}, "queues: queue names must be non-empty without ':'"),
        ({"queues": "cpu"}, "queues must be a list of queue names, got 'cpu'"),
        ({"preload": "lenet5"}, "preload must be a list of model names, got 'lenet5'"),
        ({"preload": ("",)}, "preload must be a list of model names"),
        ({"engine": "threads"}, "engine must be one of celery, batch, got 'threads'"),
        ({"pool": "solo"}, "--pool is for --engine celery"),
        ({"engine": "celery", "pool": "gevent"}, "pool must be one of prefork, threads, solo"),
        ({"device": "tpu"}, "--device must be cpu, cuda or cuda:N, got 'tpu'"),
        ({"slowdown": 0.5}, "slowdown must be >= 1, got 0.5"),
        ({"torch_threads": 0}, "torch_threads must be >= 1, got 0"),
        ({"metrics_port": 70000}, "metrics_port must be <= 65535, got 70000"),
        ({"loglevel": "loud"}, "loglevel must be one of debug, info, warning, error, critical"),
        ({"events": "yes"}, "events must be True or False, got 'yes'"),
        ({"hostname": 3}, "hostname must be a string, got 3"),
        ({"straggle": "fixed:S=1,delay=1"}, "give it per submit, not per worker"),
        ({"straggle": "exp:shift=1"}, "needs shift, rate; missing rate"),
        ({"corrupt": "noisy"}, "--corrupt: unknown mode 'noisy'"),
    ],
)
def test_worker_options_refuse_bad_values_when_built(change, message):
    with _raises(message):
        WorkerOptions(**change)
    with _raises(message):
        replace(WorkerOptions(), **change)


def test_worker_options_normalise_lists_and_round_trip():
    options = WorkerOptions(queues=["a", "b"], preload=["lenet5"], loglevel="INFO")
    assert options.queues == ("a", "b") and options.preload == ("lenet5",)
    assert options.loglevel == "info"
    assert WorkerOptions.from_dict(options.to_dict()) == options
    assert WorkerOptions(queues=[]).queue_names == ("cpu",)  # empty: the device's queue
    assert options.validate() is options  # kept for old callers: nothing to call


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"group_size": 0}, "group_size must be >= 1, got 0"),
        ({"group_size": 2.0}, "group_size must be an integer, got 2.0"),
        ({"group_size": 8, "max_queue": 4}, "max_queue must be >= group_size, got max_queue=4"),
        ({"max_queue": 0}, "max_queue must be >= 1, got 0"),
        ({"max_queue_delay": -0.1}, "max_queue_delay must be >= 0 seconds, got -0.1"),
        ({"max_queue_delay": None}, "max_queue_delay must be a number, got None"),
        ({"max_groups_in_flight": 0}, "max_groups_in_flight must be >= 1, got 0"),
    ],
)
def test_batcher_config_refuses_bad_values_when_built(change, message):
    with _raises(message):
        BatcherConfig(**change)


@pytest.mark.parametrize(
    ("config", "change", "message"),
    [
        (EvalConfig, {"k": 0}, "need 1 <= k <= n, got k=0"),
        (EvalConfig, {"stragglers": (0, 100)}, "stragglers must be in [0, n=100)"),
        (EvalConfig, {"stragglers": ()}, "stragglers must be a non-empty list"),
        (EvalConfig, {"batches": 0}, "batches must be >= 1, got 0"),
        (EvalConfig, {"byzantine": 0}, "byzantine must be in [1, 9]"),
        (EvalConfig, {"output_space": "odds"}, "output space must be one of probs, logits"),
        (EvalConfig, {"noise": -1.0}, "noise must be >= 0"),
        (BenchConfig, {"n": 4}, "need 1 <= k <= n"),
        (BenchConfig, {"batches": 2}, "need batches >= 5, got 2"),
        (BenchConfig, {"compute": 0}, "compute must be > 0, got 0"),
        (BenchConfig, {"slow_factor": 0.5}, "slow_factor must be >= 1"),
        (BenchConfig, {"schemes": "mds"}, "schemes must be a non-empty list of names"),
        (BenchConfig, {"engine": "threads"}, "engine must be celery or batch, got 'threads'"),
        (DemoConfig, {"k": 0}, "need 1 <= k <= n and 0 <= s < n, got k=0"),
        (DemoConfig, {"batches": 0}, "batches must be >= 1, got 0"),
        (DemoConfig, {"worker_processes": 0}, "worker_processes must be >= 1, got 0"),
        (DemoConfig, {"deadline": 0}, "deadline must be > 0, got 0"),
        (DemoConfig, {"codecs": ("nosuch",)}, "unknown codec 'nosuch'"),
        (DemoConfig, {"straggle": "slow:x=1"}, "unknown straggler model 'slow'"),
        (SoakConfig, {"rate": 0}, "rate must be > 0, got 0"),
        (SoakConfig, {"model": "resnet"}, "unknown model 'resnet'"),
        (SoakConfig, {"codec": "turbo"}, "unknown codec 'turbo'"),
        (SoakConfig, {"engine": "threads"}, "engine must be one of celery, batch"),
        (LoadConfig, {"url": "localhost:8000"}, "--url must start with http:// or https://"),
        (LoadConfig, {"rate": 0}, "rate must be > 0, got 0"),
        (LoadConfig, {"rows": 0}, "rows must be >= 1, got 0"),
        (LoadConfig, {"timeout": -1}, "timeout must be > 0, got -1"),
        (LoadConfig, {"max_connections": 0}, "max_connections must be >= 1, got 0"),
    ],
)  # fmt: skip
def test_every_config_refuses_bad_values_when_built(config, change, message):
    with _raises(message):
        config(**change)
    with _raises(message):
        replace(config(), **change)


def test_configs_built_whole_then_replaced_stay_valid():
    """Callers build a valid config and replace several fields at once (the CLI's eval)."""
    quick = replace(EvalConfig.quick(), k=4, n=20, stragglers=[0, 4])
    assert quick.stragglers == (0, 4)
    assert replace(EvalConfig(), n=30, stragglers=(0, 10)).n == 30
    assert replace(BenchConfig(), k=4, n=8, s=2, batches=6).n == 8
    assert DemoConfig(codecs=["mds", "spline"]).codecs == ("mds", "spline")
    assert replace(BatcherConfig(), group_size=16, max_queue=16).max_queue == 16
