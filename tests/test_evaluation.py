"""Small, fast versions of the evaluation's experiments and the qualitative claims they make."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.evaluation.compare import toy_model
from codedfarm.evaluation.convergence import convergence
from codedfarm.evaluation.fidelity import batches, measure_fidelity
from codedfarm.evaluation.runner import EvalConfig, run_evaluation
from codedfarm.evaluation.tuning import grid_search
from codedfarm.models.datasets import load_dataset
from codedfarm.models.registry import load_model


@pytest.fixture(scope="module")
def lenet(model_cache):
    import torch

    module = load_model("lenet5", model_cache)

    def f(x):
        with torch.inference_mode():
            return module(torch.from_numpy(np.ascontiguousarray(x, np.float32))).numpy()

    data = load_dataset("digits", (1, 32, 32), model_cache)
    return f, data


def test_spline_beats_berrut_on_lenet_at_high_s_and_exact_codes_are_exact(lenet):
    f, data = lenet
    rng = np.random.default_rng(0)
    held = batches(f, data.test_x, data.test_y, 8, 4, rng)
    rows = measure_fidelity(
        "lenet5", f, held, ["berrut", "spline:lam_enc=0,lam_dec=0", "replication"],
        n=40, stragglers=[0, 20], patterns=4, rng=rng,
    )  # fmt: skip
    by = {(r.codec, r.s): r for r in rows}
    assert by["spline:lam_enc=0,lam_dec=0", 20].mse < by["berrut", 20].mse
    assert by["replication", 0].mse < 1e-8 and by["replication", 0].decoded == 16
    assert by["replication", 20].decoded <= 16  # some patterns lose every copy of an input
    assert 0.9 <= by["berrut", 0].rel_acc <= 1.05


def test_mds_on_a_linear_model_has_zero_error(lenet):
    _, data = lenet
    weights = np.random.default_rng(1).standard_normal((1024, 10)).astype(np.float32)

    def linear(x):
        return x.reshape(len(x), -1) @ weights

    rng = np.random.default_rng(2)
    held = batches(linear, data.test_x, data.test_y, 8, 2, rng)
    (row,) = measure_fidelity("linear", linear, held, ["mds"], n=20, stragglers=[12],
                              patterns=3, rng=rng)  # fmt: skip
    assert row.mse < 1e-6 * float(np.mean(np.sum(held[0].truth ** 2, axis=1)))


def test_mse_falls_with_n_at_slope_steeper_than_2_5_for_a_smooth_function():
    rng = np.random.default_rng(3)
    f = toy_model("tanh", in_dim=16, out_dim=4)
    xs = [rng.standard_normal((6, 16)) for _ in range(3)]
    curves = convergence("tanh", f, xs, ["berrut", "spline:lam_enc=0,lam_dec=0"],
                         ns=(20, 40, 80, 160), s=3, patterns=3, rng=rng)  # fmt: skip
    berrut, spline = curves
    assert all(b < a for a, b in zip(berrut.mse, berrut.mse[1:], strict=False))
    assert spline.slope <= -2.5 and spline.slope < berrut.slope


def test_grid_search_finds_the_pair_it_reports(lenet):
    f, data = lenet
    rng = np.random.default_rng(4)
    tune = batches(f, data.test_x, data.test_y, 8, 2, rng)
    grid = grid_search(f, tune, n=32, stragglers=[8, 16], patterns=2, rng=rng,
                       lam_enc=(0.0, 1e-3), lam_dec=(0.0, 1e-6, 1e-2, 10.0))  # fmt: skip
    lam_enc, lam_dec, mse = grid.best
    assert mse == np.nanmin(grid.mse) and grid.mse.shape == (2, 4)
    assert grid.spec() == f"spline:lam_enc={lam_enc:g},lam_dec={lam_dec:g}"
    assert grid.mse[0, 3] > mse  # a huge lam_dec (a straight line) is worse


@pytest.mark.slow  # a whole quick evaluation or a training run
def test_quick_run_writes_every_output(model_cache, tmp_path):
    config = EvalConfig.quick()
    result = run_evaluation(config, tmp_path, model_cache, echo=lambda _: None)
    for name in ("results.json", "fidelity.csv", "table.md", "mse_vs_s.png", "relacc_vs_s.png",
                 "lambda_sweep.png", "mse_vs_n.png", "coded_samples.png"):  # fmt: skip
        assert (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["models"]["lenet5"]["tuned_over_berrut"] < 1.0
    assert saved["summary"]["noiseless_spline_slope"] <= -2.5
    table = (tmp_path / "table.md").read_text()
    assert "| berrut |" in table and "spline (lam_dec=auto)" in table
    assert result["training"]["lenet5"]["test_accuracy"] > 0.9
    # probabilities by default: the log-space spline row, its ratio with an interval
    log = saved["summary"]["models"]["lenet5"]["over_berrut"]["spline (log space)"]
    low, high = log["ci95"]
    assert low <= log["ratio"] <= high and len(log["per_s"]) == len(config.stragglers)
    assert log["ratio"] < 0.77
    # the wrong-results table: every codec, mode and A; byzantine outvotes large errors
    robust = saved["robustness"]
    assert {(r["mode"], r["a"]) for r in robust} == {
        (m, a) for m in ("large", "subtle", "swap") for a in config.corrupt
    }
    for r in robust:
        if r["mode"] == "large" and r["a"]:
            assert r["found"] == 1.0 and r["mse_byzantine"] <= 1.5 * r["mse_absent"], r
    assert "| lenet5 | berrut | large | 2 |" in table


@pytest.mark.slow  # a whole quick evaluation or a training run
def test_logits_space_has_no_log_rows(model_cache, tmp_path):
    config = EvalConfig.quick()
    config = EvalConfig(**{**config.__dict__, "output_space": "logits", "models": ("lenet5",),
                           "stragglers": (0, 16), "corrupt": (1,)})  # fmt: skip
    result = run_evaluation(config, tmp_path, model_cache, echo=lambda _: None)
    labels = {r["extra"]["label"] for r in result["fidelity"]}
    assert "spline (log space)" not in labels and "berrut" in labels
    assert {r["codec"] for r in result["robustness"]} == {
        "berrut", "spline:lam_enc=0,lam_dec=auto"}  # fmt: skip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "resnet"], "unknown model 'resnet'"),
        (["-k", "50", "-n", "40"], "need 1 <= k <= n, got k=50, n=40"),
        (["--stragglers", "0,40"], "stragglers must be in [0, n=40)"),
        (["--dataset", "svhn", "--model", "lenet5"], "unknown data set 'svhn'"),
        (["--output-space", "odds"], "Invalid value for '--output-space'"),
        (["--wrong-results", "0,30"], "corrupt results A must be in [0, 19]"),
        (["--wrong-results", "x"], "--wrong-results takes integers"),
        (["--byzantine", "12"], "byzantine must be in [1, 9]"),
    ],
)
def test_eval_bad_options_exit_2(args, message, tmp_path, monkeypatch, model_cache):
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(model_cache))
    result = CliRunner().invoke(cli, ["eval", "--quick", "--out-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
