"""Atomic artifact writing.

A run stages every file it produces in a hidden temporary folder inside the output folder and
moves them into place only when the whole run succeeded: a failed run leaves nothing behind
(not even the output folder, if the run created it), and existing files are never overwritten
unless ``force`` is set. Existence is checked *before* any work starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edgekit.errors import OutputExistsError

__all__ = ["ArtifactSet", "atomic_write_bytes", "atomic_write_json", "sha256_file", "to_json"]


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
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | os.PathLike[str], obj: Any, force: bool = False) -> Path:
    """Write ``obj`` as indented JSON, atomically (see :func:`atomic_write_bytes`)."""
    return atomic_write_bytes(path, (to_json(obj) + "\n").encode(), force=force)


class ArtifactSet:
    """The files one run will produce in ``outdir``, committed all at once.

    Use :meth:`open` as a context manager: inside it, write files with :meth:`path` (a staging
    path) or :meth:`write_bytes` / :meth:`write_json`; on normal exit they are renamed into
    ``outdir``; on an exception the staging folder is removed and ``outdir`` is left as it was.

    Args:
        outdir: the output folder (created on commit if missing).
        names: every file name the run will write; checked up front.
        force: overwrite existing files (default False).
    """

    def __init__(self, outdir: str | os.PathLike[str], names: Iterable[str], force: bool = False):
        self.outdir = Path(outdir)
        self.names = list(dict.fromkeys(names))
        self.force = force
        self._stage: Path | None = None
        self._created_outdir = False
        self.written: list[Path] = []

    def check(self) -> None:
        """Raise :class:`OutputExistsError` if a target exists and ``force`` is off."""
        if self.outdir.exists() and not self.outdir.is_dir():
            raise OutputExistsError(
                f"output path {self.outdir} exists and is not a folder",
                hint="choose another -o/--output folder",
            )
        if self.force:
            return
        existing = [n for n in self.names if (self.outdir / n).exists()]
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
        if not self.outdir.exists():
            self.outdir.mkdir(parents=True)
            self._created_outdir = True
        self._stage = Path(tempfile.mkdtemp(prefix=".edgekit-tmp-", dir=self.outdir))
        try:
            yield self
            self._commit()
        except BaseException:
            self._discard()
            raise
        finally:
            if self._stage is not None and self._stage.exists():
                shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None

    def _commit(self) -> None:
        assert self._stage is not None
        self.check()  # someone may have created a target meanwhile
        for name in self.names:
            src = self._stage / name
            if src.exists():
                dst = self.outdir / name
                if dst.is_dir() and not src.is_dir():
                    shutil.rmtree(dst)
                os.replace(src, dst)
                self.written.append(dst)

    def _discard(self) -> None:
        if self._stage is not None:
            shutil.rmtree(self._stage, ignore_errors=True)
            self._stage = None
        if self._created_outdir:
            try:
                self.outdir.rmdir()  # only if empty
            except OSError:
                pass
