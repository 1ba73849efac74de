"""The `codedfarm compare` command (the README's main command until the demo exists)."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.evaluation import compare_codecs


def test_compare_prints_a_table_with_every_default_codec():
    result = CliRunner().invoke(cli, ["compare", "--trials", "5"])
    assert result.exit_code == 0, result.output
    for name in ("uncoded", "replication", "mds", "berrut", "spline", "letcc"):
        assert name in result.output
    assert "MSE" in result.output


def test_compare_json_and_qualitative_claims():
    result = CliRunner().invoke(
        cli, ["compare", "--json", "--trials", "20", "-s", "4", "--toy", "linear"]
    )
    assert result.exit_code == 0, result.output
    rows = {r["codec"]: r for r in json.loads(result.output)}
    assert rows["mds"]["mse"] < 1e-20  # exact for a linear model
    assert rows["uncoded"]["decoded"] == 0  # cannot lose anyone
    assert rows["berrut"]["mse"] > 1e-6


def test_spline_beats_berrut_on_the_tanh_toy_at_high_s():
    rows = compare_codecs(["berrut", "spline:lam_enc=0,lam_dec=0"], stragglers=[8], trials=40)
    berrut, spline = rows
    assert spline.mse < berrut.mse


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-k", "0"], "error: uncoded: k must be >= 1, got 0"),
        (["--codec", "foo"], "error: unknown codec 'foo'"),
        (["-s", "30"], "error: stragglers must be in [0, n=24), got 30"),
        (["--trials", "0"], "error: trials must be >= 1, got 0"),
        (["--codec", "spline:lam_dec=-1"], "error: spline: lam_dec must be finite and >= 0"),
    ],
)
def test_compare_bad_input_exits_2_with_one_line(args, message):
    result = CliRunner().invoke(cli, ["compare", *args])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [result.output.strip()]
    assert result.output.startswith(message)
    assert "Traceback" not in result.output
