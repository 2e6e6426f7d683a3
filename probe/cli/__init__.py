"""The ``ringprobe`` command: a thin layer over the library, one module per command.

Command modules import only click and the standard library at the top; the measuring machinery
(aiohttp, dnspython, ...) loads when a command runs, so ``ringprobe --help`` stays fast.
User errors are one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import sys

import click

from probe import __version__
from probe.cli import run as run_cmd
from probe.cli import targets as targets_cmd
from probe.errors import RingprobeError

EXIT_USAGE = 2


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="ringprobe")
def cli() -> None:
    """ringprobe: do WhatsApp and Telegram calls work from this network, and if not, how do they
    fail?

    Run `ringprobe run` to measure (results go to ./ringprobe-results as JSON Lines), and
    `ringprobe targets` to see what would be contacted.
    """


cli.add_command(run_cmd.command)
cli.add_command(targets_cmd.command)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: click without its multi-line usage errors."""
    try:
        code = cli.main(args=argv, prog_name="ringprobe", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as exc:
        # `ringprobe` with no command: the help text, as a user expects.
        click.echo(exc.ctx.get_help() if exc.ctx else str(exc))
        code = 0
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx else ""
        click.echo(f"ringprobe: error: {exc.format_message()}{hint}", err=True)
        code = EXIT_USAGE
    except click.ClickException as exc:
        click.echo(f"ringprobe: error: {exc.format_message()}", err=True)
        code = exc.exit_code
    except RingprobeError as exc:
        click.echo(f"ringprobe: error: {exc}", err=True)
        code = EXIT_USAGE
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.Abort:
        click.echo("ringprobe: aborted", err=True)
        code = 130
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["cli", "main"]
