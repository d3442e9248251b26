"""Data folders in the layouts people have: ONNX test_data_set_N folders and image folders, read
by the one input pipeline, accepted by quantize/tune/export, and refused clearly (error: + hint,
exit 1, no traceback, nothing written) when they are wrong."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from _runtime_models import make_image_model, make_text_model, make_two_input_model
from click.testing import CliRunner
from onnx import numpy_helper

from edgekit.cli.main import cli
from edgekit.errors import DataError
from edgekit.inputs.folders import FolderLayout, folder_layout, has_splits
from edgekit.inputs.prepare import load_model_data, onnx_input_specs, read_data
from edgekit.metadata import ModelMetadata

pytestmark = pytest.mark.file_seconds(20)

PIL = pytest.importorskip("PIL.Image")
pytest.importorskip("sympy")  # edgekit[quantize]


def _tensor(path: Path, a: np.ndarray, name: str = "") -> Path:
    """An ONNX TensorProto file, written by onnx's own helper (as the model zoo's are)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(numpy_helper.from_array(a, name).SerializeToString())
    return path


def _model_data(model: Path) -> tuple[list, ModelMetadata]:
    proto = onnx.load(str(model))
    return onnx_input_specs(proto), ModelMetadata.from_props(
        {p.key: p.value for p in proto.metadata_props})


@pytest.fixture(scope="module")
def fashion(fashion_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    from edgekit.inputs.datasets import load_image_data

    d = load_image_data(fashion_dir)
    return d.x_test[:120, ..., 0], d.y_test[:120]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory,
         fashion: tuple[np.ndarray, np.ndarray]) -> dict[str, Path]:
    """The test image model, a model-zoo folder (3 sets of 8 real images, reference outputs)
    and an image folder (10 class folders of real Fashion-MNIST PNGs, 2x upscaled RGB)."""
    d = tmp_path_factory.mktemp("folders")
    model = make_image_model(d / "m.onnx")
    x, y = fashion
    for i in range(3):
        xs = x[i * 8:(i + 1) * 8, ..., None].astype(np.float32) / 255
        _tensor(d / "zoo" / f"test_data_set_{i}" / "input_0.pb", xs, "image")
        _tensor(d / "zoo" / f"test_data_set_{i}" / "output_0.pb", np.zeros((8, 10), np.float32))
    for j, (img, label) in enumerate(zip(x[:60], y[:60], strict=True)):
        rgb = np.repeat(np.kron(img, np.ones((2, 2), np.uint8))[..., None], 3, axis=2)
        (d / "images" / str(label)).mkdir(parents=True, exist_ok=True)
        PIL.fromarray(rgb).save(d / "images" / str(label) / f"{j:03d}.png")
    return {"dir": d, "model": model, "zoo": d / "zoo", "images": d / "images"}


# -- reading -------------------------------------------------------------------------------------
def test_onnx_test_sets_are_concatenated_in_set_order(data: dict[str, Path],
                                                      fashion: tuple[np.ndarray, np.ndarray]
                                                      ) -> None:
    specs, meta = _model_data(data["model"])
    assert folder_layout(data["zoo"]) is FolderLayout.ONNX_TEST_DATA
    ds = read_data(data["zoo"], specs, meta, "calibration data")
    x = fashion[0][:24, ..., None].astype(np.float32) / 255
    assert np.array_equal(ds.inputs["image"], x) and ds.labels is None
    assert ds.outputs is not None and ds.outputs["output_0"].shape == (24, 10)
    assert "3 ONNX test sets" in ds.source
    one = read_data(data["zoo"] / "test_data_set_1", specs, meta, "calibration data")
    assert np.array_equal(one.inputs["image"], x[8:16])
    sub = read_data(data["zoo"], specs, meta, "calibration data", limit=5, seed=3)
    assert len(sub) == 5 and sub.outputs is not None and len(sub.outputs["output_0"]) == 5


def test_onnx_test_sets_map_by_tensor_name_and_take_single_samples(tmp_path: Path) -> None:
    model = make_two_input_model(tmp_path / "two.onnx")
    specs, meta = _model_data(model)
    for i in range(12):  # test_data_set_10 comes after test_data_set_9
        s = tmp_path / "zoo" / f"test_data_set_{i}"
        _tensor(s / "input_0.pb", np.full(3, i, np.float32), "b")  # no batch axis: one sample
        _tensor(s / "input_1.pb", np.full(3, -i, np.float32), "a")
    ds = read_data(tmp_path / "zoo", specs, meta, "evaluation data")
    assert ds.inputs["b"][:, 0].tolist() == list(range(12))
    assert ds.inputs["a"][:, 0].tolist() == [-i for i in range(12)]


def test_image_folder_labels_follow_sorted_class_folders(data: dict[str, Path],
                                                        fashion: tuple[np.ndarray, np.ndarray]
                                                        ) -> None:
    specs, meta = _model_data(data["model"])
    assert folder_layout(data["images"]) is FolderLayout.IMAGES
    assert not has_splits(data["images"]) and not has_splits(data["zoo"])
    feeds, labels, notes, desc = load_model_data(data["images"], specs, meta, "evaluation data")
    x, y = fashion
    order = np.argsort([str(v) for v in y[:60]], kind="stable")  # files sorted per class
    assert labels is not None and labels.tolist() == sorted(y[:60].tolist())
    # resized back to 28x28 and greyscaled as the metadata says; scaled by 1/255
    assert feeds["image"].shape == (60, 28, 28, 1)
    got = feeds["image"][:, None, ..., 0]  # bilinear resampling blurs the edges a little:
    diff = np.abs(got - x[None, :60].astype(np.float32) / 255).mean(axis=(2, 3))
    assert diff.argmin(axis=1).tolist() == order.tolist()  # each is closest to its original
    assert diff.min(axis=1).max() < 0.07
    assert any("uint8 data preprocessed" in n for n in notes) and "10 class folders" in desc
    sub = read_data(data["images"], specs, meta, "evaluation data", limit=7, seed=1)
    assert len(sub) == 7 and sub.labels is not None


def test_image_folder_keras_convention_and_flat_folders(tmp_path: Path,
                                                       data: dict[str, Path]) -> None:
    specs, meta = _model_data(data["model"])
    img = np.zeros((28, 28), np.uint8)
    for cls in ("b", "a", ".hidden", "c"):
        (tmp_path / "cls" / cls).mkdir(parents=True)
    PIL.fromarray(img).save(tmp_path / "cls" / "b" / "x.png")
    PIL.fromarray(img).save(tmp_path / "cls" / "c" / "y.jpg")
    PIL.fromarray(img).save(tmp_path / "cls" / ".hidden" / "z.png")
    (tmp_path / "cls" / "c" / "notes.txt").write_text("not an image")
    ds = read_data(tmp_path / "cls", specs, meta, "data")
    assert ds.labels is not None and ds.labels.tolist() == [1, 2]  # a=0 (empty), b=1, c=2
    (tmp_path / "flat").mkdir()
    for i in range(3):
        PIL.fromarray(img).save(tmp_path / "flat" / f"{i}.png")
    flat = read_data(tmp_path / "flat", specs, meta, "data")
    assert len(flat) == 3 and flat.labels is None and "no labels" in flat.source
    PIL.fromarray(img).save(tmp_path / "cls" / "top.png")
    with pytest.raises(DataError, match="both at its top level"):
        read_data(tmp_path / "cls", specs, meta, "data")


# -- the CLI accepts them ------------------------------------------------------------------------
def test_quantize_calibrates_on_images_and_evaluates_on_test_sets(data: dict[str, Path],
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "q"
    r = CliRunner().invoke(cli, ["quantize", str(data["model"]), "-o", str(out), "--quantize",
                                 "int8", "--calibration", str(data["images"]),
                                 "--eval-data", str(data["zoo"])])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "m.report.json").read_text())["variants"]["int8"]
    assert report["calibration"]["samples"] == 60 and "class folders" in report["calibration"][
        "data"]
    assert report["evaluation"]["samples"] == 24
    r = CliRunner().invoke(cli, ["quantize", str(data["model"]), "-o", str(tmp_path / "q2"),
                                 "--quantize", "int8", "--calibration", str(data["zoo"]),
                                 "--calibration-samples", "16", "--eval-data",
                                 str(data["images"]), "--max-accuracy-drop", "100"])
    assert r.exit_code == 0, r.output
    ev = json.loads((tmp_path / "q2" / "m.report.json").read_text())["variants"]["int8"]
    assert ev["calibration"]["samples"] == 16 and ev["evaluation"]["samples"] == 60
    assert ev["evaluation"]["fp32_accuracy"] is not None  # labelled by the class folders


@pytest.mark.slow
def test_tune_accepts_both_layouts(data: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "t"
    r = CliRunner().invoke(cli, ["tune", str(data["model"]), "-o", str(out), "--calibration",
                                 str(data["zoo"]), "--eval-data", str(data["images"]),
                                 "--budget", "0.01", "-q"])
    assert r.exit_code == 0, r.output
    assert (out / "m.tuned.onnx").exists()
    report = json.loads((out / "m.tune.json").read_text())
    assert "class folders" in json.dumps(report)


@pytest.mark.slow
def test_export_validates_on_images_and_quantizes_with_test_sets(
        data: dict[str, Path], tmp_path: Path) -> None:
    """The shipped Fashion-MNIST CNN: the image folder's labels (sorted class folders) give its
    real accuracy, so labels and preprocessing are right."""
    model = Path(__file__).resolve().parents[1] / "models" / "fashion_cnn.keras"
    out = tmp_path / "e"
    r = CliRunner().invoke(cli, ["export", str(model), "-o", str(out), "--validation-data",
                                 str(data["images"]), "--quantize", "int8", "--calibration",
                                 str(data["zoo"]), "--eval-data", str(data["images"])])
    assert r.exit_code == 0, r.output
    report = json.loads((out / "fashion_cnn.report.json").read_text())
    assert report["validation"]["n_samples"] == 60 and report["validation"]["passed"]
    ev = report["variants"]["int8"]["evaluation"]
    assert ev["fp32_accuracy"] >= 0.8, ev


# -- and refuse them clearly when they are wrong --------------------------------------------------
def _bad_folders(root: Path) -> dict[str, tuple[Path, str]]:
    """name -> (folder, part of the message) for the test image model [N, 28, 28, 1] float32."""
    sets = root / "sets"
    _tensor(sets / "no_inputs" / "test_data_set_0" / "output_0.pb", np.zeros((1, 10), np.float32))
    _tensor(sets / "shape" / "test_data_set_0" / "input_0.pb", np.zeros((2, 32, 32, 1), np.float32))
    _tensor(sets / "rank" / "test_data_set_0" / "input_0.pb", np.zeros((2, 784), np.float32))
    _tensor(sets / "strings" / "test_data_set_0" / "input_0.pb", np.array(["a"], dtype=object))
    (sets / "corrupt" / "test_data_set_0").mkdir(parents=True)
    (sets / "corrupt" / "test_data_set_0" / "input_0.pb").write_bytes(b"not a tensor at all")
    (root / "unreadable" / "shirt").mkdir(parents=True)
    (root / "unreadable" / "shirt" / "1.png").write_bytes(b"\x89PNG but truncated")
    (root / "empty").mkdir()
    (root / "empty_classes" / "a").mkdir(parents=True)
    (root / "other").mkdir()
    (root / "other" / "notes.txt").write_text("hello")
    return {
        "no_inputs": (sets / "no_inputs", "missing input_0.pb"),
        "shape": (sets / "shape", "the model expects (N, 28, 28, 1)"),
        "rank": (sets / "rank", "has shape (2, 784)"),
        "strings": (sets / "strings", "holds STRING values, not numbers"),
        "corrupt": (sets / "corrupt", "not a readable ONNX TensorProto"),
        "unreadable": (root / "unreadable", "cannot read image"),
        "empty": (root / "empty", "is empty"),
        "empty_classes": (root / "empty_classes", "is empty"),
        "other": (root / "other", "holds no data edgekit reads"),
    }


def _refused(args: list[str], out: Path, match: str) -> None:
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1, r.output
    assert "error:" in r.output and match in r.output, r.output
    assert "hint:" in r.output and "Traceback" not in r.output, r.output
    assert not out.exists(), r.output
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temp folders


@pytest.mark.parametrize("option", ["--calibration", "--eval-data"])
def test_quantize_refuses_bad_folders(data: dict[str, Path], tmp_path: Path,
                                      option: str) -> None:
    for name, (folder, match) in _bad_folders(tmp_path / "bad").items():
        out = tmp_path / "out" / name
        out.parent.mkdir(exist_ok=True)
        good = ["--calibration", str(data["zoo"])] if option == "--eval-data" else []
        _refused(["quantize", str(data["model"]), "-o", str(out), "--quantize", "int8",
                  *good, option, str(folder)], out, match)


def test_wrong_dtype_and_missing_second_input(tmp_path: Path) -> None:
    text = make_text_model(tmp_path / "text.onnx")  # int32 token ids
    _tensor(tmp_path / "floats" / "test_data_set_0" / "input_0.pb", np.zeros((2, 8), np.float32))
    _refused(["quantize", str(text), "-o", str(tmp_path / "o1"), "--quantize", "dynamic",
              "--eval-data", str(tmp_path / "floats")], tmp_path / "o1",
             "holds float32 values but the model's input 'tokens' is int32")
    two = make_two_input_model(tmp_path / "two.onnx")
    _tensor(tmp_path / "one" / "test_data_set_0" / "input_0.pb", np.zeros((2, 3), np.float32))
    _refused(["quantize", str(two), "-o", str(tmp_path / "o2"), "--quantize", "fp16",
              "--eval-data", str(tmp_path / "one")], tmp_path / "o2",
             "has input_0.pb but the model has 2 input(s) ['a', 'b'] (missing input_1.pb)")
    specs, meta = _model_data(two)
    with pytest.raises(DataError, match="an image folder fits a model with one input"):
        load_model_data(_image_folder(tmp_path), specs, meta, "data")


def _image_folder(root: Path) -> Path:
    (root / "imgs").mkdir()
    PIL.fromarray(np.zeros((5, 5), np.uint8)).save(root / "imgs" / "a.png")
    return root / "imgs"


def test_tune_refuses_bad_folders(data: dict[str, Path], tmp_path: Path) -> None:
    bad = _bad_folders(tmp_path / "bad")
    for name in ("no_inputs", "shape", "unreadable", "empty"):
        folder, match = bad[name]
        out = tmp_path / "out" / name
        out.parent.mkdir(exist_ok=True)
        _refused(["tune", str(data["model"]), "-o", str(out), "--calibration", str(folder)],
                 out, match)
    out = tmp_path / "out" / "eval"
    _refused(["tune", str(data["model"]), "-o", str(out), "--calibration", str(data["zoo"]),
              "--eval-data", str(bad["strings"][0])], out, bad["strings"][1])


def test_export_refuses_bad_folders(tmp_path: Path) -> None:
    model = Path(__file__).resolve().parents[1] / "models" / "fashion_cnn.keras"
    bad = _bad_folders(tmp_path / "bad")
    for name, option in (("no_inputs", "--validation-data"), ("unreadable", "--validation-data"),
                         ("shape", "--calibration"), ("empty", "--calibration")):
        folder, match = bad[name]
        out = tmp_path / "out" / name
        out.parent.mkdir(exist_ok=True)
        quant = ["--quantize", "int8"] if option == "--calibration" else []
        _refused(["export", str(model), "-o", str(out), *quant, option, str(folder)], out, match)


def test_only_the_images_drawn_are_decoded(tmp_path: Path, data: dict[str, Path]) -> None:
    """A limit (calibration samples, --eval-samples ...) picks files before decoding: a broken
    file that is not drawn is never opened; all of them are read without a limit."""
    from edgekit.inputs.folders import subset_index

    specs, meta = _model_data(data["model"])
    for i in range(20):
        PIL.fromarray(np.full((28, 28), i, np.uint8)).save(tmp_path / f"{i:02d}.png")
    skipped = sorted(set(range(20)) - set(subset_index(20, 5, seed=0).tolist()))[0]
    (tmp_path / f"{skipped:02d}.png").write_bytes(b"broken")
    ds = read_data(tmp_path, specs, meta, "calibration data", limit=5, seed=0)
    assert len(ds) == 5 and skipped not in ds.inputs["image"][:, 0, 0, 0].tolist()
    with pytest.raises(DataError, match=f"cannot read image .*{skipped:02d}.png"):
        read_data(tmp_path, specs, meta, "calibration data")


def test_a_data_file_is_read_once_by_the_stages_sharing_it(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.errors import InputError
    from edgekit.inputs import prepare
    from edgekit.inputs.data import TensorSpecInfo

    np.savez(tmp_path / "d.npz", x=np.arange(40, dtype=np.float32).reshape(20, 2))
    reads: list[object] = []
    real = prepare.load_dataset

    def load_dataset(*a: Any) -> Any:
        reads.append(a[0])
        return real(*a)

    monkeypatch.setattr(prepare, "load_dataset", load_dataset)
    specs, meta = [TensorSpecInfo("in", (None, 2), "float32")], ModelMetadata()
    shared = prepare.DataFile(tmp_path / "d.npz", "calibration data")
    val = load_model_data(shared, specs, meta, "validation data", "test", 8, 0)  # export
    cal = load_model_data(shared, specs, meta, "calibration data", "train", 0, 0)  # quantize
    plain = load_model_data(tmp_path / "d.npz", specs, meta, "validation data", "test", 8, 0)
    assert len(reads) == 2  # the shared file once, the plain path once more
    np.testing.assert_array_equal(val[0]["in"], plain[0]["in"])  # the same subset
    assert len(cal[0]["in"]) == 20 and val[3] == plain[3] == str(tmp_path / "d.npz")
    assert prepare.open_data(shared) is shared and Path(shared) == tmp_path / "d.npz"
    with pytest.raises(InputError, match="calibration data file .* does not exist"):
        prepare.open_data(tmp_path / "missing.npz", "calibration data")
