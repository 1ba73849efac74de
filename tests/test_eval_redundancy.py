"""``codedfarm eval --decoded-rows``: decoded-row accuracy against the redundancy budget R
(docs/redundancy.md), on toy models where the right numbers are known, and its settings."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.coordinator.resolution import redundancy_workers
from codedfarm.errors import CodecError, ConfigError
from codedfarm.evaluation.compare import toy_model
from codedfarm.evaluation.fidelity import batches
from codedfarm.evaluation.published import PUBLISHED, published_table
from codedfarm.evaluation.redundancy import (
    DEFAULT_CODECS,
    TAIL,
    check_settings,
    decoded_rows_table,
    max_rate,
    measure_decoded_rows,
)
from codedfarm.evaluation.runner import EvalConfig


def toy_batches(kind: str, k: int, count: int, seed: int = 0):
    f = toy_model(kind, in_dim=12, out_dim=6)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((200, 12))
    labels = f(x).argmax(-1)  # the model is right on every image: accuracy == agreement
    return f, batches(f, x, labels, k, count, rng)


def binomial(m: int, n: int, p: float) -> float:
    return math.comb(n, m) * p**m * (1 - p) ** (n - m)


@pytest.mark.parametrize(
    ("k", "r", "n"), [(8, 1.25, 10), (8, 1.5, 12), (8, 2.0, 16), (4, 1.25, 5), (4, 1.5, 6),
                      (4, 2.0, 8), (1, 1.0, 2)],
)  # fmt: skip
def test_rows_use_the_servers_task_count(k, r, n):
    assert redundancy_workers(k, r) == n
    f, data = toy_batches("linear", k, 1)
    row = measure_decoded_rows("linear", f, data, "mds", redundancy=r, patterns=1)
    assert (row.k, row.n, row.redundancy) == (k, n, r)
    assert [d.lost for d in row.drops] == [e for e in (1, 2) if e <= min(n - k, k)]


def test_an_exact_code_on_a_linear_model_decodes_every_lost_row():
    """mds (systematic, exact for linear f) at K=4, R=1.5 (n=6): every row lost is decoded
    exactly; with stragglers the group decodes exactly while at most n-K=2 tasks are lost
    and not at all beyond, so the overall agreement is P(at most 2 of 6 lost), to the
    draw-free digit."""
    f, data = toy_batches("linear", 4, 6)
    row = measure_decoded_rows("linear", f, data, "mds", redundancy=1.5, patterns=4,
                               rates=(0.0, 0.05, 0.3))  # fmt: skip
    assert row.n == 6 and row.base_accuracy == 1.0
    for d in row.drops:
        assert (d.agreement, d.ci95, d.accuracy, d.own_accuracy) == (1.0, (1.0, 1.0), 1.0, 1.0)
        assert d.rows == 6 * 4 * d.lost
    for s in row.straggling:
        exact = sum(binomial(m, 6, s.rate) for m in range(3))
        assert s.agreement == pytest.approx(exact, abs=TAIL + 1e-12), s
        assert s.ci95[0] <= s.agreement <= s.ci95[1] + 1e-12
        assert s.accuracy == pytest.approx(s.agreement)
    assert row.straggling[0].agreement == 1.0  # nothing lost: every row its own result
    assert row.agreement_by_lost[:3] == (1.0, 1.0, 1.0)
    assert len(row.agreement_by_lost) > 3 and not any(row.agreement_by_lost[3:])
    # P(at most 2 of 6 lost) >= 0.99 up to p = 0.0847...: the grid's last step is 8.4%
    assert max_rate(row, 0.99) == pytest.approx(0.084)
    assert sum(binomial(m, 6, 0.08473) for m in range(3)) == pytest.approx(0.99, abs=1e-5)


@pytest.mark.parametrize("spec", DEFAULT_CODECS)
def test_systematic_rows_whose_own_result_is_in_are_exact(spec):
    """A nonlinear model, an approximate code: the decoded rows may miss, the others never,
    so the overall agreement is at least 1 - p (the expected share of own results lost)."""
    f, data = toy_batches("tanh", 8, 8)
    row = measure_decoded_rows("tanh", f, data, spec, redundancy=2.0, patterns=4,
                               rates=(0.0, 0.01, 0.1))  # fmt: skip
    by = {s.rate: s for s in row.straggling}
    assert by[0.0].agreement == 1.0
    for p in (0.01, 0.1):
        assert 1 - p - TAIL <= by[p].agreement < 1.0, by[p]
    assert by[0.01].agreement > by[0.1].agreement
    for d in row.drops:
        assert 0.5 < d.agreement <= 1.0 and d.ci95[0] <= d.agreement <= d.ci95[1]
    table = decoded_rows_table([row])
    assert f"| tanh | {spec} | 8 | 2 | 16 |" in table and "overall, 10% stragglers" in table


def test_more_redundancy_recovers_more_rows_on_lenet5(model_cache):
    from codedfarm.evaluation.loading import load_eval_model

    f, data, _ = load_eval_model("lenet5", model_cache, dataset="digits", data_dir=None,
                                 output_space="probs")  # fmt: skip
    held = batches(f, data.test_x, data.test_y, 8, 6, np.random.default_rng(0))
    low, high = (
        measure_decoded_rows(
            "lenet5", f, held, "spline:systematic=true", redundancy=r, patterns=3, rates=(0.05,)
        )
        for r in (1.25, 2.0)
    )
    assert high.drops[0].agreement > low.drops[0].agreement
    assert high.drops[0].agreement >= 0.9  # docs/systematic.md: 1.00 at n=16
    assert high.straggling[0].agreement > low.straggling[0].agreement > 0.9


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("redundancy", (0.5,), "redundancy R must be a number >= 1 (tasks per row), got 0.5"),
        ("redundancy", (1.5, float("inf")), "got inf"),
        ("redundancy", (True,), "got True"),
        ("redundancy", "1.5", "redundancy must be a non-empty list"),
        ("redundancy", (), "redundancy must be a non-empty list"),
        ("group_sizes", (8, 0), "group size K must be an integer >= 1, got 0"),
        ("group_sizes", (2.5,), "group size K must be an integer >= 1, got 2.5"),
        ("straggle_rates", (0.05, 1.0), "a straggle rate must be in [0, 1), got 1.0"),
        ("decoded_rows", "yes", "decoded_rows must be true or false"),
    ],
)
def test_bad_settings_are_refused(field, value, message):
    with pytest.raises(ConfigError, match=None) as caught:
        replace(EvalConfig(), **{field: value})
    assert message in str(caught.value)


def test_settings_are_normalised_and_codecs_checked():
    config = replace(EvalConfig(), redundancy=[1, 2], group_sizes=[4, 8], straggle_rates=[0])
    assert config.redundancy == (1.0, 2.0) and isinstance(config.redundancy[0], float)
    assert config.group_sizes == (4, 8) and config.straggle_rates == (0.0,)
    with pytest.raises(CodecError, match="unknown codec"):
        check_settings((1.5,), (8,), ("nosuch",), (0.05,))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redundancy", "0.5"], "redundancy R must be a number >= 1 (tasks per row), got 0.5"),
        (["--redundancy", "1.5,x"], "--redundancy takes numbers, got 1.5, x"),
        (["--decoded-rows", "-k", "0"], "group size K must be an integer >= 1, got 0"),
        (["--decoded-rows", "-n", "30"], "-n: an option of the fidelity suite"),
        (["--redundancy", "2", "-s", "4"], "-s/--stragglers: an option of the fidelity suite"),
        (["--decoded-rows", "--codec", "nosuch"], "unknown codec 'nosuch'"),
        (["--codec", "berrut"], "--codec applies to --decoded-rows"),
        (["-k", "4,8"], "-k takes one value except with --decoded-rows, got 4, 8"),
    ],
)
def test_cli_refuses_bad_options_in_one_line(args, message, tmp_path):
    result = CliRunner().invoke(cli, ["eval", "--out-dir", str(tmp_path), *args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


def test_cli_writes_the_table_json_and_the_published_figures(model_cache, tmp_path, monkeypatch):
    monkeypatch.setenv("CODEDFARM_CACHE_DIR", str(model_cache))
    out = tmp_path / "out"
    args = ["eval", "-m", "lenet5", "-k", "4", "--redundancy", "1.5,2", "--batches", "2",
            "--patterns", "2", "--out-dir", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli, [*args, "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{") :])
    rows = summary["rows"]
    assert [(r["k"], r["redundancy"], r["n"], r["codec"]) for r in rows] == [
        (4, r, n, c) for r, n in ((1.5, 6), (2.0, 8)) for c in DEFAULT_CODECS
    ]
    assert {m["codec"] for m in summary["meets"]} == set(DEFAULT_CODECS)
    assert len(summary["published"]) == len(PUBLISHED)
    for name in ("results.json", "decoded_rows.csv", "table.md"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text()
    assert "| lenet5 | spline:systematic=true | 4 | 1.5 | 6 |" in table
    assert published_table() in table
    plain = CliRunner().invoke(cli, args)
    assert plain.exit_code == 0 and "overall agreement >= 0.99 at 5% stragglers" in plain.output


def test_published_figures_say_where_they_come_from():
    assert all(f.citation and f.work and f.dataset for f in PUBLISHED)
    approxifer = [f for f in PUBLISHED if f.work == "ApproxIFER"]
    assert {(f.k, f.n, f.s) for f in approxifer} == {(8, 9, 1), (10, 11, 1), (12, 13, 1)}
    # the abstract's "up to 58% over ParM": CIFAR-10 at K=12
    gain = {f.work: f.value for f in PUBLISHED if f.dataset == "CIFAR-10" and f.k == 12}
    assert gain["ApproxIFER"] - gain["ParM (run by ApproxIFER's authors)"] == pytest.approx(
        0.58, abs=0.005
    )
    missing = [f for f in PUBLISHED if f.value is None]
    assert missing and all(f.note.startswith("not found") for f in missing)
    assert "not found" in published_table()
