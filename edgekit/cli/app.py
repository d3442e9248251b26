"""The ``edgekit`` group, its error handling and what every command shares.

User errors (:class:`edgekit.errors.EdgekitError`) print ``error: ...`` and ``hint: ...`` and
exit with the error's code (1); usage errors (bad option values, missing input files) print
``error: ...`` and exit 2; bugs keep their traceback. Every command has ``-q/--quiet`` (no
progress or status lines; results and errors still print) and ``-v/--verbose`` (the
libraries' own log lines, which are silenced by default), see :func:`command`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.schema import MAX_BATCH, MAX_THREADS

__all__ = [
    "cli",
    "main",
    "command",
    "Verbosity",
    "verbosity",
    "echo_json",
    "echo_package",
    "package_option",
    "status",
    "progress_bar",
    "bar_updater",
    "refuse_overwrite",
    "deprecated_alias",
    "threads_option",
    "batch_option",
    "eval_data_option",
    "max_accuracy_drop_option",
    "existing_path",
    "parse_batches",
    "engine_option",
    "engines_option",
    "max_threads",
    "MAX_BATCH",
]

F = Callable[..., Any]


def max_threads() -> int:
    """Largest accepted ``--threads``: 4 x the logical cores, at most :data:`MAX_THREADS`."""
    return min(MAX_THREADS, 4 * (os.cpu_count() or 1))


class _Group(click.Group):
    """A click group printing ``error: ...`` (+ ``hint: ...``) for user and usage errors."""

    def invoke(self, ctx: click.Context) -> Any:
        from edgekit.errors import fs_fault, output_error
        from edgekit.io.tempdirs import interruptible

        try:
            try:
                with interruptible():  # SIGTERM unwinds too: temp folders are removed
                    return super().invoke(ctx)
            except OSError as os_exc:  # disk full, read-only, not a folder ... anywhere
                if fs_fault(os_exc) is None:
                    raise
                raise output_error(os_exc) from os_exc
        except EdgekitError as exc:
            click.echo(f"error: {exc.message}", err=True)
            if exc.hint:
                click.echo(f"hint: {exc.hint}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:
            sub = exc.ctx or ctx
            click.echo(f"error: {exc.format_message()}", err=True)
            click.echo(f"hint: see '{sub.command_path} --help'", err=True)
            ctx.exit(exc.exit_code)


@click.group("edgekit", cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgekit")
def cli() -> None:
    """edgekit: Keras model -> fast, small, validated ONNX for edge devices.

    \b
    Typical flow:
      edgekit train image_cnn -o model.keras --data ../shared/data/fashion-mnist
      edgekit export model.keras -o out/ --quantize int8 --calibration calib.npz
      edgekit run out/model.int8.onnx image.png
    """


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``edgekit``, ``python -m edgekit.cli``)."""
    cli.main(args=argv, prog_name="edgekit")


# ---------------------------------------------------------------------------------------------
# verbosity: -q / -v on every command
# ---------------------------------------------------------------------------------------------
class Verbosity:
    """The current command's verbosity: ``quiet`` (-q) or ``verbose`` (-v), default neither."""

    quiet: bool = False
    verbose: bool = False


verbosity = Verbosity()


def _verbosity_options(f: F) -> F:
    f = click.option("-v", "--verbose", "_verbose", is_flag=True,
                     help="Also show the libraries' log lines (TensorFlow, tf2onnx, "
                     "onnxruntime ...), silenced by default.")(f)
    return click.option("-q", "--quiet", "_quiet", is_flag=True,
                        help="No progress or status lines (results and errors still print).")(f)


def command(name: str, silence: bool = True, **kwargs: Any) -> Callable[[F], click.Command]:
    """``cli.command(name)`` plus ``-q/--quiet`` and ``-v/--verbose``.

    With ``silence`` (default True) the command body runs with the libraries' log lines sent
    to ``/dev/null`` (see :func:`edgekit.logs.library_logs_silenced`) unless ``-v``.
    """
    def decorate(f: F) -> click.Command:
        @functools.wraps(f)
        def wrapper(*args: Any, _quiet: bool, _verbose: bool, **params: Any) -> Any:
            if _quiet and _verbose:
                raise click.UsageError("give -q/--quiet or -v/--verbose, not both")
            verbosity.quiet, verbosity.verbose = _quiet, _verbose
            if not silence:
                return f(*args, **params)
            from edgekit.logs import library_logs_silenced

            if not _verbose:
                os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
            with library_logs_silenced(enabled=not _verbose):
                return f(*args, **params)

        return cli.command(name, **kwargs)(_verbosity_options(wrapper))

    return decorate


# ---------------------------------------------------------------------------------------------
# output helpers
# ---------------------------------------------------------------------------------------------
def echo_json(obj: Any) -> None:
    """Print ``obj`` as JSON on stdout (what ``--json`` does on every command)."""
    from edgekit.io.artifacts import to_json

    click.echo(to_json(obj))


def status(msg: str) -> None:
    """A short status line on stderr (none with ``-q``)."""
    if not verbosity.quiet:
        click.echo(f"... {msg}", err=True)


def progress_bar(label: str, hidden: bool = False) -> Any:
    """A 0..1000 progress bar on stderr (hidden with ``-q`` or ``hidden``)."""
    import sys

    return click.progressbar(length=1000, label=label, hidden=hidden or verbosity.quiet,
                             file=sys.stderr, show_percent=True)


def bar_updater(bar: Any) -> Callable[[float], None]:
    """A fraction-done callback (0..1) that advances ``bar``."""
    state = {"done": 0}

    def update(frac: float) -> None:
        n = int(1000 * min(1.0, max(0.0, frac)))
        if n > state["done"]:
            bar.update(n - state["done"])
            state["done"] = n

    return update


def refuse_overwrite(force: bool, *paths: Path | None) -> None:
    """Raise :class:`edgekit.errors.OutputExistsError` for an existing path unless ``force``
    (checked before any work, so a long run does not end in a refusal)."""
    from edgekit.errors import OutputExistsError

    for path in paths:
        if path is not None and path.exists() and not force:
            raise OutputExistsError(f"{path} exists", hint="pass --force to overwrite it")


# ---------------------------------------------------------------------------------------------
# shared options
# ---------------------------------------------------------------------------------------------
def existing_path(**kwargs: Any) -> click.Path:
    """``click.Path`` of an input that must exist (a missing one is a usage error, exit 2)."""
    return click.Path(exists=True, path_type=Path, **kwargs)


def threads_option(default: int | None = None, min_threads: int = 1,
                   help: str = "Intra-op threads of every runtime "
                   "(default: each library's default).", **kwargs: Any) -> Callable[[F], F]:
    """``--threads`` limited to ``min_threads``..:func:`max_threads` (exit 2 outside it)."""
    return click.option("--threads", type=click.IntRange(min_threads, max_threads()),
                        default=default, help=help, show_default=default is not None, **kwargs)


def eval_data_option(help: str = "Labelled evaluation data: .npz/.npy with y, an IDX folder "
                     "(its test split), an image folder (class sub-folders) or a text table "
                     "(text models).") -> Callable[[F], F]:
    """``--eval-data`` (must exist)."""
    return click.option("--eval-data", type=existing_path(), default=None, help=help)


def max_accuracy_drop_option(default: float,
                             help: str = "Largest accepted accuracy drop, in points.",
                             ) -> Callable[[F], F]:
    """``--max-accuracy-drop PT`` (>= 0), the one name of the accuracy budget."""
    return click.option("--max-accuracy-drop", type=click.FloatRange(0), default=default,
                        show_default=True, metavar="PT", help=help)


def json_option(help: str = "Print the result as JSON on stdout.") -> Callable[[F], F]:
    """``--json``: the one meaning of the flag, JSON on stdout (files go to ``--report``)."""
    return click.option("--json", "as_json", is_flag=True, help=help)


def force_option(help: str = "Overwrite existing output files.") -> Callable[[F], F]:
    """``--force``: overwrite what the command would write (refused without it)."""
    return click.option("--force", is_flag=True, help=help)


def package_option(command: str) -> Callable[[F], F]:
    """``--package DIR``: also write an ONNX Runtime model package (``edgekit.packaging``)."""
    what = ("fp32, int8 (static QDQ; needs --calibration) and fp16" if command == "export"
            else "fp32, the tuned int8 and fp16")
    return click.option(
        "--package", "package", type=click.Path(path_type=Path), default=None,
        help=f"Also write an ONNX Runtime model package folder: the {what} variants, one per "
        "execution provider and device (manifest.json, read with onnxruntime.ModelPackage).")


def echo_package(section: dict[str, Any]) -> None:
    """Print a report's ``package`` section for people."""
    names = ", ".join(f"{v['name']} ({v['precision']})" for v in section["variants"])
    click.echo(f"package: {section['path']} (variants {names})")


def batch_option(default: int = 1, help: str = "Batch size of the timed calls.",
                 **kwargs: Any) -> Callable[[F], F]:
    """``--batch N`` limited to 1..:data:`MAX_BATCH`."""
    return click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=default,
                        show_default=True, help=help, **kwargs)


def engine_option(default: str, extra: tuple[str, ...] = ("auto",),
                  help: str = "Engine of the model.") -> Callable[[F], F]:
    """``--engine NAME``: a registered engine or one of ``extra`` (e.g. ``auto``), checked
    against the engine registry when the command runs (so an engine registered after import
    counts); the value is the canonical name."""
    def check(ctx: click.Context, param: click.Parameter, value: str) -> str:
        from edgekit.errors import InputError
        from edgekit.runtime.engine_registry import engine_names, normalize_engine

        key = value.strip().lower()
        if key in extra:
            return key
        try:
            name = normalize_engine(key)
        except InputError:
            name = None
        if name is None:
            raise click.BadParameter(
                f"unknown engine {value!r}; use {', '.join([*engine_names(), *extra])}",
                ctx, param)
        return name

    return click.option("--engine", default=default, show_default=True, metavar="NAME",
                        callback=check, help=help)


def engines_option(help: str) -> Callable[[F], F]:
    """``--engines A,B``: comma-separated registered engines (checked against the registry
    when the command runs; aliases accepted), as a tuple of canonical names; default None."""
    def check(ctx: click.Context, param: click.Parameter,
              value: str | None) -> tuple[str, ...] | None:
        from edgekit.errors import InputError
        from edgekit.runtime.engine_registry import parse_engines

        if value is None:
            return None
        try:
            return parse_engines(value)
        except InputError as exc:
            raise click.BadParameter(str(exc), ctx, param) from None

    return click.option("--engines", default=None, metavar="A,B", callback=check, help=help)


def parse_batches(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, ...]:
    """Click callback: ``"1,8,32"`` -> ``(1, 8, 32)``; anything else is a usage error."""
    try:
        sizes = tuple(int(b) for b in value.split(",") if b.strip())
    except ValueError:
        raise click.BadParameter(f"comma-separated integers, e.g. 1,8,32; got {value!r}",
                                 ctx, param) from None
    if not sizes or any(not 1 <= b <= MAX_BATCH for b in sizes):
        raise click.BadParameter(f"batch sizes must be 1..{MAX_BATCH}; got {value!r}",
                                 ctx, param)
    return sizes


def deprecated_alias(old: str, dest: str, **kwargs: Any) -> Callable[[F], F]:
    """A hidden option ``old`` that still sets parameter ``dest`` (with a deprecation note on
    stderr); the command's documented option is the new name."""
    alias = f"_alias_{dest}"

    def decorate(f: F) -> F:
        @functools.wraps(f)
        def wrapper(*args: Any, **params: Any) -> Any:
            value = params.pop(alias, None)
            if value is not None:
                click.echo(f"note: {old} is deprecated; use --{dest.replace('_', '-')}",
                           err=True)
                params[dest] = value
            return f(*args, **params)

        return click.option(old, alias, hidden=True, default=None, **kwargs)(wrapper)

    return decorate

