"""Files edgekit reads back are validated at load: check baselines, model metadata, stored
session settings, quantize reports, commit journals. A malformed one is ``error: ...`` and exit
1 (``ModelLoadError`` in the API, a refusal at ``serve`` start-up), never a traceback, a 500 per
request, or an allocation the file asked for."""

from __future__ import annotations

import copy
import json
import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _runtime_models import make_image_model
from click.testing import CliRunner

from edgekit.cli import cli
from edgekit.errors import ModelLoadError
from edgekit.io.artifacts import recover
from edgekit.runtime.model import EdgeModel
from edgekit.serve.server import free_port

pytestmark = pytest.mark.file_seconds(5)

ROOT = Path(__file__).resolve().parents[1]

GOOD: dict[str, Any] = {
    "edgekit_check_baseline": 1, "model": "m.onnx", "accuracy": 80.0,
    "latency": {"ratio": 1.0, "batch": 1, "threads": 1,
                "reference": {"kind": "matmul", "width": 256, "depth": 2,
                              "name": "built-in 2 x MatMul 256"}},
    "machine": {"cpu": "some cpu"},
}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("readback")
    np.save(d / "x.npy", np.zeros((1, 28, 28), np.uint8))
    return {"model": make_image_model(d / "m.onnx"), "npy": d / "x.npy", "dir": d}


def invoke(*args: object) -> tuple[int, str, str, BaseException | None]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    exc = None if isinstance(r.exception, SystemExit) else r.exception
    return r.exit_code, r.stdout, r.stderr, exc


def assert_refused(code: int, out: str, err: str, exc: BaseException | None,
                   *words: str) -> None:
    assert exc is None, f"{type(exc).__name__}: {exc}"
    assert code == 1, (code, out, err)
    assert err.startswith("error: "), err
    assert "Traceback" not in out + err
    for w in words:
        assert w in err, (w, err)


def with_props(src: Path, dst: Path, **props: str) -> Path:
    """A copy of ``src`` with ``edgekit.<key>`` metadata_props set to the given texts."""
    model = onnx.load(str(src))
    values = {p.key: p.value for p in model.metadata_props}
    values.update({f"edgekit.{k}": v for k, v in props.items()})
    del model.metadata_props[:]
    for k, v in values.items():
        model.metadata_props.add(key=k, value=v)
    onnx.save(model, str(dst))
    return dst


def _edit(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the field at ``path`` (dotted; value ``...``: removed) set to ``value``."""
    b = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = b
    for p in parents:
        node = node[p]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return b


# -- check baselines ---------------------------------------------------------------------------
BASELINES: list[tuple[str, Any, str]] = [
    ("not-an-object", [1, 2], "must be a JSON object"),
    ("not-json", "{\"latency\": ", "not valid JSON"),
    ("nested-too-deeply", "[" * 100_000, "nested too deeply"),
    ("no-version", _edit("edgekit_check_baseline", ...), "edgekit_check_baseline is missing"),
    ("wrong-version", _edit("edgekit_check_baseline", 2), "version 2"),
    ("latency-a-number", _edit("latency", 5), "latency must be a JSON object"),
    ("latency-empty", _edit("latency", {}), "latency.ratio is missing"),
    ("ratio-a-word", _edit("latency.ratio", "fast"), "latency.ratio"),
    ("ratio-zero", _edit("latency.ratio", 0), "latency.ratio"),
    ("ratio-negative", _edit("latency.ratio", -1.5), "latency.ratio"),
    ("ratio-nan", _edit("latency.ratio", float("nan")), "latency.ratio"),
    ("ratio-inf", _edit("latency.ratio", float("inf")), "latency.ratio"),
    ("ratio-a-boolean", _edit("latency.ratio", True), "latency.ratio"),
    ("no-reference", _edit("latency.reference", ...), "latency.reference is missing"),
    ("reference-a-list", _edit("latency.reference", [2]), "latency.reference must be"),
    ("unknown-kind", _edit("latency.reference.kind", "quantum"), "reference.kind"),
    ("depth-a-word", _edit("latency.reference.depth", "abc"), "reference.depth"),
    ("depth-zero", _edit("latency.reference.depth", 0), "reference.depth"),
    ("depth-too-deep", _edit("latency.reference.depth", 513), "1..512"),
    ("depth-a-float", _edit("latency.reference.depth", 2.5), "reference.depth"),
    ("width-too-wide", _edit("latency.reference.width", 1024), "reference.width"),
    ("path-a-number", _edit("latency.reference", {"kind": "file", "path": 5}), "reference.path"),
    ("path-missing", _edit("latency.reference", {"kind": "file"}), "reference.path is missing"),
    ("accuracy-a-word", _edit("accuracy", "high"), "accuracy"),
    ("accuracy-over-100", _edit("accuracy", 250), "accuracy"),
    ("batch-zero", _edit("latency.batch", 0), "latency.batch"),
    ("batch-a-string", _edit("latency.batch", "8"), "latency.batch"),
    ("batch-huge", _edit("latency.batch", 10**9), "latency.batch"),
    ("threads-negative", _edit("latency.threads", -1), "latency.threads"),
    ("threads-a-word", _edit("latency.threads", "four"), "latency.threads"),
    ("settle-negative", _edit("latency.settle_s", -0.1), "latency.settle_s"),
    ("settle-huge", _edit("latency.settle_s", 1e6), "latency.settle_s"),
    ("settle-a-word", _edit("latency.settle_s", "long"), "latency.settle_s"),
    ("machine-a-number", _edit("machine", 5), "machine"),
    ("sha-a-list", _edit("model_sha256", ["x"]), "model_sha256"),
]


@pytest.mark.parametrize(("content", "words"), [(c, w) for _, c, w in BASELINES],
                         ids=[name for name, _, _ in BASELINES])
def test_malformed_baseline_is_refused(files: dict[str, Path], tmp_path: Path, content: Any,
                                       words: str) -> None:
    base = tmp_path / "b.json"
    base.write_text(content if isinstance(content, str) else json.dumps(content))
    code, out, err, exc = invoke("check", files["model"], "--baseline", base, "--max-time", 2)
    assert_refused(code, out, err, exc, str(base), "not a usable edgekit check baseline", words)
    assert "hint: " in err and "--update-baseline" in err


def test_huge_baseline_file_is_refused_unread(files: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "b.json"
    base.write_text(json.dumps(GOOD) + " " * (2 << 20))
    code, out, err, exc = invoke("check", files["model"], "--baseline", base, "--max-time", 2)
    assert_refused(code, out, err, exc, "larger than")


def test_huge_reference_depth_is_refused_before_building(files: dict[str, Path],
                                                         tmp_path: Path) -> None:
    """A depth of 10^6 would build ~256 GB of reference weights: the real CLI, in a process
    limited to 3 GiB of address space, refuses it at once."""
    base = tmp_path / "b.json"
    base.write_text(json.dumps(_edit("latency.reference.depth", 10**6)))

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "check", str(files["model"]),
                        "--baseline", str(base), "--max-time", "2"],
                       capture_output=True, text=True, preexec_fn=limit, timeout=300,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert "latency.reference.depth" in r.stderr and "1..512" in r.stderr
    assert "deepest reference edgekit makes" in r.stderr


@pytest.mark.slow
def test_valid_handmade_baseline_is_accepted(files: dict[str, Path], tmp_path: Path) -> None:
    base = tmp_path / "b.json"
    base.write_text(json.dumps({**GOOD, "machine": None, "accuracy": None}))
    code, out, err, exc = invoke("check", files["model"], "--baseline", base, "--max-time", 2)
    assert exc is None and "error:" not in err and code in (0, 1)
    assert "latency" in out


# -- model metadata ----------------------------------------------------------------------------
METADATA: list[tuple[str, dict[str, str], str]] = [
    ("labels-a-number", {"labels": "5"}, "edgekit.labels"),
    ("labels-not-strings", {"labels": "[1, 2, 3]"}, "edgekit.labels[0]"),
    ("labels-not-json", {"labels": "{not json"}, "edgekit.labels is not valid JSON"),
    ("labels-nested-too-deeply", {"labels": "[" * 100_000}, "edgekit.labels"),
    ("preprocessing-a-list", {"preprocessing": "[1]"}, "edgekit.preprocessing must be"),
    ("scale-a-word", {"preprocessing": '{"kind": "image", "scale": "x"}'},
     "edgekit.preprocessing.scale"),
    ("mean-std-lengths", {"preprocessing": '{"kind": "tabular", "mean": [0.5, 0.5], "std": [1]}'},
     "edgekit.preprocessing"),
    ("output-kinds-a-number", {"output_kinds": "5"}, "edgekit.output_kinds"),
    ("unknown-output-kind", {"output_kinds": '["probabilities", "weird"]'},
     "edgekit.output_kinds[1]"),
    ("tokenizer-length-a-word",
     {"tokenizer": '{"vocabulary": ["", "[UNK]"], "sequence_length": "long"}'},
     "edgekit.tokenizer.sequence_length"),
    ("tokenizer-pad-id-outside",
     {"tokenizer": '{"vocabulary": ["", "[UNK]", "a"], "pad_id": 99}'},
     "edgekit.tokenizer.pad_id"),
]


@pytest.mark.parametrize(("props", "words"), [(p, w) for _, p, w in METADATA],
                         ids=[name for name, _, _ in METADATA])
def test_malformed_metadata_is_refused_by_run(files: dict[str, Path], tmp_path: Path,
                                              props: dict[str, str], words: str) -> None:
    bad = with_props(files["model"], tmp_path / "bad.onnx", **props)
    code, out, err, exc = invoke("run", bad, files["npy"])
    assert_refused(code, out, err, exc, "edgekit metadata of", "is malformed", words)
    with pytest.raises(ModelLoadError, match="is malformed"):
        EdgeModel(bad)


def test_huge_image_size_is_refused_at_load(files: dict[str, Path], tmp_path: Path) -> None:
    bad = with_props(files["model"], tmp_path / "bad.onnx",
                     preprocessing='{"kind": "image", "image_size": [1000000000, 5]}')
    with pytest.raises(ModelLoadError, match=r"image_size\[0\] must be an integer in 1\.\.16384"):
        EdgeModel(bad)


def test_serve_refuses_malformed_metadata_at_start_up(files: dict[str, Path],
                                                      tmp_path: Path) -> None:
    bad = with_props(files["model"], tmp_path / "bad.onnx", labels="5")
    r = subprocess.run([sys.executable, "-m", "edgekit.cli", "serve", str(bad), "--port",
                        str(free_port())], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.startswith("error: ") and "Traceback" not in r.stderr
    assert "edgekit.labels" in r.stderr


# -- stored session settings (edgekit tune): a malformed one is ignored with a warning ---------
@pytest.mark.parametrize("session", [
    '{"session_config": 5}', '{"allow_spinning": "yes"}', '{"openvino_config": [1]}',
    '{"disabled_optimizers": "ConstantFolding"}', "[" * 100_000,
])
def test_malformed_stored_session_is_ignored_with_a_warning(
        files: dict[str, Path], tmp_path: Path, session: str,
        caplog: pytest.LogCaptureFixture) -> None:
    bad = with_props(files["model"], tmp_path / "bad.onnx", session=session)
    code, out, err, exc = invoke("run", bad, files["npy"])
    assert exc is None and code == 0, err
    assert "ignoring malformed edgekit.session metadata" in caplog.text
    assert EdgeModel(bad).session_config.session_config == {}


# -- other files edgekit reads back ------------------------------------------------------------
def test_inspect_shows_absurdly_nested_metadata_as_text(files: dict[str, Path],
                                                       tmp_path: Path) -> None:
    bad = with_props(files["model"], tmp_path / "bad.onnx", custom="[" * 100_000)
    code, out, err, exc = invoke("inspect", bad)
    assert exc is None and code == 0, err


@pytest.mark.parametrize("journal", [
    "[1]", '{"outdir": 5, "names": []}', '{"outdir": "{out}", "names": "m.onnx"}',
    '{"outdir": "{out}", "names": ["../escaped"]}',
    '{"outdir": "{out}/../elsewhere/deeper", "names": ["m.onnx"]}',
])
def test_recover_leaves_a_stage_with_a_malformed_journal_alone(tmp_path: Path,
                                                               journal: str) -> None:
    out = tmp_path / "out"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    stage = out / f".edgekit-tmp-{dead}-dead"
    stage.mkdir(parents=True)
    (stage / "m.onnx").write_bytes(b"new")
    (out / "escaped").write_bytes(b"kept")  # "../escaped" would move it out of out/
    (tmp_path / "elsewhere" / "deeper").mkdir(parents=True)
    (stage / ".edgekit-commit.json").write_text(journal.replace("{out}", str(out.resolve())))
    assert recover(out) == []
    assert (stage / "m.onnx").read_bytes() == b"new"  # nothing moved, nothing deleted
    assert (out / "escaped").read_bytes() == b"kept"
    assert not list((tmp_path / "elsewhere" / "deeper").iterdir())


def test_quantize_replaces_a_report_that_is_not_edgekits(files: dict[str, Path],
                                                          tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(files["model"].read_bytes())
    report = tmp_path / "m.report.json"
    for content in ("[1, 2]", '{"variants": 5}'):
        report.write_text(content)
        code, out, err, exc = invoke("quantize", model, "--quantize", "fp16", "--force")
        assert exc is None and code == 0, err
        data = json.loads(report.read_text())
        assert list(data["variants"]) == ["fp16"]
