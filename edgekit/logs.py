"""Silencing the libraries edgekit wraps (TensorFlow, absl, oneDNN, tf2onnx, onnxruntime).

TensorFlow 2.21 writes its start-up lines from C++ straight to file descriptor 2, whatever
``TF_CPP_MIN_LOG_LEVEL`` says, so the only reliable switch is at the file-descriptor level:

- :func:`library_logs_silenced` points fds 1 and 2 at ``/dev/null`` for a block of code while
  Python's ``sys.stdout``/``sys.stderr`` keep writing where they wrote before (edgekit's own
  lines, progress bars); Python warnings and third-party ``logging`` records are muted too.
- :func:`quiet_fds` silences everything, Python writes included (TFLite converter chatter).

Pure Python, no third-party imports.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import TextIO

__all__ = ["library_logs_silenced", "quiet_fds"]

#: loggers that stay audible while the libraries are silenced
_OWN_LOGGER = "edgekit"


def _flush(*streams: TextIO | None) -> None:
    for stream in streams:
        with contextlib.suppress(Exception):
            if stream is not None:
                stream.flush()


def _writes_to(stream: TextIO | None, fd: int) -> bool:
    """Whether ``stream`` writes to file descriptor ``fd`` (False for captured streams)."""
    try:
        return stream is not None and stream.fileno() == fd
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


def _console(stream: TextIO, fd: int) -> tuple[TextIO, int | None]:
    """A stream that writes where ``stream`` writes now, also after ``fd`` is redirected.

    Returns the stream and the duplicated descriptor it owns (None when ``stream`` does not
    write to ``fd``, e.g. a test runner's capture buffer: then it is returned as it is).
    """
    if not _writes_to(stream, fd):
        return stream, None
    saved = os.dup(fd)
    console = open(saved, "w", buffering=1, closefd=False,  # noqa: SIM115 - closed by caller
                   encoding=getattr(stream, "encoding", None) or "utf-8",
                   errors=getattr(stream, "errors", None) or "replace")
    return console, saved


class _EdgekitOnly(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.name == _OWN_LOGGER or record.name.startswith(_OWN_LOGGER + ".")


@contextlib.contextmanager
def _muted_python_logs() -> Iterator[None]:
    """Third-party warnings and log records off; edgekit's own loggers stay."""
    root = logging.getLogger()
    handlers = [*root.handlers, *([logging.lastResort] if logging.lastResort else [])]
    only_own = _EdgekitOnly()
    for handler in handlers:
        handler.addFilter(only_own)
    quiet_loggers = ("tensorflow", "absl", "tf2onnx", "keras", "h5py", "onnxruntime",
                     "onnx", "openvino", "matplotlib", "PIL")
    levels = {name: logging.getLogger(name).level for name in quiet_loggers}
    for name in quiet_loggers:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            warnings.filterwarnings("default", module=r"edgekit(\.|$)")
            yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
        for handler in handlers:
            handler.removeFilter(only_own)


@contextlib.contextmanager
def library_logs_silenced(enabled: bool = True) -> Iterator[None]:
    """Send the C++ and Python chatter of the libraries to ``/dev/null`` inside the block.

    fds 1 and 2 point at ``/dev/null``; ``sys.stdout``/``sys.stderr`` are swapped for streams
    on copies of the original descriptors, so ``print``/``click.echo`` of edgekit still reach
    the terminal. Python warnings (but edgekit's) and the log records of TensorFlow, absl,
    tf2onnx, Keras and onnxruntime are muted. ``enabled=False`` (``-v``) changes nothing.
    """
    if not enabled:
        yield
        return
    old_out, old_err = sys.stdout, sys.stderr
    _flush(old_out, old_err, sys.__stdout__, sys.__stderr__)
    out, out_fd = _console(old_out, 1)
    err, err_fd = _console(old_err, 2)
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        sys.stdout, sys.stderr = out, err
        with _muted_python_logs():
            yield
    finally:
        _flush(out, err, sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
        sys.stdout, sys.stderr = old_out, old_err
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
        for stream, fd_ in ((out, out_fd), (err, err_fd)):
            if fd_ is not None:
                stream.close()  # a closed stream raises instead of writing to a reused fd
                os.close(fd_)


@contextlib.contextmanager
def quiet_fds() -> Iterator[None]:
    """Silence stdout/stderr completely, also of C++ code and subprocesses (TFLite converter
    chatter); Python log records below ERROR are dropped."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    null = os.open(os.devnull, os.O_WRONLY)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    old_out, old_err = sys.stdout, sys.stderr
    sink = open(os.devnull, "w")  # noqa: SIM115 - closed below
    try:
        os.dup2(null, 1)
        os.dup2(null, 2)
        if not _writes_to(old_out, 1):
            sys.stdout = sink
        if not _writes_to(old_err, 2):
            sys.stderr = sink
        yield
    finally:
        _flush(sys.stdout, sys.stderr)
        sys.stdout, sys.stderr = old_out, old_err
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, null):
            os.close(fd)
        sink.close()
        root.setLevel(level)
