"""The ``codedfarm`` command line: a thin click layer over the package.

Every command parses its options and delegates; the words it uses are the same in every
command (docs/cli.md). Any :class:`~codedfarm.errors.CodedFarmError` becomes one line on
stderr and exit code 2, or 3 when the farm is unavailable (Redis, a worker, a collector).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from codedfarm.cli.experiments import compare, evaluate
from codedfarm.cli.farm import collector, probe, submit, worker
from codedfarm.cli.local import bench, demo, scale
from codedfarm.cli.models import models
from codedfarm.cli.options import ENV_PREFIX, SettingOption, apply_env_vocabulary
from codedfarm.cli.parity import parity
from codedfarm.cli.serve import loadgen, serve
from codedfarm.cli.shuffle import shuffle
from codedfarm.cli.soak import soak
from codedfarm.errors import CodedFarmError, FarmUnavailableError
from codedfarm.logs import (
    DEFAULT_LOG_LEVEL,
    FORMAT_VARIABLE,
    LEVEL_VARIABLE,
    LOG_FORMATS,
    LOG_LEVELS,
    LogConfig,
    configure_logging,
)

__all__ = ["cli", "main"]


EXIT_CODES = """\b
Exit status:
  0  done (submit: the batch decoded)
  1  the batch failed or timed out
  2  bad input or usage
  3  the farm is unavailable: Redis, a live worker on a queue, or the collector"""


class _Group(click.Group):
    """Turns every :class:`CodedFarmError` into a one-line message and exit code 2 (3 for a
    :class:`FarmUnavailableError`)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except FarmUnavailableError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(3)
        except CodedFarmError as exc:
            click.echo(f"error: {exc}", err=True)
            ctx.exit(2)


@click.group(
    cls=_Group,
    context_settings={"auto_envvar_prefix": ENV_PREFIX, "show_default": True},
    epilog=EXIT_CODES,
)
@click.version_option(package_name="codedfarm")
@click.option(
    "--redis-url",
    cls=SettingOption,
    setting="redis_url",
    default=None,
    help="Redis URL (redis://, rediss:// for TLS; user:password@ for auth). "
    "Default: CODEDFARM_REDIS_URL or redis://127.0.0.1:6379/0.",
)
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS, case_sensitive=False),
    default=DEFAULT_LOG_LEVEL,
    help="Lines below this level are not logged (debug: a line per task and per batch, "
    "with its request ids).",
)
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    default="text",
    help="text: a line of time, level, role, logger and message; json: one JSON object "
    'per line (docs/operations.md, "Logs").',
)
@click.pass_context
def cli(ctx: click.Context, redis_url: str | None, log_level: str, log_format: str) -> None:
    """codedfarm: straggler-resilient prediction serving with coded computing.

    Every option can also be set with one environment variable: a command's own option
    with CODEDFARM_<COMMAND>_<OPTION> (e.g. CODEDFARM_SUBMIT_MODEL), a farm-wide setting
    with CODEDFARM_<SETTING> wherever it appears (CODEDFARM_REDIS_URL, CODEDFARM_QUEUES,
    CODEDFARM_DEADLINE, CODEDFARM_MODEL_REPOSITORY, CODEDFARM_KEY_TTL, ...).
    """
    ctx.obj = {"redis_url": redis_url}
    config = LogConfig(level=log_level, format=log_format, role=ctx.invoked_subcommand or "cli")
    configure_logging(config)
    # the processes a command starts (demo's workers, scale's) log alike: they read the
    # variables, so a value given on the command line is passed on in them
    for name, variable in (("log_level", LEVEL_VARIABLE), ("log_format", FORMAT_VARIABLE)):
        if ctx.get_parameter_source(name) is click.core.ParameterSource.COMMANDLINE:
            os.environ[variable] = getattr(config, name.removeprefix("log_"))


for _command in (worker, collector, probe, submit, serve, loadgen, demo, scale, bench, soak,
                 compare, evaluate, models, parity, shuffle):  # fmt: skip
    cli.add_command(_command)
apply_env_vocabulary(cli)  # one variable per option (docs/cli.md)


def main() -> None:
    """Console-script entry point."""
    sys.exit(cli.main(prog_name="codedfarm"))
