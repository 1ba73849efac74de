"""``parm`` on a live farm (issue 25): a worker serves lenet5 and its parity model; a row
whose own task is held back is answered from the parity path, F_P(x_0 + x_1) − F(x_1),
equal to the same reconstruction computed offline; with both rows of a group late the batch
waits for them (one parity rebuilds one row); without a parity model the batch is refused
before anything is sent."""

from __future__ import annotations

import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from codedfarm import BatchSpec, FarmClient
from codedfarm.errors import ConfigError
from codedfarm.local import LocalFarm
from codedfarm.models.digits import load_digits_split
from codedfarm.models.parity import ParityTraining, parity_model_for, train_parity
from codedfarm.models.resolve import load_served_model
from codedfarm.settings import Settings
from codedfarm.stragglers import TaskFate
from codedfarm.worker import WorkerOptions

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]  # a live farm, two short trainings


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory, model_cache: Path) -> Path:
    root = tmp_path_factory.mktemp("parm-repository")
    for k in (2, 4):
        train_parity(ParityTraining("lenet5", k, epochs=1, seed=0), root, model_cache)
    return root


@pytest.fixture(scope="module")
def farm(repository: Path, model_cache: Path) -> Iterator[LocalFarm]:
    base = Settings(key_prefix="parm", key_ttl=60.0, deadline=10.0, cache_dir=model_cache,
                    queues=("parm",),
                    model_repository=repository)  # fmt: skip
    worker = WorkerOptions(queues=("parm",), preload=("lenet5", "lenet5.parity-k2"))
    with LocalFarm([worker], settings=base) as local:
        yield local


def offline(repository: Path, model_cache: Path, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """F(x) row by row and F_P(x_0 + x_1) − F(x_1), as the workers and the decoder do."""
    parity = parity_model_for("lenet5", 2, repository)
    assert parity is not None
    base = load_served_model("lenet5", None, repository=repository, cache_dir=model_cache)
    model_p = load_served_model(parity.name, parity.version, repository=repository,
                                cache_dir=model_cache)  # fmt: skip
    with torch.inference_mode():
        own = np.concatenate([base(torch.from_numpy(x[i : i + 1])).numpy()
                              for i in range(len(x))])  # fmt: skip
        summed = model_p(torch.from_numpy(x[0:1] + x[1:2])).numpy()[0]
    return own, summed - own[1]


def test_a_late_row_is_answered_from_its_groups_parity(farm, repository, model_cache):
    x = load_digits_split().test_x[:4]
    late = [TaskFate(3.0)] + [TaskFate()] * 5  # row 0's own task; n = 4 + 2 parities
    spec = BatchSpec(model="lenet5", codec="parm", n=6, plan=tuple(late))
    start = time.monotonic()
    with FarmClient(farm.settings) as client:
        result = client.submit(x, spec)
    seconds = time.monotonic() - start
    assert result.outcome == "decoded" and seconds < 2.5, (result.record, seconds)
    record = result.record
    assert record.rows_decoded == [0] and record.rows_own == [1, 2, 3]
    own, rebuilt = offline(repository, model_cache, x)
    assert result.predictions is not None
    np.testing.assert_allclose(result.predictions[0], rebuilt, atol=1e-4)
    np.testing.assert_allclose(result.predictions[1:], own[1:], atol=1e-4)


def test_two_late_rows_of_one_group_are_waited_for(farm, repository, model_cache):
    x = load_digits_split().test_x[4:8]
    late = [TaskFate(1.5), TaskFate(1.5)] + [TaskFate()] * 4  # the whole first group
    spec = BatchSpec(model="lenet5", codec="parm", n=6, plan=tuple(late))
    start = time.monotonic()
    with FarmClient(farm.settings) as client:
        result = client.submit(x, spec)
    assert time.monotonic() - start >= 1.5
    assert result.outcome == "decoded" and result.record.rows_own == [0, 1, 2, 3]
    own, _ = offline(repository, model_cache, x)
    np.testing.assert_allclose(result.predictions, own, atol=1e-4)


def test_no_parity_model_is_refused_before_anything_is_sent(farm):
    x = load_digits_split().test_x[:6]
    message = r"no parity model for groups of 6 rows.*parity train lenet5 --k 6"
    with FarmClient(farm.settings) as client, pytest.raises(ConfigError, match=message):
        client.submit(x, BatchSpec(model="lenet5", codec="parm", n=7))


@pytest.mark.parametrize(
    ("rows", "redundancy", "spec"),
    [(8, 1.5, "parm:k=8,n=12,group=2"), (3, 1.5, "parm:k=3,n=5,group=2"),
     (8, 1.25, "parm:k=8,n=10,group=4"), (3, 1.25, "parm:k=3,n=4,group=4"),
     (1, 1.25, "parm:k=1,n=2,group=1")],
)  # fmt: skip
def test_parm_takes_the_smallest_parity_model_that_fits(repository, rows, redundancy, spec):
    """Three rows on one parity need arity 3: the arity-4 model serves them (its slots
    filled 2 + 1 + 1); a lone row gets a copy and needs none."""
    from codedfarm.coordinator.resolution import resolve_batch

    settings = Settings(model_repository=repository)
    got = resolve_batch(BatchSpec(model="lenet5", codec="parm", redundancy=redundancy), rows,
                        settings, fit_workers=True)  # fmt: skip
    assert got.codec.spec == spec
    arity = int(spec.rsplit("=", 1)[1])
    assert (got.parity_model is None) == (arity == 1)
    if got.parity_model is not None:
        assert got.parity_model.name == f"lenet5.parity-k{arity}"
        assert {got.task_model(t).name for t in got.parity_tasks} == {got.parity_model.name}


@pytest.mark.parametrize("floor", [0.0, 1.01])
def test_serve_default_takes_a_parity_model_only_if_it_rebuilds_well(repository, monkeypatch,
                                                                     floor):  # fmt: skip
    """``serve``'s default (``parity_first``) takes ``parm`` only for a parity model whose
    held-out agreement reaches the floor; below it the generic systematic default serves
    (an explicit ``parm`` still takes it)."""
    from codedfarm.coordinator import resolution

    monkeypatch.setattr(resolution, "PARITY_FIRST_MIN_AGREEMENT", floor)
    monkeypatch.setattr(resolution, "_parity_arities", {})
    settings = Settings(model_repository=repository)
    defaults = resolution.BatchDefaults(redundancy=1.5, parity_first=True)
    got = resolution.resolve_batch(BatchSpec(model="lenet5"), 4, settings, defaults=defaults,
                                   fit_workers=True)  # fmt: skip
    assert got.codec.name == ("parm" if floor == 0.0 else "spline"), got.codec.spec
    explicit = resolution.resolve_batch(BatchSpec(model="lenet5", codec="parm"), 4, settings,
                                        defaults=defaults, fit_workers=True)  # fmt: skip
    assert explicit.codec.name == "parm"


def test_serve_with_no_flags_uses_the_parity_model(farm, repository, model_cache):
    """A model with a parity model for the groups the server's budget makes (R = 1.5: one
    parity per 2 rows) is served with ``parm`` by default; every row is exact when nothing
    straggles, lone rows and odd groups included."""
    from test_serve_defaults import infer, start_server

    url, server = start_server(farm, queue="parm")
    try:
        x = load_digits_split().test_x[:6]
        own, _ = offline(repository, model_cache, x)
        start = 0
        for size in (1, 2, 3):
            got = infer(url, x[start : start + size])
            np.testing.assert_allclose(got, own[start : start + size], atol=1e-4)
            start += size
        with urllib.request.urlopen(f"http://{url}/metrics", timeout=5) as response:
            text = response.read().decode()
        groups = [line for line in text.splitlines()
                  if line.startswith("codedfarm_server_groups_total{")]  # fmt: skip
        assert groups and all('codec="parm:' in line for line in groups), groups
    finally:
        server.terminate()
        server.wait(30)


def test_bench_preloads_the_parity_models_its_schemes_need(repository, tmp_path):
    """``codedfarm bench --codec parm``: the parity model is resolved (and preloaded by the
    farm's workers) before the farm starts; without one the bench stops at once."""
    from codedfarm.local.bench import BenchConfig, _parity_models

    config = BenchConfig(k=8, n=12, s=4, schemes=("uncoded", "parm"))
    assert _parity_models(config, Settings(model_repository=repository)) == ["lenet5.parity-k2@1"]
    with pytest.raises(ConfigError, match="no parity model for groups of 2 rows"):
        _parity_models(config, Settings(model_repository=tmp_path))
