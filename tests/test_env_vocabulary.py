"""One environment vocabulary (docs/cli.md): every option of every command reads exactly one
variable. A farm-wide setting is CODEDFARM_<SETTING> wherever it appears; a command's own
option is CODEDFARM_<COMMAND>_<OPTION>. A worker started by `celery -A ...` reads the same
variables as `codedfarm worker`; the old names still work until 0.3, with a warning."""

from __future__ import annotations

import dataclasses
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.cli.options import SettingOption
from codedfarm.errors import ConfigError
from codedfarm.settings import Settings
from codedfarm.worker import WorkerOptions
from codedfarm.worker.options import OLD_VARIABLES

SETTINGS = {f.name for f in dataclasses.fields(Settings)}
# the options that override a farm-wide setting: (command, parameter) -> setting
SETTING_OPTIONS = {
    ("codedfarm", "redis_url"): "redis_url",
    ("codedfarm submit", "deadline"): "deadline",
    ("codedfarm submit", "queues"): "queues",
    ("codedfarm submit", "collector_name"): "collector",
    ("codedfarm serve", "deadline"): "deadline",
    ("codedfarm serve", "queues"): "queues",
}


def _contexts() -> Iterator[click.Context]:
    """A context of every command and subcommand, as click builds them when it runs."""

    def walk(ctx: click.Context) -> Iterator[click.Context]:
        yield ctx
        command = ctx.command
        if isinstance(command, click.Group):
            for name, sub in command.commands.items():
                yield from walk(click.Context(sub, parent=ctx, info_name=name))

    yield from walk(click.Context(cli, info_name="codedfarm", **cli.context_settings))


def _params() -> list[tuple[click.Context, click.Parameter]]:
    return [(ctx, param) for ctx in _contexts() for param in ctx.command.get_params(ctx)]


def _expected(ctx: click.Context, param: click.Parameter) -> str | None:
    """The one variable docs/cli.md gives the parameter (None: it reads none)."""
    if isinstance(param, click.Argument):
        return param.envvar if isinstance(param.envvar, str) else None
    assert isinstance(param, click.Option)
    if param.hidden or not param.expose_value:  # old spellings, --help, --version
        return None
    if isinstance(param, SettingOption):
        return f"CODEDFARM_{param.setting.upper()}"
    return _command_variable(ctx, param)


def _command_variable(ctx: click.Context, param: click.Parameter) -> str:
    """CODEDFARM_<COMMAND>_<OPTION>, <OPTION> the option's long name (else its only one)."""
    longs = [o for o in param.opts if o.startswith("--")]
    name = longs[0][2:] if longs else str(param.name)
    return f"{ctx.command_path} {name}".upper().replace(" ", "_").replace("-", "_")


def _read_by_click(ctx: click.Context, param: click.Parameter) -> set[str]:
    """Every variable click would read for the parameter."""
    envvar = param.envvar
    names = {envvar} if isinstance(envvar, str) else set(envvar or ())
    if isinstance(param, click.Option) and param.allow_from_autoenv and ctx.auto_envvar_prefix:
        names.add(f"{ctx.auto_envvar_prefix}_{str(param.name).upper()}")
    return names


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("CODEDFARM_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_every_option_resolves_from_exactly_one_variable(clean_env):
    params = _params()
    # 15 commands, models' 2 and parity's 1 subcommands, the group
    assert len({ctx.command_path for ctx, _ in params}) == 19
    for ctx, param in params:
        where = (ctx.command_path, "/".join(param.opts))
        expected = _expected(ctx, param)
        read = _read_by_click(ctx, param)
        if isinstance(param, SettingOption):
            assert param.setting in SETTINGS, where
            # read here (the option is the setting), or by Settings when it is not given
            assert read == ({expected} if param.read_env else set()), where
        else:
            assert read == ({expected} if expected else set()), where
        if not isinstance(param, click.Option):
            continue
        # what click really does: the expected variable is read, click's automatic name
        # (from the parameter name) and the command's name for a setting are not
        others = {f"{ctx.auto_envvar_prefix}_{str(param.name).upper()}",
                  _command_variable(ctx, param)}  # fmt: skip
        for name in others - {expected}:
            clean_env.setenv(name, "x")
            assert param.resolve_envvar_value(ctx) is None, (where, name)
            clean_env.delenv(name)
        if expected and read:
            clean_env.setenv(expected, "x")
            assert param.resolve_envvar_value(ctx) == "x", (where, expected)
            clean_env.delenv(expected)


def test_no_two_options_of_a_command_share_a_variable():
    for ctx in _contexts():
        names = [_expected(ctx, p) for p in ctx.command.get_params(ctx)]
        names = [n for n in names if n]
        assert len(names) == len(set(names)), (ctx.command_path, names)


def test_farm_wide_settings_read_their_own_variable_wherever_they_appear():
    seen = {}
    for ctx, param in _params():
        if isinstance(param, SettingOption):
            seen[(ctx.command_path, param.name)] = param.setting
        elif param.name in ("redis_url", "model_repository"):
            pytest.fail(f"{ctx.command_path} {param.name} is the farm-wide setting")
    repository = {key: value for key, value in seen.items() if value == "model_repository"}
    assert {ctx for ctx, _ in repository} == {
        "codedfarm worker", "codedfarm submit", "codedfarm scale", "codedfarm serve",
        "codedfarm models", "codedfarm models add", "codedfarm models prepare",
        "codedfarm parity train", "codedfarm eval",
    }  # fmt: skip
    assert {k: v for k, v in seen.items() if v != "model_repository"} == SETTING_OPTIONS


def test_the_documented_examples():
    """docs/cli.md's own examples: a command option by its long name, not its parameter's."""
    variables = {(ctx.command_path, "/".join(p.opts)): _expected(ctx, p) for ctx, p in _params()}
    assert variables[("codedfarm submit", "--model/-m")] == "CODEDFARM_SUBMIT_MODEL"
    assert variables[("codedfarm submit", "-s/--stragglers")] == "CODEDFARM_SUBMIT_STRAGGLERS"
    assert variables[("codedfarm submit", "--json")] == "CODEDFARM_SUBMIT_JSON"
    assert variables[("codedfarm models add", "--input-shape")] == (
        "CODEDFARM_MODELS_ADD_INPUT_SHAPE"
    )
    assert variables[("codedfarm worker", "--model-repository")] == "CODEDFARM_MODEL_REPOSITORY"
    assert variables[("codedfarm", "--version")] is None


def test_a_submit_option_reads_its_variable_and_a_setting_is_not_read_twice(clean_env):
    seen: list[dict[str, object]] = []

    def fake(**values: object) -> None:
        seen.append(values)

    clean_env.setattr(cli.commands["submit"], "callback", fake)
    env = {"CODEDFARM_SUBMIT_STRAGGLERS": "2", "CODEDFARM_SUBMIT_QUEUES": "old",
           "CODEDFARM_SUBMIT_DEADLINE": "5", "CODEDFARM_SUBMIT_MODEL": "lenet5"}  # fmt: skip
    result = CliRunner().invoke(cli, ["submit", "x.npy"], env=env)
    assert result.exit_code == 0, result.output
    (values,) = seen
    assert values["model"] == "lenet5" and values["s"] == 2
    assert values["queues"] == () and values["deadline"] is None  # CODEDFARM_QUEUES/_DEADLINE


def _worker_options_from_the_command_line(env: dict[str, str]) -> WorkerOptions:
    import codedfarm.worker as worker_pkg

    seen: list[WorkerOptions] = []

    def fake_run(settings: object, received: WorkerOptions) -> int:
        seen.append(received)
        return 0

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker_pkg, "run_worker", fake_run)
        result = CliRunner().invoke(cli, ["worker"], env=env)
    assert result.exit_code == 0, result.output
    (options,) = seen
    return options


def test_worker_from_env_reads_the_variables_of_codedfarm_worker(clean_env):
    (ctx,) = [c for c in _contexts() if c.command_path == "codedfarm worker"]
    by_name = {p.name: p for p in ctx.command.params}
    variables = WorkerOptions.env_variables()
    assert set(variables) == {f.name for f in dataclasses.fields(WorkerOptions)}
    for field, variable in variables.items():  # every field is an option of the command
        assert _read_by_click(ctx, by_name[field]) == {variable}, field
        assert _expected(ctx, by_name[field]) == variable, field
    env = {
        "CODEDFARM_WORKER_QUEUES": "a,b", "CODEDFARM_WORKER_ENGINE": "celery",
        "CODEDFARM_WORKER_CONCURRENCY": "3", "CODEDFARM_WORKER_POOL": "solo",
        "CODEDFARM_WORKER_DEVICE": "cuda:1", "CODEDFARM_WORKER_SLOWDOWN": "2.5",
        "CODEDFARM_WORKER_STRAGGLE": "exp:shift=0.1,rate=5",
        "CODEDFARM_WORKER_CORRUPT": "subtle:p=0.5", "CODEDFARM_WORKER_PRELOAD": "lenet5,noop",
        "CODEDFARM_WORKER_TORCH_THREADS": "2", "CODEDFARM_WORKER_METRICS_PORT": "9100",
        "CODEDFARM_WORKER_METRICS_ADDR": "127.0.0.1", "CODEDFARM_WORKER_HOSTNAME": "w1@here",
        "CODEDFARM_WORKER_LOGLEVEL": "info", "CODEDFARM_WORKER_EVENTS": "1",
        "CODEDFARM_WORKER_LIVENESS_TIMEOUT": "4.5",
    }  # fmt: skip
    assert set(env) == set(variables.values())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names warn about nothing
        from_env = WorkerOptions.from_env(env)
    assert from_env == _worker_options_from_the_command_line(env)
    assert from_env.queues == ("a", "b") and from_env.events is True
    assert from_env.concurrency == 3 and from_env.preload == ("lenet5", "noop")
    assert from_env.liveness_timeout == 4.5 and from_env.loglevel == "info"
    assert from_env.liveness_timeout == 4.5 and from_env.loglevel == "info"
    assert WorkerOptions.from_env({}) == WorkerOptions()


@pytest.mark.parametrize(
    ("field", "old", "raw", "value"),
    [
        ("device", "CODEDFARM_DEVICE", "cuda:1", "cuda:1"),
        ("slowdown", "CODEDFARM_SLOWDOWN", "3", 3.0),
        ("torch_threads", "CODEDFARM_TORCH_THREADS", "4", 4),
        ("preload", "CODEDFARM_PRELOAD", "lenet5,noop", ("lenet5", "noop")),
    ],
)
def test_old_worker_variables_still_work_and_warn(field, old, raw, value):
    new = f"CODEDFARM_WORKER_{field.upper()}"
    assert OLD_VARIABLES[field] == old
    message = rf"{old} is deprecated .*; use {new} \(old spellings work until 0\.3\)"
    with pytest.warns(DeprecationWarning, match=message) as caught:
        options = WorkerOptions.from_env({old: raw})
    assert getattr(options, field) == value
    assert [w.category for w in caught] == [DeprecationWarning]
    with pytest.warns(DeprecationWarning, match=message):  # both set: the new name wins
        both = WorkerOptions.from_env({old: raw, new: str(getattr(WorkerOptions(), field))})
    assert both == WorkerOptions() or field == "preload"


def test_old_worker_variables_are_not_read_by_codedfarm_worker(clean_env):
    """`codedfarm worker` reads only its own variables; the old names were for `celery`."""
    options = _worker_options_from_the_command_line({"CODEDFARM_DEVICE": "cuda:1"})
    assert options.device == "cpu"


def test_bad_worker_variables_name_the_variable():
    with pytest.raises(ConfigError, match="CODEDFARM_WORKER_CONCURRENCY must be an integer"):
        WorkerOptions.from_env({"CODEDFARM_WORKER_CONCURRENCY": "many"})
    with pytest.raises(ConfigError, match="CODEDFARM_WORKER_EVENTS must be 1 or 0"):
        WorkerOptions.from_env({"CODEDFARM_WORKER_EVENTS": "maybe"})
    with pytest.raises(ConfigError, match=r"concurrency must be >= 1, got 0 \(from CODEDFARM_W"):
        WorkerOptions.from_env({"CODEDFARM_WORKER_CONCURRENCY": "0"})
    with (
        pytest.raises(ConfigError, match=r"slowdown must be >= 1, got 0.5 \(from CODEDFARM_SLOW"),
        pytest.warns(DeprecationWarning, match="CODEDFARM_SLOWDOWN is deprecated"),
    ):
        WorkerOptions.from_env({"CODEDFARM_SLOWDOWN": "0.5"})


def test_docs_name_the_vocabulary_and_the_renamed_worker_variables():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "cli.md").read_text()
    intro = doc.split("\n\n")[1]
    assert "CODEDFARM_<COMMAND>_<OPTION>" in intro and "CODEDFARM_<SETTING>" in intro
    old_spellings = doc.split("## Old spellings (until 0.3)")[1]
    for field, old in OLD_VARIABLES.items():
        assert f"`{old}`" in old_spellings and f"`CODEDFARM_WORKER_{field.upper()}`" in (
            old_spellings
        )
