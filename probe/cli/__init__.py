"""The ``ringprobe`` command (filled in by the CLI work)."""

import click


@click.group()
def main() -> None:
    """ringprobe: do WhatsApp and Telegram calls work from this network?"""
