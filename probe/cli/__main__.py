"""`python -m probe.cli` runs the ringprobe command."""

from probe.cli import main

main()
