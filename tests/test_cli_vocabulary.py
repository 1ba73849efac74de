"""The command line speaks one language (docs/cli.md): shared words, comma lists, --json on
every command that prints results, defaults in --help, and the old spellings still working
for one release with a deprecation warning."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.cli.options import codec_list
from codedfarm.codecs import available_codecs
from codedfarm.models.registry import MODELS

COMMANDS = ("worker", "collector", "probe", "submit", "serve", "loadgen", "demo", "scale",
            "bench", "soak", "compare", "eval", "models", "parity", "shuffle")  # fmt: skip
PRINTS_RESULTS = (
    "submit",
    "loadgen",
    "demo",
    "scale",
    "bench",
    "soak",
    "compare",
    "eval",
    "models",
)


def run(*args: str):
    return CliRunner().invoke(cli, list(args))


def test_every_command_is_registered_and_documented_in_cli_md():
    from pathlib import Path

    assert set(cli.commands) == set(COMMANDS)
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    for command in COMMANDS:
        assert f"`{command}`" in doc, command


@pytest.mark.parametrize("command", PRINTS_RESULTS)
def test_every_command_that_prints_results_has_json(command):
    result = run(command, "--help")
    assert result.exit_code == 0 and "--json" in result.output


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_defaults(command):
    """Every visible option with a default shows it in --help (unset ones say what they
    fall back to in their own words)."""
    import click

    result = run(command, "--help")
    assert result.exit_code == 0, result.output
    group = click.Context(cli, show_default=True)
    ctx = click.Context(cli.commands[command], parent=group, info_name=command)
    for param in cli.commands[command].params:
        if not isinstance(param, click.Option) or param.hidden or param.is_flag:
            continue
        record = param.get_help_record(ctx)
        assert record is not None
        default = param.get_default(ctx)
        unset = default is None or default is False or "UNSET" in repr(default)
        if not unset and (not isinstance(default, (tuple, list)) or default):
            assert "[default:" in record[1], (command, param.name, record)
        else:
            assert param.required or "default" in record[1].lower() or param.multiple or (
                param.name in {"straggle", "collector", "seed", "out", "wait_for", "hostname",
                               "pool", "model_repository", "data_dir", "run_dir"}
            ), (command, param.name, record)  # fmt: skip


def test_help_lists_every_model_and_codec_accepted():
    text = " ".join(run("submit", "--help").output.split())
    for name in MODELS:
        assert name in text, name
    for name in available_codecs():
        assert name in text, name
    bench = " ".join(run("bench", "--help").output.split())
    assert "hedged" in bench and "slownode" in bench and "lagrange" not in bench


@pytest.mark.parametrize("command", ["worker", "submit", "scale"])
def test_queues_are_dash_q_everywhere(command):
    assert "-Q, --queues" in run(command, "--help").output


def test_codec_lists_keep_each_specs_parameters():
    assert codec_list(["berrut,spline:lam_enc=0,lam_dec=0", "mds"]) == (
        "berrut", "spline:lam_enc=0,lam_dec=0", "mds")  # fmt: skip
    assert codec_list("letcc:s=2,sigma=0.1,uncoded") == ("letcc:s=2,sigma=0.1", "uncoded")
    assert codec_list(()) == ()


def test_repeatable_options_take_comma_lists():
    result = run("compare", "--json", "--trials", "3", "-s", "0,4", "-s", "8",
                 "--codec", "berrut,spline:lam_enc=0,lam_dec=0")  # fmt: skip
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {(r["codec"], r["stragglers"]) for r in rows} == {
        (c, s) for c in ("berrut", "spline:lam_enc=0,lam_dec=0") for s in (0, 4, 8)
    }


def test_models_json():
    result = run("models", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert [r["name"] for r in rows] == list(MODELS)
    assert all(isinstance(r["input_shape"], list) for r in rows)


def _deprecated(result, old: str, new: str) -> None:
    assert f"warning: {old} is deprecated and will be removed in codedfarm 0.3; use {new}" in (
        result.stderr
    )


def test_old_compare_model_still_works_with_a_warning():
    result = run("compare", "--json", "--trials", "3", "-s", "0", "--codec", "mds",
                 "--model", "linear")  # fmt: skip
    assert result.exit_code == 0, result.output
    _deprecated(result, "--model", "--toy")
    (row,) = json.loads(result.stdout)
    assert row["mse"] < 1e-20  # the linear toy model was used: mds is exact on it


@pytest.mark.parametrize(
    ("args", "old", "new", "error"),
    [
        (["eval", "--quick", "--models", "resnet"], "--models", "-m/--model",
         "unknown model 'resnet'"),
        (["submit", "x.npy", "-m", "lenet5", "--queue", "a:b"], "--queue", "-Q/--queues",
         "x.npy"),
        (["bench", "--schemes", "fast"], "--schemes", "--codec", "unknown scheme(s) ['fast']"),
        (["demo", "--processes", "2", "--codec", "nosuch"], "--processes", "--workers",
         "unknown codec 'nosuch'"),
    ],
)  # fmt: skip
def test_old_spellings_warn_and_still_reach_the_new_option(args, old, new, error):
    result = run(*args)
    assert result.exit_code == 2, result.output
    _deprecated(result, old, new)
    assert error in result.stderr and "Traceback" not in result.output


def test_bench_stragglers_as_model_names_is_the_old_straggle(tmp_path):
    result = run("bench", "--stragglers", "none,nosuch", "--out", str(tmp_path / "b"))
    assert result.exit_code == 2, result.output
    assert "use --straggle none,nosuch" in result.stderr
    _deprecated(result, "--out", "--out-dir")
    assert "unknown straggler model(s) ['nosuch']" in result.stderr
    assert not (tmp_path / "b").exists()


def test_demo_rejects_bad_options_before_starting_anything():
    result = run("demo", "--codec", "mds,letcc:nope=1")
    assert result.exit_code == 2
    assert (
        result.stderr.strip() == "error: letcc: bad parameter 'nope=1' in spec "
        "'letcc:nope=1'; allowed: s, sigma, byzantine, space, systematic"
    )


def test_models_train_is_the_old_models_prepare(monkeypatch):
    import codedfarm.models.manage as manage
    from codedfarm.models.training import TRAINABLE

    prepared: list[str] = []
    monkeypatch.setattr(manage, "prepare_model", lambda ref, *a, **k: prepared.append(ref) or ref)
    result = run("models", "--train", "--json")
    assert result.exit_code == 0, result.output
    _deprecated_text = "models --train is deprecated and will be removed in codedfarm 0.3"
    assert _deprecated_text in result.stderr and "models prepare NAME" in result.stderr
    assert prepared == list(TRAINABLE)
    assert [r["name"] for r in json.loads(result.stdout)][: len(MODELS)] == list(MODELS)
