"""The ``edgekit`` command line: the group (:mod:`edgekit.cli.app`) with every command
registered (one module per command group). It only parses options and calls the stage APIs.
"""

from __future__ import annotations

from edgekit.cli import doctor, export, measure, runtime_cmds, serve, train, tune
from edgekit.cli.app import cli, main

__all__ = ["main", "cli"]

#: the modules whose commands are registered on :data:`cli`
COMMAND_MODULES = (export, train, runtime_cmds, serve, measure, tune, doctor)

if __name__ == "__main__":  # pragma: no cover
    main()
