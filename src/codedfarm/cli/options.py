"""The command line's shared vocabulary: options written once, used by every command.

The table of words is in docs/cli.md. Repeatable options also take comma lists
(``-Q gpu0,gpu1`` is ``-Q gpu0 -Q gpu1``); old spellings are kept for one release as
hidden aliases that print a deprecation warning (:func:`deprecated_alias`).

One environment vocabulary (:func:`apply_env_vocabulary`): every option reads exactly one
variable. A farm-wide setting is ``CODEDFARM_<SETTING>`` wherever it appears
(:class:`SettingOption`); a command's own option is ``CODEDFARM_<COMMAND>_<OPTION>``,
``<OPTION>`` its long name (``CODEDFARM_MODELS_ADD_INPUT_SHAPE``, ``CODEDFARM_SUBMIT_JSON``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click

from codedfarm.settings import REMOVED_IN, Settings, setting_variable

__all__ = [
    "ENV_PREFIX",
    "REMOVED_IN",
    "DynamicHelpOption",
    "SettingOption",
    "apply_env_vocabulary",
    "codec_help",
    "codec_list",
    "deprecated_alias",
    "engine_option",
    "json_option",
    "metrics_options",
    "model_help",
    "model_repository_option",
    "option_variable",
    "preload_option",
    "queues_option",
    "settings_from_context",
    "split_commas",
    "warn",
]

F = TypeVar("F", bound=Callable[..., Any])

ENV_PREFIX = "CODEDFARM"
"""click's ``auto_envvar_prefix`` of the ``codedfarm`` group."""


class SettingOption(click.Option):
    """An option that overrides the farm-wide setting ``setting``: its one variable is the
    setting's, ``CODEDFARM_<SETTING>``, never ``CODEDFARM_<COMMAND>_<OPTION>``.

    ``read_env``: click reads the variable (the option and the setting are one value:
    ``--redis-url``, ``--model-repository``). Without it the option reads none, and
    :class:`~codedfarm.settings.Settings` applies the variable when the option is not given,
    at its own place in the order: ``--deadline`` beats a model's config.json, while
    ``CODEDFARM_DEADLINE`` is the default below it."""

    def __init__(self, *args: Any, setting: str, read_env: bool = True, **kwargs: Any) -> None:
        if setting not in Settings.__dataclass_fields__:
            raise ValueError(f"no setting {setting!r}")
        self.setting = setting
        self.read_env = read_env
        kwargs["envvar"] = setting_variable(setting) if read_env else None
        kwargs["allow_from_autoenv"] = False
        super().__init__(*args, **kwargs)


def option_variable(path: Sequence[str], option: click.Parameter) -> str:
    """``CODEDFARM_<COMMAND>_<OPTION>``: ``path`` the prefix and command names
    (``("CODEDFARM", "models", "add")``), ``<OPTION>`` the option's first long name (else
    its parameter name), upper case, ``-`` as ``_``."""
    longs = [o for o in option.opts if o.startswith("--")]
    name = longs[0][2:] if longs else (option.name or "")
    return "_".join([*path, name]).upper().replace("-", "_")


def apply_env_vocabulary(command: click.Command, path: Sequence[str] = (ENV_PREFIX,)) -> None:
    """Give every option of ``command`` and its subcommands exactly one variable, in place:
    a :class:`SettingOption` keeps its setting's; an option with an explicit ``envvar``
    keeps it; the old spellings (hidden), ``--version`` and ``--help`` read none; every
    other option reads :func:`option_variable`. click's automatic name (from the parameter
    name, which may differ from the option's) is switched off everywhere, so no option
    reads two."""
    help_option = command.get_help_option(click.Context(command))  # built once, then cached
    for param in [*command.params, *([help_option] if help_option else [])]:
        if not isinstance(param, click.Option):
            continue  # arguments read only an explicit envvar (probe's URL)
        param.allow_from_autoenv = False
        if isinstance(param, SettingOption):
            continue
        if param.hidden or not param.expose_value:
            param.envvar = None
        elif not param.envvar:
            param.envvar = option_variable(path, param)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            apply_env_vocabulary(sub, (*path, name))


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    click.echo(f"warning: {message}", err=True)


def settings_from_context(**overrides: object) -> Settings:
    """Settings from ``CODEDFARM_*``, the group's ``--redis-url`` and ``overrides`` (a
    command's own options, such as ``model_repository``; None values are ignored)."""
    ctx = click.get_current_context()
    obj = ctx.find_root().obj or {}
    return Settings.from_env(None, redis_url=obj.get("redis_url"), **overrides)


def model_repository_option(required: bool = False) -> Callable[[F], F]:
    """``--model-repository``: the folder of the user's models (CODEDFARM_MODEL_REPOSITORY)."""
    return click.option(
        "--model-repository", type=click.Path(path_type=Path, file_okay=False),
        cls=SettingOption, setting="model_repository", required=required, show_envvar=True,
        default=None,
        help="The model repository: <dir>/<name>/config.json and <dir>/<name>/<version>/"
        "model.pt or model.pt2.",
    )  # fmt: skip


def _flatten(values: Iterable[str] | str | None) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = (values,)
    return tuple(part.strip() for value in values for part in value.split(",") if part.strip())


def split_commas(_ctx: click.Context, _param: click.Parameter, value: Any) -> tuple[str, ...]:
    """Callback of a repeatable option: ``-x a,b -x c`` -> ``("a", "b", "c")``."""
    return _flatten(value)


def codec_list(values: Iterable[str] | str | None) -> tuple[str, ...]:
    """Codec specs from repeated and comma-separated values. A spec's own parameters are
    comma-separated too, so a piece ``key=value`` joins the spec before it:
    ``"berrut,spline:lam_enc=0,lam_dec=0"`` -> ``("berrut", "spline:lam_enc=0,lam_dec=0")``."""
    specs: list[str] = []
    for piece in _flatten(values):
        if "=" in piece and ":" not in piece and specs:
            specs[-1] = f"{specs[-1]},{piece}"
        else:
            specs.append(piece)
    return tuple(specs)


def _split_codecs(_ctx: click.Context, _param: click.Parameter, value: Any) -> tuple[str, ...]:
    return codec_list(value)


class DynamicHelpOption(click.Option):
    """An option whose help text is computed when help is shown (so listing the models or
    codecs costs nothing when the command just runs)."""

    def __init__(self, *args: Any, help_fn: Callable[[], str], **kwargs: Any) -> None:
        self._help_fn = help_fn
        super().__init__(*args, **kwargs)

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        self.help = self._help_fn()
        return super().get_help_record(ctx)


def model_help(prefix: str = "Model") -> Callable[[], str]:
    def text() -> str:
        from codedfarm.models.registry import MODELS

        return (f"{prefix}: NAME[@VERSION] of the model repository, or built in: "
                f"{', '.join(MODELS)} (`codedfarm models` lists them).")  # fmt: skip

    return text


def codec_help(
    prefix: str = "Codec spec", extra: tuple[str, ...] = (), default: str | None = None
) -> Callable[[], str]:
    def text() -> str:
        from codedfarm.codecs import DEFAULT_CODEC, available_codecs

        names = ", ".join([*available_codecs(), *extra])
        # "{default}": the farm's default codec, or the command's own
        lead = prefix.format(default=default or DEFAULT_CODEC)
        return f"{lead}: {names}; with parameters as in spline:lam_enc=0,lam_dec=auto."

    return text


def codecs_option(help_fn: Callable[[], str], default: tuple[str, ...] = ()) -> Callable[[F], F]:
    """``--codec`` repeatable (and comma lists of specs)."""
    return click.option(
        "--codec", "codecs", cls=DynamicHelpOption, help_fn=help_fn, multiple=True,
        default=default, callback=_split_codecs, show_default=bool(default),
        metavar="SPEC[,SPEC...]",
    )  # fmt: skip


def engine_option(help_text: str) -> Callable[[F], F]:
    """``--engine celery|batch``: the worker engine."""
    return click.option(
        "--engine",
        type=click.Choice(["batch", "celery"]),
        default="batch",
        show_default=True,
        help=help_text,
    )


def queues_option(
    help_text: str, default: tuple[str, ...] = (), *, setting: bool = False
) -> Callable[[F], F]:
    """``-Q/--queues``: worker queues, repeatable and comma-separated (Celery's ``-Q``).
    ``setting``: the option overrides the farm-wide ``CODEDFARM_QUEUES`` (where batches
    go), which then applies when it is not given; else it is the command's own (the queues
    a worker consumes)."""
    extra: dict[str, Any] = {"cls": SettingOption, "setting": "queues", "read_env": False}
    return click.option(
        "-Q", "--queues", "queues", multiple=True, default=default, callback=split_commas,
        metavar="QUEUE[,QUEUE...]", show_default=bool(default), help=help_text,
        **(extra if setting else {}),
    )  # fmt: skip


def preload_option(help_text: str) -> Callable[[F], F]:
    """``--preload``: models a worker loads before it announces itself ready."""
    return click.option(
        "--preload", multiple=True, default=(), callback=split_commas, metavar="MODEL[,MODEL...]",
        cls=DynamicHelpOption, help_fn=model_help(help_text),
    )  # fmt: skip


def metrics_options(default_port: int, what: str) -> Callable[[F], F]:
    """``--metrics-port`` (0: off) and ``--metrics-addr`` of Prometheus ``/metrics``."""

    def decorator(f: F) -> F:
        f = click.option("--metrics-addr", default="0.0.0.0", help="Address of /metrics.")(f)
        return click.option(
            "--metrics-port", type=click.IntRange(0, 65535), default=default_port,
            help=f"Serve Prometheus /metrics of {what} on this port (0: off).",
        )(f)  # fmt: skip

    return decorator


def redundancy_option(help_text: str) -> Callable[[F], F]:
    """``--redundancy R``: a worker budget of tasks per row (R >= 1) instead of ``-n``."""
    return click.option("--redundancy", type=click.FloatRange(min=1.0), default=None,
                        metavar="R", help=help_text)  # fmt: skip


def json_option(what: str = "the results") -> Callable[[F], F]:
    """``--json``: print machine-readable output instead of the table."""
    return click.option("--json", "as_json", is_flag=True, help=f"Print {what} as JSON.")


def deprecated_alias(
    old: str,
    new: str,
    dest: str,
    *,
    multiple: bool = False,
    is_flag: bool = False,
    merge: Callable[[Any, Any], Any] | None = None,
) -> Callable[[F], F]:
    """Keep the old spelling ``old`` of option ``new`` (parameter ``dest``) for one release.

    The alias is hidden from ``--help``; using it prints a deprecation warning and its value
    goes to ``dest``: appended for repeatable options (tuples), else replacing it, or as
    ``merge(new_value, old_value)`` says.
    """
    hidden_dest = "deprecated__" + old.lstrip("-").replace("-", "_")

    def decorator(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            value = kwargs.pop(hidden_dest)
            if value not in (None, (), False):
                warn(f"{old} is deprecated and will be removed in codedfarm {REMOVED_IN}; "
                     f"use {new}")  # fmt: skip
                current = kwargs.get(dest)
                if merge is not None:
                    kwargs[dest] = merge(current, value)
                elif isinstance(current, tuple):
                    kwargs[dest] = (*current, *_flatten(value))
                else:
                    kwargs[dest] = value
            return f(*args, **kwargs)

        option = click.option(
            old, hidden_dest, hidden=True, multiple=multiple, is_flag=is_flag,
            default=False if is_flag else None, expose_value=True, allow_from_autoenv=False,
        )  # fmt: skip
        return option(wrapper)  # type: ignore[return-value]

    return decorator
