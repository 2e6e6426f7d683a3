"""The ``ringprobe`` command: a thin layer over the library, one module per command.

Command modules import only click and the standard library at the top; the measuring machinery
(aiohttp, dnspython, ...) loads when a command runs, so ``ringprobe --help`` stays fast.
User errors are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import click

from probe import __version__
from probe.cli import analyze as analyze_cmd
from probe.cli import collector as collector_cmd
from probe.cli import config as config_cmd
from probe.cli import consent as consent_cmd
from probe.cli import lab as lab_cmd
from probe.cli import reflector as reflector_cmd
from probe.cli import run as run_cmd
from probe.cli import targets as targets_cmd
from probe.cli import trace as trace_cmd
from probe.cli import upload as upload_cmd
from probe.errors import RingprobeError

EXIT_USAGE = 2


class RingprobeGroup(click.Group):
    """click's group with ringprobe's error convention: one line, ``ringprobe: error: ...``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except RingprobeError as exc:
            # Our own input errors (bad catalog, bad allow-list, bad option value) are usage errors.
            raise click.UsageError(str(exc), ctx) from exc

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            super().main(args, prog_name or "ringprobe", complete_var, False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
            _exit(0)
        except click.UsageError as exc:
            hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
            _fail(f"{exc.format_message()}{hint}", EXIT_USAGE)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code)
        except click.exceptions.Exit as exc:
            _exit(exc.exit_code)
        except click.Abort:
            _fail("aborted", 130)
        _exit(0)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"ringprobe: error: {message}", err=True)
    _exit(code)


def _exit(code: int) -> NoReturn:
    sys.exit(code)


@click.group(cls=RingprobeGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ringprobe")
def cli() -> None:
    """ringprobe: do WhatsApp and Telegram calls work from this network, and if not, how do they
    fail?

    `ringprobe run` measures (results go to ./ringprobe-results as JSON Lines);
    `ringprobe analyze` turns records into verdicts; `ringprobe targets` shows what a run
    would contact; `ringprobe trace` finds the hop where a trigger meets interference;
    `ringprobe consent` says what measuring involves; `ringprobe config` edits the settings.
    """


cli.add_command(run_cmd.command)
cli.add_command(analyze_cmd.command)
cli.add_command(targets_cmd.command)
cli.add_command(lab_cmd.command)
cli.add_command(reflector_cmd.command)
cli.add_command(trace_cmd.command)
cli.add_command(consent_cmd.command)
cli.add_command(config_cmd.command)
cli.add_command(collector_cmd.command)
cli.add_command(upload_cmd.command)


def main() -> None:
    """Console-script entry point."""
    cli.main()


__all__ = ["cli", "main"]
