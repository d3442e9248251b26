"""ONNX Runtime model packages: ``edgekit export/tune --package`` writes them with
``onnxruntime.ModelPackage``, onnxruntime's own readers (``ModelPackage.open``,
``ModelPackageContext``) accept them and run them, and ``EdgeModel`` picks the variant for the
providers present (real TensorFlow export, real onnxruntime; no mocks)."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import InputError, ModelLoadError, OutputExistsError, ProviderError
from edgekit.io.artifacts import sha256_file
from edgekit.measure.backends import load_backend
from edgekit.packaging import PackageTarget, write_package
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.modelpackage import (
    VARIANT_TARGETS,
    read_package,
    select_variant,
)

pytestmark = [pytest.mark.slow, pytest.mark.file_seconds(20)]

pytest.importorskip("tensorflow")
if not hasattr(ort, "ModelPackage"):
    pytest.skip("this onnxruntime has no model packages (1.29+)", allow_module_level=True)

ROOT = Path(__file__).resolve().parents[1]
MODEL = ROOT / "models" / "fashion_cnn.keras"
CALIB = ROOT / "calibration_data" / "fashion_mnist.npz"
CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"


def invoke(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def _leftovers(folder: Path) -> list[Path]:
    """edgekit staging folders left anywhere below ``folder``."""
    return [p for p in folder.rglob(".edgekit-tmp-*")]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``edgekit export --quantize int8 --package OUT/fashion.pkg`` of the shipped CNN, once."""
    d = tmp_path_factory.mktemp("pkg")
    out, pkg = d / "out", d / "out" / "fashion.pkg"
    code, stdout, err = invoke("export", MODEL, "-o", out, "--calibration", CALIB,
                               "--quantize", "int8", "--package", pkg)
    assert code == 0, err
    assert f"package: {pkg} (variants cuda-fp16 (fp16)" in stdout
    return {"dir": d, "out": out, "pkg": pkg, "onnx": out / "fashion_cnn.onnx",
            "int8": out / "fashion_cnn.int8.onnx", "report": out / "fashion_cnn.report.json"}


@pytest.fixture()
def images() -> np.ndarray:
    return np.load(CALIB)["x"][:8]


# ---------------------------------------------------------------------------------------------
# what export writes, read by onnxruntime's own readers
# ---------------------------------------------------------------------------------------------
def test_onnxruntime_reads_and_validates_the_package(exported: dict[str, Path]) -> None:
    pkg = exported["pkg"]
    info = ort.ModelPackage.open(str(pkg), strict_unknown_fields=True).get_info()
    assert info["schema_version_major"] == 1 and info["layout"] == "portable"
    assert [c["name"] for c in info["components"]] == ["model"]
    variants = {v["name"]: v for v in info["components"][0]["variants"]}
    assert list(variants) == [t.name for t in VARIANT_TARGETS]
    assert (variants["cpu-int8"]["ep"], variants["cpu-int8"]["device"]) == (CPU, "cpu")
    assert (variants["cpu-fp32"]["ep"], variants["cpu-fp32"]["device"]) == (CPU, "cpu")
    assert (variants["cuda-fp16"]["ep"], variants["cuda-fp16"]["device"]) == (CUDA, "gpu")
    meta = json.loads(variants["cpu-int8"]["additional_metadata_json"])["edgekit"]
    assert meta["precision"] == "int8" and meta["evaluation"]["samples"] > 0
    assert len(info["shared_assets"]) == 3  # fp32, int8, fp16: one content-addressed file each
    pkg_meta = json.loads(info["additional_metadata_json"])["edgekit"]
    assert pkg_meta["model"] == "fashion_cnn" and pkg_meta["labels"][7] == "Sneaker"
    # the session-side reader: it selects, builds the session and runs it
    ctx = ort.ModelPackageContext(str(pkg))
    assert ctx.get_component_names() == ["model"]
    assert ctx.get_variant_ep_name("model", "openvino-int8") == "OpenVINOExecutionProvider"
    comp = ctx.select_component("model", ort.ModelPackageOptions(ort.SessionOptions()))
    assert comp.get_selected_variant_name() == "cpu-int8"
    x = (np.load(CALIB)["x"][:4].astype(np.float32) / 255.0).reshape(4, 28, 28, 1)
    session = comp.create_session()
    theirs = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(EdgeModel(pkg).run(x)[0], theirs, atol=1e-6)


def test_assets_are_the_export_files_and_the_report_matches(exported: dict[str, Path]) -> None:
    report = json.loads(exported["report"].read_text())["package"]
    pkg = exported["pkg"]
    assert report["path"] == str(pkg)
    for asset in report["assets"].values():
        f = pkg / asset["file"]["path"]
        assert asset["file"]["size_bytes"] == f.stat().st_size
        assert asset["file"]["sha256"] == sha256_file(f)
        assert f.parent.name == asset["uri"].replace(":", "-")
    assert report["manifest"]["sha256"] == sha256_file(pkg / "manifest.json")
    # fp32 is the validated export, int8 the --quantize variant (reused, not rebuilt)
    assert report["assets"]["fp32"]["file"]["sha256"] == sha256_file(exported["onnx"])
    assert report["assets"]["int8"]["file"]["sha256"] == sha256_file(exported["int8"])
    assert set(report["builds"]) == {"fp16"}
    assert _leftovers(exported["dir"]) == []


# ---------------------------------------------------------------------------------------------
# selection
# ---------------------------------------------------------------------------------------------
def test_edge_model_selects_cpu_int8_here_and_says_so(exported: dict[str, Path],
                                                      images: np.ndarray,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("INFO", logger="edgekit"):
        m = EdgeModel(exported["pkg"])
    assert m.package is not None and m.package.variant.name == "cpu-int8"
    assert m.providers == [CPU] and m.path.name == "fashion_cnn.int8.onnx"
    assert "variant cpu-int8 (CPUExecutionProvider, cpu, int8)" in caplog.text
    assert "EP not available: cuda-fp16, tensorrt-fp16, dml-fp16, openvino-int8" in caplog.text
    assert cast(dict[str, Any], m.describe())["package"]["variant"]["precision"] == "int8"
    ref = EdgeModel(exported["int8"], "cpu")
    np.testing.assert_array_equal(m.predict(images), ref.predict(images))
    assert m.labels == ref.labels
    fp32 = EdgeModel(exported["pkg"], variant="cpu-fp32")
    assert fp32.path.name == "fashion_cnn.onnx"


def test_openvino_engine_runs_the_openvino_variant(exported: dict[str, Path],
                                                   images: np.ndarray) -> None:
    pytest.importorskip("openvino")
    m = EdgeModel(exported["pkg"], engine="openvino")
    assert m.package is not None and m.package.variant.name == "openvino-int8"
    assert m.engine_name == "openvino" and m.predict(images).shape == (8, 10)


@pytest.mark.parametrize(("providers", "devices", "variant", "session"), [
    ([CUDA, CPU], None, "cuda-fp16", [CUDA, CPU]),
    (["TensorrtExecutionProvider", CUDA, CPU], None, "tensorrt-fp16",
     ["TensorrtExecutionProvider", CUDA, CPU]),
    (["DmlExecutionProvider", CPU], None, "dml-fp16", ["DmlExecutionProvider", CPU]),
    (["OpenVINOExecutionProvider", CPU], None, "openvino-int8",
     ["OpenVINOExecutionProvider", CPU]),
    (["CoreMLExecutionProvider", "XnnpackExecutionProvider", CPU], None, "cpu-int8", [CPU]),
    ([CPU], None, "cpu-int8", [CPU]),
    # CUDA listed, but onnxruntime reports no GPU for it: fall back down the order
    ([CUDA, CPU], {CUDA: {"cpu"}, CPU: {"cpu"}}, "cpu-int8", [CPU]),
])
def test_variant_order_for_a_provider_list(exported: dict[str, Path], providers: list[str],
                                           devices: dict[str, set[str]] | None, variant: str,
                                           session: list[str]) -> None:
    sel = select_variant(read_package(exported["pkg"]), providers, devices)
    assert sel.variant.name == variant and sel.providers == session
    if devices:
        assert ("cuda-fp16", "EP reports no gpu device") in sel.skipped


def test_forced_variant(exported: dict[str, Path]) -> None:
    package = read_package(exported["pkg"])
    assert select_variant(package, [CUDA, CPU], variant="cpu-fp32").variant.name == "cpu-fp32"
    with pytest.raises(InputError, match="has no variant 'nope'") as e:
        select_variant(package, [CPU], variant="nope")
    assert "cpu-int8" in (e.value.hint or "")
    with pytest.raises(ProviderError, match="no variant of the model package"):
        select_variant(package, [CPU], variant="cuda-fp16")
    with pytest.raises(InputError, match="needs a model package folder"):
        EdgeModel(exported["onnx"], variant="cpu-int8")


def _package(exported: dict[str, Path], tmp: Path, files: dict[str, Path]) -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    dest = tmp / "pkg"
    write_package(dest, files, "fashion_cnn", tmp / "scratch")
    return dest


def test_missing_ep_falls_back_to_the_cpu_variants(exported: dict[str, Path],
                                                   tmp_path: Path) -> None:
    pkg = _package(exported, tmp_path, {"fp32": exported["onnx"]})
    assert [v.name for v in read_package(pkg).variants] == ["cpu-fp32"]
    sel = select_variant(read_package(pkg), [CUDA, "OpenVINOExecutionProvider", CPU])
    assert sel.variant.name == "cpu-fp32" and sel.providers == [CPU]
    assert EdgeModel(pkg).package.variant.name == "cpu-fp32"  # type: ignore[union-attr]


def test_no_variant_for_the_providers_here(exported: dict[str, Path], tmp_path: Path) -> None:
    pkg = _package(exported, tmp_path, {"fp16": exported["onnx"]})  # GPU variants only
    with pytest.raises(ProviderError, match="runs on the providers here") as e:
        EdgeModel(pkg)
    assert "cuda-fp16 (CUDAExecutionProvider, gpu)" in e.value.message
    code, _, err = invoke("run", pkg, CALIB)
    assert code == 1 and err.startswith("error: no variant of the model package")
    assert "Traceback" not in err


# ---------------------------------------------------------------------------------------------
# run / bench / check open packages
# ---------------------------------------------------------------------------------------------
def test_run_names_the_variant(exported: dict[str, Path]) -> None:
    code, out, err = invoke("run", exported["pkg"], CALIB, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["package"]["variant"]["name"] == "cpu-int8" and report["providers"] == [CPU]
    code, out, _ = invoke("run", exported["pkg"], CALIB, "--variant", "cpu-fp32")
    assert code == 0 and "package: " in out and "variant cpu-fp32" in out


def test_bench_and_check_load_the_selected_variant(exported: dict[str, Path]) -> None:
    b = load_backend(exported["pkg"])
    try:
        assert b.kind == "onnx" and b.path.name == "fashion_cnn.int8.onnx"
        assert b.name == "fashion.pkg"
    finally:
        b.close()


def test_serve_runs_the_selected_variant(exported: dict[str, Path], images: np.ndarray) -> None:
    pytest.importorskip("uvicorn")
    with warnings.catch_warnings():  # starlette 1.x: "use httpx2 with the TestClient"
        warnings.simplefilter("ignore")
        testclient = pytest.importorskip("starlette.testclient")
    from edgekit.serve.app import create_app

    with testclient.TestClient(create_app(exported["pkg"])) as client:
        meta = client.get("/metadata").json()
        assert meta["package"]["variant"]["name"] == "cpu-int8"
        # served under the package's name, not the file of the variant this machine runs
        name = exported["pkg"].name.removesuffix(".pkg")
        assert client.get("/v2/models").json()["models"] == [name] == [meta["name"]]
        r = client.post("/predict", json={"inputs": images[:2].tolist()})
        assert r.status_code == 200 and len(r.json()["labels"]) == 2


# ---------------------------------------------------------------------------------------------
# bad packages
# ---------------------------------------------------------------------------------------------
def _manifest(tmp: Path, body: object) -> Path:
    d = tmp / "bad.pkg"
    d.mkdir()
    (d / "manifest.json").write_text(body if isinstance(body, str) else json.dumps(body))
    return d


_V = {"ep": CPU, "device": "cpu", "executor_info": {"ort": {"model_file": "model.onnx"}}}


@pytest.mark.parametrize(("body", "error", "message"), [
    ("{not json", ModelLoadError, "onnxruntime cannot read the model package"),
    ({"schema_version": "1.0", "components": {"m": {"variants": {"v": _V}}}, "extra": 1},
     ModelLoadError, "unknown field 'extra'"),
    ({"schema_version": "9.0", "components": {"m": {"variants": {"v": _V}}}},
     ModelLoadError, "schema_version major 9 is not supported"),
    ({"schema_version": "1.0", "components": {"m": {"variants": {"v": _V}}}},
     ModelLoadError, "its model file model.onnx cannot be found"),
    ({"schema_version": "1.0", "components": {"m": {"variants": {}}}},
     ModelLoadError, "has no variant"),
    ({"schema_version": "1.0", "components": {"a": {"variants": {}}, "b": {"variants": {}}}},
     ModelLoadError, "has 2 components (a, b)"),
    ({"schema_version": "1.0", "components": {"m": {"variants": {"v": {"ep": CPU}}}}},
     ModelLoadError, "names no model file"),
])
def test_packages_onnxruntime_or_edgekit_reject(tmp_path: Path, body: object,
                                                error: type[Exception], message: str) -> None:
    pkg = _manifest(tmp_path, body)
    with pytest.raises(error, match=re.escape(message)):
        EdgeModel(pkg)
    code, _, err = invoke("run", pkg, CALIB)
    assert code == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err


def test_folder_that_is_not_a_package(tmp_path: Path) -> None:
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(InputError, match="is a folder but not a model package"):
        EdgeModel(tmp_path)
    with pytest.raises(InputError, match="is not a model package"):
        read_package(tmp_path)
    code, _, err = invoke("run", tmp_path, CALIB)
    assert code == 1 and "not a model package (no manifest.json)" in err


# ---------------------------------------------------------------------------------------------
# writing atomically: refused before any work, nothing half-written
# ---------------------------------------------------------------------------------------------
def test_export_refusals_write_nothing(exported: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, _, err = invoke("export", MODEL, "-o", out, "--package", tmp_path / "p")
    assert code == 1 and "--package needs calibration data" in err and not out.exists()
    code, _, err = invoke("export", MODEL, "-o", out, "--calibration", CALIB,
                          "--package", exported["pkg"])
    assert code == 1 and "already exists" in err and not out.exists()
    code, _, err = invoke("export", MODEL, "-o", out, "--calibration", CALIB, "--package", out)
    assert code == 1 and "is the output folder itself" in err and not out.exists()
    with pytest.raises(InputError, match="is the output folder itself"):  # before any work
        PackageTarget(out, outdir=out)
    with pytest.raises(OutputExistsError):
        PackageTarget(exported["pkg"])
    with pytest.raises(InputError, match="is not a model package folder"):
        read_package(exported["onnx"])
    assert _leftovers(tmp_path) == []


def test_failed_package_build_leaves_nothing(tmp_path: Path) -> None:
    """The package's variants fail (evaluation data of the wrong shape) after the export
    succeeded: neither the export's files nor the package (in another folder) appear."""
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((8, 5, 5, 1), np.uint8), y=np.zeros(8, np.int64))
    out, pkg = tmp_path / "out", tmp_path / "elsewhere" / "m.pkg"
    code, _, err = invoke("export", MODEL, "-o", out, "--calibration", CALIB,
                          "--eval-data", bad, "--package", pkg)
    assert code == 1 and "Traceback" not in err
    assert "\nerror: " in err and "the model expects (N, 28, 28, 1)" in err
    assert not out.exists() and not pkg.exists() and not pkg.parent.exists()
    assert _leftovers(tmp_path) == []


def test_force_replaces_a_package_whole(exported: dict[str, Path], tmp_path: Path) -> None:
    pkg = shutil.copytree(exported["pkg"], tmp_path / "pkg")
    (pkg / "stale.txt").write_text("old")
    dest = _package(exported, tmp_path / "w", {"fp32": exported["onnx"]})
    from edgekit.io.artifacts import ArtifactSet

    target = PackageTarget(pkg, force=True)
    with ArtifactSet(tmp_path / "o", ["x.txt"]).open() as a, target.staged(a) as stage:
        shutil.copytree(dest, stage)
        a.write_bytes("x.txt", b"x")
    assert not (pkg / "stale.txt").exists()
    assert [v.name for v in read_package(pkg).variants] == ["cpu-fp32"]


# ---------------------------------------------------------------------------------------------
# tune --package
# ---------------------------------------------------------------------------------------------
def test_tune_package(exported: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    pkg = out / "tuned.pkg"
    code, stdout, err = invoke("tune", exported["onnx"], "-o", out, "--calibration", CALIB,
                               "--calibration-samples", "64", "--budget", "0.01",
                               "--max-accuracy-drop", "5", "--package", pkg)
    assert code == 0, err
    assert f"package: {pkg}" in stdout
    report = json.loads((out / "fashion_cnn.tune.json").read_text())
    section = report["package"]
    tuned = out / "fashion_cnn.tuned.onnx"
    quantized = report["winner"]["quantization"] is not None
    slot = "int8" if quantized else "fp32"
    assert section["assets"][slot]["file"]["sha256"] == sha256_file(tuned)
    assert "fp16" in section["assets"]
    names = [v.name for v in read_package(pkg).variants]
    assert ("cpu-int8" in names) == quantized and "cpu-fp32" in names and "cuda-fp16" in names
    ctx = ort.ModelPackageContext(str(pkg))
    comp = ctx.select_component("model", ort.ModelPackageOptions(ort.SessionOptions()))
    assert comp.get_selected_variant_name() == ("cpu-int8" if quantized else "cpu-fp32")
    assert EdgeModel(pkg).path.name == "fashion_cnn.tuned.onnx"  # int8, or fp32 with settings
    assert sorted(p.name for p in out.iterdir()) == [
        "fashion_cnn.tune.json", "fashion_cnn.tuned.onnx", "tuned.pkg"]
