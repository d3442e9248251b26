"""Temporary folders that are removed on every way out, and interruptions that let them go.

:func:`temp_dir` is the one way stages get a scratch folder: it is registered while it lives,
removed on exit (normal, exception, SIGINT, SIGTERM), and a file-system refusal while creating
or filling it (disk full, read-only ...) becomes :class:`edgekit.errors.OutputError` naming the
folder. :func:`private_tempdir` also points :mod:`tempfile`'s default at it, so that what
libraries create there (Keras extracts ``.keras`` archives into ``tempfile.mkdtemp()``) goes
with it. :func:`interruptible` turns SIGTERM into :class:`Terminated` (a ``SystemExit``) in the
main thread, so that ``finally`` blocks and context managers run, and removes whatever
registered folder is left.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from edgekit.errors import fs_fault, output_error

__all__ = [
    "Terminated",
    "drop_temp_dir",
    "interruptible",
    "new_temp_dir",
    "private_tempdir",
    "register",
    "remove_registered",
    "temp_dir",
    "uninterrupted",
    "unregister",
]

_LIVE: dict[Path, None] = {}  # insertion-ordered set of the folders to remove on the way out
_LOCK = threading.Lock()
_DEFER = {"depth": 0, "pending": 0}  # uninterrupted() nesting, and a signal it held back


class Terminated(SystemExit):
    """Raised in the main thread by a SIGTERM inside :func:`interruptible` (exit 128 + 15)."""


def register(path: str | os.PathLike[str]) -> Path:
    """Remove ``path`` (a folder) when the process is interrupted; returns it as a Path."""
    p = Path(path)
    with _LOCK:
        _LIVE[p] = None
    return p


def unregister(path: str | os.PathLike[str]) -> None:
    """Forget ``path`` (it was removed or committed)."""
    with _LOCK:
        _LIVE.pop(Path(path), None)


def remove_registered() -> list[Path]:
    """Remove every registered folder that still exists (newest first); returns them."""
    with _LOCK:
        paths = list(reversed(_LIVE))
        _LIVE.clear()
    for p in paths:
        shutil.rmtree(p, ignore_errors=True)
    return paths


@contextmanager
def uninterrupted() -> Iterator[None]:
    """Hold back a SIGTERM/SIGINT that :func:`interruptible` would raise until the block ends:
    for creating a folder and registering it, so that an interruption between the two cannot
    leave an unregistered folder behind (it is raised right after, with the folder known).
    Signals are handled in the main thread only, so other threads hold nothing back."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    _DEFER["depth"] += 1
    try:
        yield
    finally:
        _DEFER["depth"] -= 1
        signum = _DEFER["pending"]
        if _DEFER["depth"] == 0 and signum:
            _DEFER["pending"] = 0
            _raise_for(signum)


def _raise_for(signum: int) -> None:
    if signum == signal.SIGINT:
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let the clean-up finish
    raise Terminated(128 + signum)


def _mkdtemp(prefix: str, dir: str | os.PathLike[str] | None) -> Path:
    try:
        with uninterrupted():
            return register(tempfile.mkdtemp(prefix=prefix, dir=dir))
    except OSError as exc:
        if fs_fault(exc) is None:
            raise
        where = os.fspath(dir) if dir is not None else tempfile.gettempdir()
        raise output_error(exc, where, "create a temporary folder in", temp=True) from exc


def new_temp_dir(prefix: str = "edgekit-", dir: str | os.PathLike[str] | None = None) -> Path:
    """A fresh folder, registered (removed if the process is interrupted), for an owner that
    outlives a ``with`` block; the owner removes it with :func:`drop_temp_dir`."""
    return _mkdtemp(prefix, dir)


def drop_temp_dir(path: str | os.PathLike[str]) -> None:
    """Remove a folder of :func:`new_temp_dir` and forget it."""
    shutil.rmtree(path, ignore_errors=True)
    unregister(path)


@contextmanager
def temp_dir(prefix: str = "edgekit-", dir: str | os.PathLike[str] | None = None
             ) -> Iterator[Path]:
    """A fresh folder (in ``dir``, default the temp folder), removed on exit; a file-system
    refusal inside it becomes :class:`OutputError` naming it."""
    path = _mkdtemp(prefix, dir)
    try:
        yield path
    except OSError as exc:
        if fs_fault(exc) is None or not _inside(exc.filename, path):
            raise
        raise output_error(exc, exc.filename or path, temp=dir is None) from exc
    finally:
        drop_temp_dir(path)


def _inside(filename: Any, folder: Path) -> bool:
    if filename is None:
        return True  # write errors carry no file name: the folder being filled is the suspect
    try:
        return Path(os.fsdecode(filename)).resolve().is_relative_to(folder.resolve())
    except (TypeError, ValueError, OSError):
        return False


@contextmanager
def private_tempdir(prefix: str = "edgekit-") -> Iterator[Path]:
    """:func:`temp_dir` that is also :mod:`tempfile`'s default folder while it lives, so that
    libraries' own temp files and folders are removed with it (not thread-safe: the CLI's
    main thread only)."""
    with temp_dir(prefix) as path:
        previous = tempfile.tempdir
        tempfile.tempdir = str(path)
        try:
            yield path
        finally:
            tempfile.tempdir = previous


@contextmanager
def interruptible(message: bool = True) -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the main thread while inside (a second SIGTERM
    during the clean-up is ignored); registered folders are removed on the way out. With
    ``message`` (default True) an interruption prints ``error: interrupted ...`` to stderr.
    Outside the main thread it only removes the folders."""
    if threading.current_thread() is not threading.main_thread():
        try:
            yield
        finally:
            remove_registered()
        return

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if _DEFER["depth"]:
            _DEFER["pending"] = _DEFER["pending"] or signum
            return
        _raise_for(signum)

    previous = signal.signal(signal.SIGTERM, on_signal)
    previous_int = signal.signal(signal.SIGINT, on_signal)
    try:
        yield
    except (Terminated, KeyboardInterrupt) as exc:
        removed = remove_registered()
        if message:
            what = "SIGTERM" if isinstance(exc, Terminated) else "SIGINT (Ctrl-C)"
            tail = "; unfinished outputs and temporary files were removed" if removed else ""
            sys.stderr.write(f"error: interrupted by {what}{tail}\n")
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
        remove_registered()
