"""The one progress protocol of every stage.

Long-running API functions take two optional callbacks, always under these names:

- ``progress``: a :data:`StatusFn`, called with a short status line per slow step
  (``"int8: calibrating on 256 samples"``); the CLI prints it unless ``-q``.
- ``on_progress``: a :data:`FractionFn`, called with the done fraction in [0, 1]; the CLI
  drives a progress bar with it.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["StatusFn", "FractionFn", "status"]

#: called with a short status line
StatusFn = Callable[[str], None]
#: called with the done fraction in [0, 1]
FractionFn = Callable[[float], None]


def status(fn: StatusFn | None, message: str) -> None:
    """Send ``message`` to ``fn`` when there is one."""
    if fn is not None:
        fn(message)
