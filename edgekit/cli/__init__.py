"""The ``edgekit`` command line: parses options and calls the stage APIs."""

from edgekit.cli.main import cli, main

__all__ = ["cli", "main"]
