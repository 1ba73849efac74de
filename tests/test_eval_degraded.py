"""``codedfarm eval --degraded`` (issue 25): ParM's degraded mode against systematic berrut
and spline at n = k + 1, on linear models whose exact parity model is known (an affine map
F(x) = Wx + b has F_P(x) = Wx + k·b: F_P(x_1 + … + x_k) = Σ F(x_i) exactly), and the
options. The real runs are in docs/results.md."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from codedfarm.cli import cli
from codedfarm.errors import ConfigError
from codedfarm.evaluation.degraded import (
    GENERIC_CODECS,
    DegradedConfig,
    degraded_table,
    measure_degraded,
    target_check,
    winners,
)
from codedfarm.evaluation.fidelity import batches
from codedfarm.evaluation.loading import numpy_model
from codedfarm.evaluation.redundancy import TAIL
from codedfarm.models.digits import load_digits_split
from codedfarm.models.manage import add_model

SHAPE = (1, 32, 32)


def affine(seed: int = 5) -> nn.Sequential:
    torch.manual_seed(seed)
    layer = nn.Linear(32 * 32, 10)
    with torch.no_grad():
        layer.weight.normal_(0, 1 / 32)
        layer.bias.normal_(0, 1)
    return nn.Sequential(nn.Flatten(), layer).eval()


def exact_parity(net: nn.Sequential, k: int) -> nn.Sequential:
    """Wx + k·b: the exact parity model of the affine map ``net`` for ``k`` queries."""
    parity = affine()
    parity.load_state_dict(net.state_dict())
    with torch.no_grad():
        parity[1].bias.mul_(k)
    return parity


def groups(model, k: int, count: int, seed: int = 0):
    data = load_digits_split()
    return batches(model, data.test_x, data.test_y, k, count, np.random.default_rng(seed))


@pytest.mark.parametrize("k", [2, 4])
def test_parm_with_an_exact_parity_model_rebuilds_every_lost_row(k):
    net = affine()
    model = numpy_model(net, "logits")
    parity = numpy_model(exact_parity(net, k), "logits")
    rows = measure_degraded("affine", model, groups(model, k, 12), parity, patterns=3,
                            rates=(0.0, 0.05, 0.3))  # fmt: skip
    assert [r.approach for r in rows] == ["ParM", "berrut", "spline"]
    assert [r.scores.codec for r in rows] == ["parm", *GENERIC_CODECS]
    assert rows[0].space == "parity target logits"
    assert {r.space for r in rows[1:]} == {"linear"}  # logits: space=auto stays linear
    n = k + 1
    for r in rows:
        s = r.scores
        assert (s.k, s.n, s.batches, s.redundancy) == (k, n, 12, n / k)
        assert [d.lost for d in s.drops] == [1]  # one parity task: one row lost at most
        d = s.drops[0]
        assert d.rows == 12 * 3
        assert d.ci95[0] <= d.agreement <= d.ci95[1]
        assert d.accuracy_ci95[0] <= d.accuracy <= d.accuracy_ci95[1]
        for x in s.straggling:
            assert x.ci95[0] - 1e-12 <= x.agreement <= x.ci95[1] + 1e-12
            assert x.accuracy_ci95[0] - 1e-12 <= x.accuracy <= x.accuracy_ci95[1] + 1e-12
    parm = rows[0].scores
    d = parm.drops[0]
    assert (d.agreement, d.ci95) == (1.0, (1.0, 1.0))
    assert d.accuracy == d.own_accuracy  # rebuilt exactly: the model's own answers
    # a group decodes exactly while at most one of its n tasks is lost; beyond, its lost
    # rows wait (then time out: scored 0) and the others keep their own answers. Of m lost
    # tasks, m or m - 1 are rows (one parity task): A(m) is between (k - m)/k and
    # (k - m + 1)/k, and the overall agreement weighs A(m) by Binom(m; n, p)
    by_lost = parm.agreement_by_lost
    assert by_lost[:2] == (1.0, 1.0)
    for m, a in enumerate(by_lost[2:], 2):
        assert max(0, k - m) / k <= a <= (k - m + 1) / k, (m, a)
    for x in parm.straggling:
        weights = [math.comb(n, m) * x.rate**m * (1 - x.rate) ** (n - m) for m in range(n + 1)]
        low = sum(w * (1 if m < 2 else max(0, k - m) / k) for m, w in enumerate(weights))
        high = sum(w * (1 if m < 2 else (k - m + 1) / k) for m, w in enumerate(weights))
        assert low - TAIL <= x.agreement <= high + 1e-12, x
    assert parm.straggling[0].agreement == 1.0
    if k == 4:  # a blend of four rows through an affine map: the generic codes guess
        assert max(r.scores.drops[0].agreement for r in rows[1:]) < 1.0
        assert winners(rows)[0]["best"] == "ParM"


def test_the_table_winners_and_targets():
    net = affine()
    model = numpy_model(net, "logits")
    rows = [r for k in (2, 4) for r in measure_degraded(
        "lenet5", model, groups(model, k, 4), numpy_model(exact_parity(net, k), "logits"),
        patterns=2)]  # fmt: skip
    table = degraded_table(rows)
    assert table.count("\n") == 2 + len(rows)
    assert "| lenet5 | 4 | 5 | ParM | parity target logits |" in table
    assert "1.000 [1.000, 1.000] (8 rows)" in table
    best = {(w["model"], w["k"]): w for w in winners(rows)}
    assert best["lenet5", 4]["best"] == "ParM" and best["lenet5", 4]["agreement"] == 1.0
    checks = target_check(rows)
    assert [(c["k"], c["target"], c["met"]) for c in checks] == [(2, 0.90, True), (4, 0.75, True)]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"group_sizes": (2, 1)}, "k must be an integer >= 2 (rows per parity task), got 1"),
        ({"group_sizes": ()}, "group_sizes must be a non-empty list"),
        ({"codecs": ("parm",)}, "parm is always measured by --degraded"),
        ({"batches": 0}, "batches must be an integer >= 1, got 0"),
        ({"parity_epochs": 0}, "parity_epochs must be an integer >= 1, got 0"),
        ({"rates": (1.0,)}, "a straggle rate must be in [0, 1), got 1.0"),
        ({"models": ()}, "models must be a non-empty list"),
    ],
)
def test_bad_settings_are_refused(fields, message):
    with pytest.raises(ConfigError) as caught:
        DegradedConfig(**fields)
    assert message in str(caught.value)


def exact_repository(root: Path, k: int) -> Path:
    """A repository with ``lin`` (an affine TorchScript model) and its exact parity model
    for ``k``, ``lin.parity-k<k>``, as `parity train` would list it."""
    net = affine()
    for name, module in (("lin", net), (f"lin.parity-k{k}", exact_parity(net, k))):
        file = root.parent / f"{name}.pt"
        torch.jit.save(torch.jit.script(module), str(file))
        add_model(root, name, file, input_shape=SHAPE)
    config = root / f"lin.parity-k{k}" / "config.json"
    data = json.loads(config.read_text())
    data["parity"] = {"base": "lin", "k": k, "target": "logits", "base_version": 1}
    config.write_text(json.dumps(data))
    return root


def test_cli_finds_the_repositorys_parity_model_and_writes_the_report(tmp_path, monkeypatch):
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(tmp_path / "cache"))
    repo = exact_repository(tmp_path / "repo", 2)
    out = tmp_path / "out"
    args = ["eval", "--degraded", "-m", "lin", "-k", "2", "--batches", "6", "--patterns", "2",
            "--model-repository", str(repo), "--out-dir", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    parm = summary["rows"][0]
    assert parm["approach"] == "ParM" and parm["parity_model"] == "lin.parity-k2@1"
    assert parm["parity"]["how"] == "found" and parm["scores"]["drops"][0]["agreement"] == 1.0
    assert [r["approach"] for r in summary["rows"]] == ["ParM", "berrut", "spline"]
    assert summary["winners"][0]["model"] == "lin" and summary["targets"] == []
    assert (out / "results.json").stat().st_size > 0
    table = (out / "table.md").read_text()
    assert "| lin | 2 | 3 | ParM | parity target logits |" in table
    assert "Published figures (theirs" in table
    assert not (tmp_path / "cache" / "eval-parity").exists()  # nothing trained


def test_cli_trains_a_missing_parity_model_into_its_own_repository(tmp_path, monkeypatch):
    """The zoo's `linear`, no model repository: the parity model is trained (one epoch)
    into <cache>/eval-parity and found there the next time."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(cache))
    monkeypatch.delenv("CODEDFARM_MODEL_REPOSITORY", raising=False)
    args = ["eval", "--degraded", "-m", "linear", "-k", "2", "--batches", "3", "--patterns", "1",
            "--parity-epochs", "1", "--out-dir", str(tmp_path / "out")]  # fmt: skip
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    assert "training linear.parity-k2 for 1 epochs into" in first.output
    assert (cache / "eval-parity" / "linear.parity-k2" / "config.json").exists()
    again = CliRunner().invoke(cli, [*args, "--json"])
    assert again.exit_code == 0 and "training" not in again.output
    summary = json.loads(again.output[again.output.index("{") :])
    assert summary["rows"][0]["parity"]["how"] == "found"
    assert summary["rows"][0]["parity"]["epochs"] == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", "1"], "k must be an integer >= 2 (rows per parity task), got 1"),
        (["-k", "2,x"], "-k takes integers"),
        (["--redundancy", "2"], "--redundancy: not an option of --degraded"),
        (["-n", "5"], "-n: not an option of --degraded"),
        (["--output-space", "logits"], "--output-space: not an option of --degraded"),
        (["--dataset", "mnist"], "--dataset: not an option of --degraded"),
        (["--codec", "parm"], "parm is always measured by --degraded"),
        (["-m", "nosuch"], "unknown model 'nosuch'"),
        (["--parity-epochs", "0"], "parity_epochs must be an integer >= 1, got 0"),
    ],
)
def test_cli_refuses_bad_input_in_one_line(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--degraded", "--out-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines
