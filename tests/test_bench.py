"""`codedfarm bench`: a small run on a live farm, and its bad options."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.errors import ConfigError
from codedfarm.local.bench import BenchConfig, run_bench
from codedfarm.settings import Settings


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["batch", "celery"])
def test_a_small_bench_measures_every_scheme_and_the_targets(model_cache, tmp_path, engine):
    config = BenchConfig(k=4, n=8, s=2, batches=6, compute=0.02, stragglers=("none", "fixed"),
                         schemes=("uncoded", "replication", "mds", "spline"),
                         engine=engine)  # fmt: skip
    settings = Settings(key_prefix=f"bench{engine}", key_ttl=60.0, cache_dir=model_cache)
    report = run_bench(config, tmp_path, settings, echo=lambda _: None)
    rows = {(r["stragglers"], r["scheme"]): r for r in report["rows"]}
    assert len(rows) == 8 and all(r["decoded"] == "6/6" for r in rows.values())
    # exact schemes reproduce direct inference; every task costs what the scheme says
    for scheme in ("uncoded", "replication", "mds"):
        assert rows[("none", scheme)]["mse_vs_uncoded"] < 1e-6
    assert rows[("none", "uncoded")]["tasks_per_prediction"] == 1.0
    assert rows[("none", "spline")]["tasks_per_prediction"] == 2.0
    # stragglers (10 x 20 ms) hold uncoded back, not the code that decodes at n - s
    assert rows[("fixed", "uncoded")]["p50_ms"] >= 200
    assert rows[("fixed", "spline")]["p50_ms"] < rows[("fixed", "uncoded")]["p50_ms"] / 2
    assert rows[("none", "spline")]["p50_ms"] >= 20  # every task sleeps its compute
    assert set(report["targets"]) == {
        "spline: p99 with S stragglers / straggler-free p99 (<= 1.15)",
        "spline: uncoded p99 / coded p99, stragglers 10x compute (>= 5)",
        "spline: coded p99 / replication p99, equal workers (<= 0.8)",
    }
    assert json.loads((tmp_path / "bench.json").read_text())["config"]["engine"] == engine
    assert f"{engine} workers" in (tmp_path / "bench.md").read_text()
    assert (tmp_path / "latency_cdf.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"n": 4}, "need 1 <= k <= n"),
        ({"schemes": ("fast",)}, "unknown scheme(s) ['fast']"),
        ({"stragglers": ("sometimes",)}, "unknown straggler model(s) ['sometimes']"),
        ({"batches": 2}, "need batches >= 5"),
        ({"engine": "threads"}, "engine must be celery or batch, got 'threads'"),
    ],
)
def test_bad_bench_configs_are_clear_errors(change, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
        replace(BenchConfig(), **change)  # checked when built


def test_bench_cli_refuses_bad_options_with_exit_2(tmp_path):
    result = CliRunner().invoke(cli, ["bench", "--codec", "fast", "--out-dir", str(tmp_path)])
    assert result.exit_code == 2 and "unknown scheme(s) ['fast']" in result.output
    assert "Traceback" not in result.output and not list(tmp_path.iterdir())
