"""Atomic artifact writing.

A run stages every file it produces in a hidden temporary folder and moves them into place only
when the whole run succeeded: a failed or interrupted run leaves nothing behind (not even the
output folder, if the run created it), a multi-file set becomes visible all at once (see
:class:`ArtifactSet` for the commit protocol), and existing files are never overwritten unless
``force`` is set. Existence is checked *before* any work starts. File-system refusals (disk
full, read-only, not a folder, no permission, I/O error) become
:class:`edgekit.errors.OutputError` naming the path.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekit.errors import OutputError, OutputExistsError, SchemaError, fs_fault, output_error
from edgekit.io.tempdirs import register, uninterrupted, unregister
from edgekit.schema import Fields, list_of, string

logger = logging.getLogger(__name__)

__all__ = [
    "ArtifactSet",
    "atomic_write_bytes",
    "atomic_write_json",
    "file_entry",
    "fsync_files",
    "recover",
    "sha256_file",
    "to_json",
]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, or of every file below a folder (sorted by relative path)."""
    h = hashlib.sha256()
    p = Path(path)
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def file_entry(name: str, data: bytes) -> dict[str, Any]:
    """How a report describes one file it comes with: its name, and the size and sha256 of
    ``data``, the exact bytes written (so the report can be checked against the file)."""
    return {"path": name, "size_bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _json_default(obj: Any) -> Any:
    import dataclasses
    import enum

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, Path):
        return str(obj)
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def to_json(obj: Any, indent: int | None = 2) -> str:
    """JSON text for dataclasses, enums, paths and numpy values."""
    return json.dumps(obj, indent=indent, default=_json_default, sort_keys=False)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, force: bool = False) -> Path:
    """Write ``data`` to ``path`` through a temp file + rename (default: refuse to overwrite)."""
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists", hint="pass --force to overwrite it")
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and fs_fault(exc) is not None:
            raise output_error(exc, path) from exc
        raise
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any, force: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, (to_json(obj) + "\n").encode(), force=force)


_STAGE_PREFIX = ".edgekit-tmp-"
_JOURNAL = ".edgekit-commit.json"
_PREVIOUS = ".edgekit-previous"


class ArtifactSet:
    """The files one run will produce in ``outdir``, committed all at once.

    Use :meth:`open` as a context manager: inside it, write files (or folders) with
    :meth:`path` (a staging path) or :meth:`write_bytes` / :meth:`write_json`; on normal exit
    they are committed into ``outdir``; on an exception (SIGINT/SIGTERM included, see
    :func:`edgekit.io.tempdirs.interruptible`) the staging folder is removed and ``outdir`` is
    left as it was. A file-system refusal becomes :class:`edgekit.errors.OutputError` naming
    the final path.

    Commit protocol: ``outdir`` holds either the previous complete set or the new one.

    - Files are staged in a hidden folder ``.edgekit-tmp-<pid>-*``: inside ``outdir`` when it
      exists, else beside it.
    - New ``outdir``: the staging folder, holding just the declared files, is renamed to
      ``outdir`` (one atomic rename).
    - Existing ``outdir``: the staged files are synced and a journal (``.edgekit-commit.json``:
      the outdir and the names) is written into the staging folder; then, per name, the
      previous file or folder is moved aside into the staging folder and the new one renamed
      into place. An error or an interruption during these renames moves every previous file
      back. A process killed outright mid-commit (SIGKILL, power loss) leaves the journal
      behind, and the next ArtifactSet opened on that ``outdir`` (:func:`recover`) finishes the
      commit first: once the journal exists, the whole new set is in the staging folder.

    Args:
        outdir: the output folder (created on commit if missing).
        names: every file name the run will write; checked up front.
        force: overwrite existing files (default False).
        updates: names among ``names`` that the run rewrites from their previous content
            (a report that gains a section): they may exist without ``force``.
    """

    def __init__(self, outdir: str | os.PathLike[str], names: Iterable[str], force: bool = False,
                 updates: Iterable[str] = ()):
        self.outdir = Path(outdir)
        self.names = list(dict.fromkeys(names))
        self.force = force
        self.updates = frozenset(updates)
        self._stage: Path | None = None
        self._made: list[Path] = []  # parent folders this run created (removed on failure)
        self._keep_stage = False
        self.written: list[Path] = []
        self._recovered = False  # recover() ran for outdir (once per set is enough)

    def check(self) -> None:
        """Raise :class:`OutputExistsError` if a target exists and ``force`` is off (or
        :class:`OutputError` if a file stands where ``outdir`` or one of its parents should).

        A commit that a killed process left half-done in ``outdir`` is finished first
        (:func:`recover`, once per set), so what is checked is a complete set, never a partial
        one."""
        if not self._recovered:
            recover(self.outdir)
            self._recovered = True
        if self.outdir.exists() and not self.outdir.is_dir():
            raise OutputExistsError(
                f"output path {self.outdir} exists and is not a folder",
                hint="choose another -o/--output folder",
            )
        blocker = next((p for p in self.outdir.parents if p.exists() and not p.is_dir()), None)
        if blocker is not None:
            raise OutputError(f"cannot write {self.outdir}: {blocker} is a file, not a folder",
                              hint="choose another -o/--output folder")
        if self.force:
            return
        existing = [n for n in self.names if n not in self.updates and (self.outdir / n).exists()]
        if existing:
            raise OutputExistsError(
                f"{', '.join(str(self.outdir / n) for n in existing)} already exist"
                + ("s" if len(existing) == 1 else ""),
                hint="pass --force to overwrite, or choose another output folder",
            )

    def add(self, name: str) -> Path:
        """Declare one more output name (checked like the others) and return its staging path."""
        if name not in self.names:
            self.names.append(name)
            if not self.force and (self.outdir / name).exists():
                raise OutputExistsError(
                    f"{self.outdir / name} already exists", hint="pass --force to overwrite it"
                )
        return self.path(name)

    def path(self, name: str) -> Path:
        """Staging path of output ``name`` (must be declared)."""
        if self._stage is None:
            raise RuntimeError("ArtifactSet.path() outside of open()")
        if name not in self.names:
            raise RuntimeError(f"undeclared artifact {name!r}")
        return self._stage / name

    def write_bytes(self, name: str, data: bytes) -> Path:
        """Stage ``data`` as output ``name``."""
        p = self.path(name)
        p.write_bytes(data)
        return p

    def write_json(self, name: str, obj: Any) -> Path:
        """Stage ``obj`` as indented JSON under output ``name``."""
        p = self.path(name)
        p.write_text(to_json(obj) + "\n")
        return p

    @property
    def stage_dir(self) -> Path:
        """The staging folder (only inside :meth:`open`)."""
        if self._stage is None:
            raise RuntimeError("ArtifactSet.stage_dir outside of open()")
        return self._stage

    def final(self, name: str) -> Path:
        """Where output ``name`` lands after commit."""
        return self.outdir / name

    @contextmanager
    def open(self) -> Iterator[ArtifactSet]:
        """Stage, then commit on success or discard on failure."""
        self.check()
        try:
            self._stage = self._make_stage()
            yield self
            self._commit()
        except BaseException as exc:
            self._discard()
            fault = fs_fault(exc) if isinstance(exc, OSError) else None
            if fault is not None:
                raise self._error(fault) from exc
            raise
        finally:
            self._drop_stage()

    # -- staging ---------------------------------------------------------------------------
    def _make_stage(self) -> Path:
        if self.outdir.is_dir():
            parent, prefix = self.outdir, f"{_STAGE_PREFIX}{os.getpid()}-"
        else:
            parent = self.outdir.parent
            missing = [p for p in [parent, *parent.parents] if not p.exists()]
            parent.mkdir(parents=True, exist_ok=True)
            self._made = missing  # innermost first
            prefix = f"{_STAGE_PREFIX}{os.getpid()}-{self.outdir.name}-"
        while True:  # os.mkdir, not mkdtemp: the folder may become outdir, with umask modes
            stage = parent / f"{prefix}{secrets.token_hex(4)}"
            try:
                with uninterrupted():  # a SIGTERM right after mkdir still finds it registered
                    stage.mkdir()
                    return register(stage)
            except FileExistsError:
                continue

    def _drop_stage(self) -> None:
        if self._stage is not None:
            if not self._keep_stage:
                shutil.rmtree(self._stage, ignore_errors=True)
            unregister(self._stage)
        self._stage = None

    def _discard(self) -> None:
        self._drop_stage()
        for folder in self._made:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break

    def _error(self, exc: OSError) -> Exception:
        target: Path = self.outdir
        if exc.filename is not None and self._stage is not None:
            name = Path(os.fsdecode(exc.filename))
            target = (self.outdir / name.relative_to(self._stage)
                      if name.is_relative_to(self._stage) else name)
        err = output_error(exc, target)
        if self._keep_stage:
            err.hint = (f"{err.hint}; {self.outdir} may hold a mix of the previous and the new "
                        f"files until the next edgekit run that writes there completes the set")
        return err

    # -- commit ----------------------------------------------------------------------------
    def _commit(self) -> None:
        stage = self._stage
        assert stage is not None
        self.check()  # someone may have created a target meanwhile
        names = [n for n in self.names if os.path.lexists(stage / n)]
        _fsync(stage, names)
        if not self.outdir.exists():
            for extra in stage.iterdir():  # undeclared scratch files stay out of the set
                if extra.name not in names:
                    _remove(extra)
            try:
                os.rename(stage, self.outdir)
            except OSError as exc:
                if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                    raise
            else:
                unregister(stage)
                self._stage = None
                self.written = [self.outdir / n for n in names]
                return
        self._swap_in(stage, names)
        self.written = [self.outdir / n for n in names]

    def _swap_in(self, stage: Path, names: list[str]) -> None:
        journal = stage / _JOURNAL
        _write_synced(journal, to_json({"outdir": str(self.outdir.resolve()), "names": names}))
        previous = stage / _PREVIOUS
        previous.mkdir()
        moved: list[tuple[str, bool]] = []  # (name, an old one was moved aside)
        try:
            for name in names:
                dst = self.outdir / name
                had = os.path.lexists(dst)
                if had:
                    os.replace(dst, previous / name)
                moved.append((name, had))
                os.replace(stage / name, dst)
        except BaseException:
            self._roll_back(stage, moved)
            raise
        journal.unlink()
        _fsync_dir(self.outdir)

    def _roll_back(self, stage: Path, moved: list[tuple[str, bool]]) -> None:
        try:
            for name, had in reversed(moved):
                dst = self.outdir / name
                if not os.path.lexists(stage / name) and os.path.lexists(dst):
                    os.replace(dst, stage / name)
                if had:
                    os.replace(stage / _PREVIOUS / name, dst)
            (stage / _JOURNAL).unlink()
        except OSError:
            self._keep_stage = True  # the journal stays: recover() completes the new set


def recover(outdir: str | os.PathLike[str]) -> list[Path]:
    """Finish the commits that a killed edgekit process left half-done in ``outdir`` (staging
    folders with a journal) and remove the staging folders of dead processes; folders of
    processes still running, and folders whose journal is not one edgekit wrote (a warning),
    are left alone. Returns the folders handled."""
    out = Path(outdir)
    handled = []
    for folder in (out, out.parent):
        try:
            stages = [p for p in folder.iterdir() if p.name.startswith(_STAGE_PREFIX)]
        except OSError:
            continue
        for stage in stages:
            pid = stage.name[len(_STAGE_PREFIX):].split("-", 1)[0]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            journal = stage / _JOURNAL
            if journal.is_file():
                try:
                    commit = _read_journal(stage)
                except (OSError, SchemaError) as exc:
                    logger.warning("left %s alone: its journal is unusable (%s)", stage, exc)
                    continue
                if commit is not None:
                    _roll_forward(stage, *commit)
            shutil.rmtree(stage, ignore_errors=True)
            handled.append(stage)
    return handled


def _read_journal(stage: Path) -> tuple[Path, list[str]] | None:
    """The output folder and names of ``stage``'s journal: plain names, and a folder that is
    the stage's own or a sibling (:class:`SchemaError` otherwise, and the stage is left
    alone). None when the journal is torn: it is synced before the first rename, so a
    process that died while writing it had moved nothing, and its stage holds only new files."""
    limit = 1 << 20
    with open(stage / _JOURNAL, "rb") as fh:
        raw = fh.read(limit + 1)
    if len(raw) > limit:
        raise SchemaError(f"the journal is larger than {limit >> 10} KiB, far more than edgekit "
                          "writes there")
    try:
        data = json.loads(raw)
    except RecursionError:
        raise SchemaError("the journal is nested too deeply to be edgekit's") from None
    except ValueError:  # cut short: nothing was moved
        return None
    f = Fields(data)
    out = Path(f.get("outdir", string()))
    names = f.get("names", list_of(string(max_len=255), 1 << 16))
    if any(n in ("", ".", "..") or "/" in n or os.sep in n for n in names):
        raise SchemaError("names must be plain file names")
    if stage.parent.resolve() not in (out.resolve(), out.resolve().parent):
        raise SchemaError(f"outdir {out} is not beside the staging folder")
    return out, names


def _roll_forward(stage: Path, out: Path, names: list[str]) -> None:
    previous = stage / _PREVIOUS
    previous.mkdir(exist_ok=True)
    for name in names:
        if os.path.lexists(stage / name):
            dst = out / name
            if os.path.lexists(dst):
                os.replace(dst, previous / name)
            os.replace(stage / name, dst)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _write_synced(path: Path, text: str) -> None:
    with open(path, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync(folder: Path, names: Iterable[str]) -> None:
    """Flush staged files (top level) and the folder to disk before they are published."""
    fsync_files(folder / name for name in names)
    _fsync_dir(folder)


def fsync_files(paths: Iterable[Path]) -> None:
    """Flush each regular file of ``paths`` to disk (folders and missing paths are skipped)."""
    for p in paths:
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
