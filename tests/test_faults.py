"""Fault injection: file-system refusals (disk full, read-only, not a folder, I/O error) and
SIGTERM end in an ``error:`` line naming the path, no traceback, no temp folder, and an output
folder that holds either the previous complete artifact set or the new one."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from _runtime_models import make_image_model
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import DataError, ModelLoadError, OutputError
from edgekit.inputs.data import load_dataset
from edgekit.inputs.prepare import DataFile, onnx_input_specs
from edgekit.io.artifacts import ArtifactSet, recover
from edgekit.io.onnxfile import load_onnx
from edgekit.io.tempdirs import private_tempdir, temp_dir
from edgekit.metadata import ModelMetadata

pytestmark = pytest.mark.file_seconds(20)

ROOT = Path(__file__).resolve().parents[1]


def _tree(folder: Path) -> dict[str, str]:
    """sha256 of every file below ``folder`` by relative path (hidden staging folders too)."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _no_temp_left(*folders: Path) -> None:
    for folder in folders:
        if folder.exists():
            assert not [p for p in folder.rglob(".edgekit-*")], list(folder.rglob(".edgekit-*"))


def _fail_on_call(monkeypatch: pytest.MonkeyPatch, name: str, n: int, code: int) -> list[int]:
    """Make ``os.<name>`` raise ``OSError(code)`` on its ``n``-th call (1-based)."""
    real, calls = getattr(os, name), [0]

    def fake(*args: object, **kwargs: object) -> object:
        calls[0] += 1
        if calls[0] == n:
            raise OSError(code, os.strerror(code))
        return real(*args, **kwargs)

    monkeypatch.setattr(os, name, fake)
    return calls


def _assert_clean_error(result: object, path_part: str) -> str:
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 1, out  # type: ignore[attr-defined]
    assert "Traceback" not in out
    assert result.exception is None or isinstance(result.exception, SystemExit)  # type: ignore[attr-defined]
    line = next(ln for ln in out.splitlines() if ln.startswith("error: "))
    assert path_part in line
    assert "hint: " in out
    return line


@pytest.fixture()
def tiny(tmp_path: Path) -> Path:
    return make_image_model(tmp_path / "tiny.onnx")


def _package(model: Path, repo: Path, *extra: str) -> object:
    return CliRunner().invoke(cli, ["package", str(model), "--triton", str(repo), *extra])


# ------------------------------------------------------------------------------------------
# commit faults: previous complete set or new complete set
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("call", "code"), [(1, errno.EROFS), (2, errno.ENOSPC), (3, errno.EIO)])
def test_rename_fault_mid_commit_keeps_previous_set(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, call: int, code: int
) -> None:
    repo = tmp_path / "repo"
    first = _package(tiny, repo)
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    (repo / "tiny" / "config.pbtxt").write_text("# the previous set\n")  # tell the sets apart
    before = _tree(repo)
    assert set(before) >= {"tiny/config.pbtxt", "tiny/1/model.onnx", "tiny.kserve.yaml"}
    calls = _fail_on_call(monkeypatch, "replace", call, code)
    result = _package(tiny, repo, "--force")
    monkeypatch.undo()
    assert calls[0] >= call
    line = _assert_clean_error(result, str(repo))
    assert os.strerror(code) in line
    assert _tree(repo) == before  # the previous complete set, byte for byte
    _no_temp_left(tmp_path)
    again = _package(tiny, repo, "--force")  # and the next run commits the new set
    assert again.exit_code == 0, again.output  # type: ignore[attr-defined]
    assert (repo / "tiny" / "config.pbtxt").read_text() != "# the previous set\n"


def test_new_outdir_appears_whole_or_not_at_all(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = tmp_path / "a" / "repo"
    _fail_on_call(monkeypatch, "rename", 1, errno.EROFS)
    result = _package(tiny, repo)
    monkeypatch.undo()
    line = _assert_clean_error(result, "repo")
    assert "Read-only file system" in line
    assert not (tmp_path / "a").exists()  # nor the parent this run created
    _no_temp_left(tmp_path)
    ok = _package(tiny, repo)
    assert ok.exit_code == 0 and sorted(_tree(repo)) == [  # type: ignore[attr-defined]
        "tiny.kserve.yaml", "tiny/1/model.onnx", "tiny/config.pbtxt", "tiny/labels.txt"]


def test_disk_full_while_staging_quantize(
    tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    first = CliRunner().invoke(cli, ["quantize", str(tiny), "-o", str(out), "--quantize", "fp16"])
    assert first.exit_code == 0, first.output
    before = _tree(out)
    assert "tiny.fp16.onnx" in before
    _fail_on_call(monkeypatch, "fsync", 1, errno.ENOSPC)  # the first fsync: staged files
    result = CliRunner().invoke(
        cli, ["quantize", str(tiny), "-o", str(out), "--quantize", "fp16", "--force"])
    monkeypatch.undo()
    line = _assert_clean_error(result, str(out))
    assert "No space left on device" in line
    assert "free some space" in result.output
    assert _tree(out) == before
    _no_temp_left(tmp_path)


def test_read_only_outdir(tiny: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "other.txt").write_text("someone else's file\n")
    if os.geteuid() != 0:
        repo.chmod(0o555)
    else:  # root writes through 0o555: refuse like a read-only mount does
        real_mkdir = os.mkdir

        def mkdir(path: object, *args: object, **kwargs: object) -> None:
            if Path(os.fsdecode(path)).parent == repo:  # type: ignore[arg-type]
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fsdecode(path))  # type: ignore[arg-type]
            real_mkdir(path, *args, **kwargs)  # type: ignore[arg-type]

        monkeypatch.setattr(os, "mkdir", mkdir)
    try:
        result = _package(tiny, repo)
    finally:
        monkeypatch.undo()
        repo.chmod(0o755)
    line = _assert_clean_error(result, str(repo))
    assert "Read-only" in line or "Permission denied" in line
    assert _tree(repo) == {"other.txt": hashlib.sha256(b"someone else's file\n").hexdigest()}


def test_outdir_under_a_regular_file(tiny: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "taken"
    blocker.write_text("a file, not a folder\n")
    result = _package(tiny, blocker / "repo")
    line = _assert_clean_error(result, str(blocker))
    assert "is a file, not a folder" in line
    assert blocker.read_text() == "a file, not a folder\n"
    _no_temp_left(tmp_path)


def test_recover_finishes_a_commit_a_killed_process_left(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ArtifactSet(out, ["m.onnx", "m.report.json"]).open() as a:
        a.write_bytes("m.onnx", b"old model")
        a.write_bytes("m.report.json", b"old report")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    stage = out / f".edgekit-tmp-{dead.stdout.strip()}-dead"
    (stage / ".edgekit-previous").mkdir(parents=True)
    (stage / "m.report.json").write_bytes(b"new report")  # m.onnx was already swapped in:
    os.replace(out / "m.onnx", stage / ".edgekit-previous" / "m.onnx")
    (out / "m.onnx").write_bytes(b"new model")
    (stage / ".edgekit-commit.json").write_text(
        f'{{"outdir": "{out.resolve()}", "names": ["m.onnx", "m.report.json"]}}')
    assert recover(out) == [stage]
    assert _tree(out) == {"m.onnx": hashlib.sha256(b"new model").hexdigest(),
                          "m.report.json": hashlib.sha256(b"new report").hexdigest()}


#: a commit of three files into ``out`` (argv[1]) that SIGKILLs itself at the n-th rename
#: (argv[2]; 0: never), with or without force (argv[3]); "exists" when refused as existing
_KILLED_COMMIT = """
import os, signal, sys
from edgekit.errors import OutputExistsError
from edgekit.io.artifacts import ArtifactSet
out, kill_at, force = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
real, calls = os.replace, [0]
def replace(src, dst):
    calls[0] += 1
    if calls[0] == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
try:
    with ArtifactSet(out, ["m.onnx", "m.int8.onnx", "m.report.json"], force=force).open() as a:
        for name in a.names:
            a.write_bytes(name, b"new " + name.encode())
except OutputExistsError as exc:
    print("exists:", exc.message)
    sys.exit(1)
print(calls[0])
"""


def _commit_in_child(out: Path, kill_at: int, force: bool) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _KILLED_COMMIT, str(out), str(kill_at),
                           "1" if force else "0"], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("kill_at", range(1, 7))  # two renames per file, three files
def test_a_kill_at_every_rename_is_recovered_by_the_same_command_without_force(
        tmp_path: Path, kill_at: int) -> None:
    """SIGKILL at each rename of a commit into an existing folder: the next run of the same
    command, without --force, finishes the commit before it checks what exists, so the folder
    holds the whole new set (never a mix) and no staging folder."""
    out = tmp_path / "out"
    with ArtifactSet(out, ["m.onnx", "m.int8.onnx", "m.report.json"]).open() as a:
        for name in a.names:
            a.write_bytes(name, b"old " + name.encode())
    killed = _commit_in_child(out, kill_at, force=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list(out.glob(".edgekit-tmp-*")), "the kill left no half-done commit to recover"
    again = _commit_in_child(out, 0, force=False)
    assert again.returncode == 1 and again.stdout.startswith("exists:"), again.stderr
    assert "Traceback" not in again.stderr
    new = {n: hashlib.sha256(b"new " + n.encode()).hexdigest()
           for n in ("m.onnx", "m.int8.onnx", "m.report.json")}
    assert _tree(out) == new
    _no_temp_left(tmp_path)


def test_a_kill_during_a_real_quantize_commit_is_recovered(tiny: Path, tmp_path: Path) -> None:
    """The same through the CLI: ``edgekit quantize`` killed between the renames of its commit
    into an existing folder; the same command again, without --force, finds the whole set."""
    out = tmp_path / "out"
    args = ["quantize", str(tiny), "-o", str(out), "--quantize", "fp16"]
    first = CliRunner().invoke(cli, args)
    assert first.exit_code == 0, first.output
    names = sorted(p.name for p in out.glob("tiny.fp16.*"))
    assert len(names) == 2, names
    for name in names:
        (out / name).write_bytes(b"previous")
    kill_second_rename = (
        "import os, signal, sys\nfrom edgekit.cli import main\nreal, calls = os.replace, [0]\n"
        "def replace(src, dst):\n    calls[0] += 1\n    if calls[0] == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n    return real(src, dst)\n"
        "os.replace = replace\nsys.argv = ['edgekit', *sys.argv[1:]]\nmain()\n")
    killed = subprocess.run([sys.executable, "-c", kill_second_rename, *args, "--force"],
                            capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    # half-done: the first file moved aside (not yet replaced), the other one still previous
    left = {n: (out / n).read_bytes() for n in names if (out / n).exists()}
    assert list(left.values()) == [b"previous"], left
    again = CliRunner().invoke(cli, args)
    assert again.exit_code == 1 and "already exist" in again.output, again.output
    assert "Traceback" not in again.output
    for name in names:
        assert (out / name).read_bytes() != b"previous", name
    onnx.checker.check_model(onnx.load(str(out / "tiny.fp16.onnx")))
    _no_temp_left(tmp_path)


@pytest.mark.parametrize("previous", ["{not json", "[1, 2]", '{"variants": 5}'])
def test_quantize_never_replaces_a_report_that_is_not_edgekit_s(
        tiny: Path, tmp_path: Path, previous: str) -> None:
    """The variant's section goes into ``<stem>.report.json`` in the same commit as the
    variant; a file of that name that is not an edgekit report is refused without --force
    (nothing written) and replaced with it."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "tiny.report.json").write_text(previous)
    args = ["quantize", str(tiny), "-o", str(out), "--quantize", "fp16"]
    refused = CliRunner().invoke(cli, args)
    line = _assert_clean_error(refused, "tiny.report.json")
    assert "not an edgekit report" in line and "--force" in refused.output
    assert _tree(out) == {"tiny.report.json": hashlib.sha256(previous.encode()).hexdigest()}
    _no_temp_left(tmp_path)
    forced = CliRunner().invoke(cli, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    report = json.loads((out / "tiny.report.json").read_text())
    assert report["variants"]["fp16"]["path"] == "tiny.fp16.onnx"


def test_a_torn_journal_means_nothing_was_moved(tmp_path: Path) -> None:
    """A journal cut short (the process died writing it, before its first rename) is no
    commit to finish: the stage, holding only new files, is removed and nothing moves.
    Journals that parse but are not edgekit's are left alone (tests/test_readback.py)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "m.onnx").write_bytes(b"keep")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stage = out / f".edgekit-tmp-{dead}-torn"
    stage.mkdir()
    (stage / ".edgekit-commit.json").write_text(f'{{"outdir": "{out}", "names": ["m.on')
    (stage / "m.onnx").write_bytes(b"new, never moved in")
    assert recover(out) == [stage]
    assert _tree(out) == {"m.onnx": hashlib.sha256(b"keep").hexdigest()}


def test_failed_body_leaves_previous_set_and_no_stage(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with ArtifactSet(out, ["a", "b"]).open() as a:
        a.write_bytes("a", b"A1")
        a.write_bytes("b", b"B1")
    before = _tree(out)
    with pytest.raises(OutputError, match=r"cannot write .*out.*No space left") as info, \
            ArtifactSet(out, ["a", "b"], force=True).open() as a:
        a.write_bytes("a", b"A2")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    assert "free some space" in (info.value.hint or "")
    assert _tree(out) == before


# ------------------------------------------------------------------------------------------
# temp folders: TMPDIR faults, Keras' extraction, SIGTERM
# ------------------------------------------------------------------------------------------
def test_temp_dir_fault_names_tmpdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    not_a_dir = tmp_path / "tmpfile"
    not_a_dir.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_dir))
    with pytest.raises(OutputError, match="cannot create a temporary folder in") as info, \
            temp_dir("edgekit-test-"):
        pass
    assert "TMPDIR" in (info.value.hint or "")
    with temp_dir("edgekit-test-", dir=tmp_path) as d:
        (d / "x").write_text("x")
        kept = d
    assert not kept.exists()


def test_private_tempdir_takes_library_temp_files_along(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with pytest.raises(RuntimeError), private_tempdir("edgekit-keras-") as d:
        lib_dir = Path(tempfile.mkdtemp())  # what a library would leave behind on failure
        assert lib_dir.parent == d
        raise RuntimeError("the library failed")
    assert tempfile.tempdir == str(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_full_tmpdir_is_not_a_corrupt_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                            ) -> None:
    from edgekit.convert import load_source

    not_a_dir = tmp_path / "tmpfile"
    not_a_dir.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_dir))
    with pytest.raises(OutputError) as info:
        load_source(ROOT / "models" / "fashion_cnn.keras")
    assert not isinstance(info.value, ModelLoadError)
    assert "fashion_cnn.keras" in info.value.message and "TMPDIR" in (info.value.hint or "")


def _popen_export(out: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    return subprocess.Popen(
        [sys.executable, "-m", "edgekit.cli", "export", str(ROOT / "models" / "fashion_cnn.keras"),
         "-o", str(out), "--quantize", "int8",
         "--calibration", str(ROOT / "calibration_data" / "fashion_mnist.npz"), "--force"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )


#: a SIGTERM that lands between a staging folder's mkdir and its registration (the window the
#: test below hit under load): held back until the folder is registered, then raised
_SIGTERM_IN_THE_WINDOW = """
import os, signal, sys, time
from pathlib import Path
from edgekit.io.tempdirs import Terminated, interruptible, register, uninterrupted
made = Path(sys.argv[1])
try:
    with interruptible(message=False):
        with uninterrupted():
            made.mkdir()
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler runs here, and holds the signal back
            print("still running after the signal", flush=True)
            register(made)
        print("not reached", flush=True)
except Terminated as exc:
    print("terminated", exc.code, flush=True)
"""


def test_a_sigterm_between_mkdir_and_register_still_removes_the_folder(tmp_path: Path) -> None:
    made = tmp_path / ".edgekit-tmp-window"
    r = subprocess.run([sys.executable, "-c", _SIGTERM_IN_THE_WINDOW, str(made)],
                       capture_output=True, text=True, timeout=60)
    assert r.stdout.split("\n")[:2] == ["still running after the signal", "terminated 143"], r
    assert not made.exists()


@pytest.mark.slow
@pytest.mark.parametrize("previous", [False, True])
def test_sigterm_during_export_removes_staging(tmp_path: Path, previous: bool) -> None:
    out = tmp_path / "out"
    if previous:
        with ArtifactSet(out, ["fashion_cnn.onnx", "fashion_cnn.report.json"]).open() as a:
            a.write_bytes("fashion_cnn.onnx", b"previous model")
            a.write_bytes("fashion_cnn.report.json", b"previous report")
    before = _tree(out)
    proc = _popen_export(out)
    deadline, seen = time.monotonic() + 240, False
    while time.monotonic() < deadline and proc.poll() is None:
        if list(tmp_path.glob(".edgekit-tmp-*")) or list(out.glob(".edgekit-tmp-*")):
            seen = True
            break
        time.sleep(0.02)
    assert seen, "the export ended before its staging folder appeared"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Traceback" not in err
    assert "error: interrupted by SIGTERM" in err
    _no_temp_left(tmp_path)
    assert _tree(out) == before  # nothing (new folder) or the previous complete set


# ------------------------------------------------------------------------------------------
# bad inputs: corrupt tensors, complex calibration data
# ------------------------------------------------------------------------------------------
def test_corrupt_tensor_is_an_error_without_traceback(tiny: Path, tmp_path: Path) -> None:
    m = onnx.load(str(tiny))
    w = next(t for t in m.graph.initializer if len(t.raw_data) > 64)
    w.raw_data = w.raw_data[: len(w.raw_data) // 2]
    bad = tmp_path / "bad.onnx"
    onnx.save(m, str(bad))
    result = CliRunner().invoke(cli, ["quantize", str(bad), "-o", str(tmp_path / "q"),
                                      "--quantize", "fp16"])
    line = _assert_clean_error(result, str(bad))
    assert f"tensor {w.name!r}" in line and "corrupt" in line
    with pytest.raises(ModelLoadError) as info:  # what the CLI printed: a ModelLoadError's text
        load_onnx(bad)
    assert line == f"error: {info.value.message}"
    assert not (tmp_path / "q").exists()


@pytest.mark.parametrize(("y", "said"), [
    (np.linspace(0.0, 2.0, 8, dtype=np.float32), "it holds real values such as 0.285714 "
     "(regression targets?)"),
    (np.array(["cat", "dog"] * 4), "not text values such as 'cat'")])
def test_labels_that_are_no_class_ids_are_refused_by_name(
        tiny: Path, tmp_path: Path, y: np.ndarray, said: str) -> None:
    """A regression's float targets (or class names) in 'y' are no class ids: the error names
    the file, its role and a value, and the hint says to leave 'y' out; nothing is written.
    Whole numbers in a float array are class ids."""
    x = np.random.default_rng(0).random((8, 28, 28, 1), np.float32)
    data = tmp_path / "targets.npz"
    np.savez(data, x=x, y=y)
    result = CliRunner().invoke(cli, ["quantize", str(tiny), "-o", str(tmp_path / "q"),
                                      "--quantize", "int8", "--calibration", str(data)])
    line = _assert_clean_error(result, "targets.npz")
    assert line == (f"error: calibration data file {data}: labels 'y' must be integer class "
                    f"ids; {said}" if y.dtype.kind == "f" else
                    f"error: calibration data file {data}: labels 'y' must be integer class "
                    f"ids, {said}")
    assert ("without 'y'" in result.output) == (y.dtype.kind == "f")
    assert not (tmp_path / "q").exists()
    # the --calibration file that validates an export: both roles named
    specs = onnx_input_specs(onnx.load(str(tiny)))
    with pytest.raises(DataError, match=r"^calibration data \(as validation data\) file "):
        DataFile(data, "calibration data").read(specs, ModelMetadata(), "validation data")
    np.savez(data, x=x, y=np.arange(8, dtype=np.float32) % 3)
    labels = load_dataset(data, ["image"]).labels
    assert labels is not None and labels.tolist() == [0, 1, 2, 0, 1, 2, 0, 1]


def test_complex_calibration_data_is_rejected(tiny: Path, tmp_path: Path) -> None:
    x = (np.ones((8, 28, 28, 1)) + 1j).astype(np.complex64)
    data = tmp_path / "complex.npz"
    np.savez(data, x=x)
    with pytest.raises(DataError, match="complex"):
        load_dataset(data, ["image"], "calibration data")
    result = CliRunner().invoke(cli, ["quantize", str(tiny), "-o", str(tmp_path / "q"),
                                      "--quantize", "int8", "--calibration", str(data)])
    line = _assert_clean_error(result, "complex.npz")
    assert "complex" in line
    assert not (tmp_path / "q").exists()


def test_memory_figures_come_from_psutil() -> None:
    import psutil

    from edgekit.speed.machine import machine_info, peak_rss_mb, rss_mb

    now = psutil.Process().memory_info().rss / 2**20
    assert abs(rss_mb() - now) < 64
    assert peak_rss_mb() >= rss_mb() * 0.9 > 0
    info = machine_info()
    assert info["memory_mb"] > 0 and info["logical_cores"] == os.cpu_count()
