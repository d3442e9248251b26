"""Training recipes on small real subsets: accuracy well above chance, metadata, CLI, grid."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import InputError
from edgekit.inputs.datasets import FASHION_MNIST_LABELS
from edgekit.inputs.text import TextTokenizer
from edgekit.metadata import load_keras_metadata
from edgekit.recipes import RECIPES, TrainConfig, TrainResult, get_recipe, parse_grid, train_recipe

pytestmark = pytest.mark.file_seconds(30)


def test_registry_and_config() -> None:
    assert set(RECIPES) == {"image_cnn", "tabular_mlp", "text_lstm"}
    for name in RECIPES:
        mod = get_recipe(name)
        assert callable(mod.build_model) and callable(mod.load_data) and callable(mod.train)
    with pytest.raises(InputError, match="unknown recipe"):
        get_recipe("resnet")
    for bad in (
        {"optimizer": "adagrad"},
        {"activation": "gelu"},
        {"epochs": 0},
        {"learning_rate": -1.0},
        {"validation_split": 1.0},
    ):
        with pytest.raises(InputError):
            TrainConfig(**bad)
    assert parse_grid(["optimizer=adam,rmsprop", "learning-rate=0.001,0.01"]) == {
        "optimizer": ["adam", "rmsprop"],
        "learning_rate": [0.001, 0.01],
    }
    with pytest.raises(InputError):
        parse_grid(["seed=1,2"])
    with pytest.raises(InputError):
        parse_grid(["epochs=one"])


def test_model_architectures() -> None:
    img = get_recipe("image_cnn").build_model()
    assert [type(layer).__name__ for layer in img.layers] == [
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dense",
    ]
    assert img.input_shape == (None, 28, 28, 1) and img.output_shape == (None, 10)
    mlp = get_recipe("tabular_mlp").build_model(TrainConfig(hidden=16, activation="tanh"))
    assert mlp.output_shape == (None, 1) and mlp.layers[0].activation.__name__ == "tanh"
    txt = get_recipe("text_lstm").build_model()
    assert txt.inputs[0].dtype == "int32" and tuple(txt.inputs[0].shape) == (None, 100)
    emb, lstm = txt.layers[1], txt.layers[2]
    assert emb.input_dim == 10000 and emb.output_dim == 64
    assert lstm.units == 32 and lstm.use_cudnn is False and lstm.go_backwards


@pytest.mark.slow
def test_training_and_grid_search_follow_the_progress_protocol(tmp_path: Path) -> None:
    lines: list[str] = []
    fractions: list[float] = []
    cfg = TrainConfig(epochs=2, limit=100)
    train_recipe("tabular_mlp", cfg, progress=lines.append, on_progress=fractions.append)
    assert fractions == [0.5, 1.0]
    assert any(line.startswith("epoch 2/2: ") and " loss " in line for line in lines), lines
    lines.clear()
    fractions.clear()
    grid = {"optimizer": ["adam", "sgd"]}
    train_recipe("tabular_mlp", TrainConfig(epochs=1, limit=100), grid=grid,
                 grid_json=tmp_path / "grid.json", progress=lines.append,
                 on_progress=fractions.append)
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(fractions) == 3
    assert lines[0].startswith("[1/3] ") and lines[-1].startswith("[3/3] final model")


@pytest.mark.slow
def test_image_cnn_small(tmp_path: Path, fashion_dir: Path) -> None:
    out = tmp_path / "fashion.keras"
    r = get_recipe("image_cnn").train(TrainConfig(limit=2000, epochs=1), fashion_dir, out)
    assert r.n_train + r.n_val == 2000 and r.n_test == 2000
    assert r.test_accuracy > 0.55, r.summary()  # chance is 0.10
    meta = load_keras_metadata(out)
    assert meta is not None and meta.labels == FASHION_MNIST_LABELS
    assert meta.recipe == "image_cnn" and meta.preprocessing is not None
    pre = meta.preprocessing
    assert pre.kind == "image" and pre.scale == pytest.approx(1 / 255)
    assert (pre.layout, pre.image_size, pre.color, pre.raw_dtype) == (
        "NHWC",
        [28, 28],
        "grayscale",
        "uint8",
    )
    assert not list(tmp_path.glob(".*"))  # temp files are gone


@pytest.mark.slow
def test_tabular_breast_cancer_and_seed(tmp_path: Path) -> None:
    cfg = TrainConfig(epochs=10, seed=3)
    a = train_recipe("tabular_mlp", cfg, output=tmp_path / "a.keras")
    b = train_recipe("tabular_mlp", cfg)
    assert isinstance(a, TrainResult) and isinstance(b, TrainResult)  # no grid: one model
    assert a.test_accuracy > 0.9 and a.n_test == 114  # 20% of 569, chance ~0.63
    assert abs(a.test_accuracy - b.test_accuracy) < 0.001  # same seed, same accuracy
    meta = load_keras_metadata(tmp_path / "a.keras")
    assert meta is not None and meta.labels == ["malignant", "benign"]
    assert meta.preprocessing is not None and meta.preprocessing.kind == "tabular"
    assert len(meta.preprocessing.mean or []) == 30 and meta.preprocessing.raw_dtype is None
    # the model takes standardised features: raw features through the metadata's preprocessing
    import keras
    from sklearn.datasets import load_breast_cancer

    model = keras.saving.load_model(tmp_path / "a.keras")
    d = load_breast_cancer()
    p = model.predict(meta.preprocessing.apply(d.data), verbose=0)[:, 0]
    assert ((p > 0.5) == d.target).mean() > 0.9


@pytest.mark.slow
def test_cli_train_csv_multiclass_and_force(tmp_path: Path) -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    csv = tmp_path / "digits.csv"
    cols = [f"p{i}" for i in range(64)]
    rows = [
        ",".join([*map(str, x.astype(int)), str(t)]) for x, t in zip(d.data, d.target, strict=True)
    ]
    csv.write_text(",".join([*cols, "digit"]) + "\n" + "\n".join(rows) + "\n")
    out = tmp_path / "digits.keras"
    args = [
        "train",
        "tabular_mlp",
        "-o",
        str(out),
        "--data",
        str(csv),
        "--label",
        "digit",
        "--epochs",
        "10",
        "--hidden",
        "32",
        "--seed",
        "1",
    ]
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 0, res.output
    assert "test accuracy" in res.output and out.exists()
    acc = float(res.output.split("test accuracy")[1].split("%")[0])
    assert acc > 80.0, res.output  # 10 classes, chance 10%
    meta = load_keras_metadata(out)
    assert meta is not None and meta.labels == [str(i) for i in range(10)]
    before = out.stat().st_mtime_ns
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == 1 and "already exists" in res.output and "--force" in res.output
    assert out.stat().st_mtime_ns == before


@pytest.mark.slow
def test_cli_grid_search(tmp_path: Path) -> None:
    out = tmp_path / "bc.keras"
    res = CliRunner().invoke(
        cli,
        [
            "train",
            "tabular_mlp",
            "-o",
            str(out),
            "--epochs",
            "5",
            "-q",
            "--grid",
            "optimizer=adam,rmsprop",
            "--grid",
            "learning_rate=0.01",
            "--cv",
            "2",
        ],
    )
    assert res.exit_code == 0, res.output
    assert "+-" in res.output and "best:" in res.output
    table = json.loads((tmp_path / "bc.grid.json").read_text())
    assert table["cv"] == 2 and len(table["rows"]) == 2
    for row in table["rows"]:
        assert len(row["scores"]) == 2 and 0.8 < row["mean"] <= 1.0
    assert table["best"] in [r["params"] for r in table["rows"]]
    assert table["final"]["n_val"] == 0 and table["final"]["n_train"] == 455
    assert out.exists()


@pytest.mark.slow
def test_text_lstm_sms_subset(tmp_path: Path, sms_file: Path) -> None:
    out = tmp_path / "sms.keras"
    r = get_recipe("text_lstm").train(TrainConfig(limit=1500, epochs=3, seed=0), sms_file, out)
    assert r.test_accuracy > 0.93, r.summary()  # majority class ("ham") is ~0.87
    meta = load_keras_metadata(out)
    assert meta is not None and meta.labels == ["ham", "spam"] and meta.tokenizer is not None
    assert meta.preprocessing is not None and meta.preprocessing.kind == "text"
    # the saved tokenizer + model classify raw text without TextVectorization
    import keras

    model = keras.saving.load_model(out)
    tok = TextTokenizer.from_dict(meta.tokenizer)
    texts = get_recipe("text_lstm").load_data(sms_file).x_test[:300]
    y = get_recipe("text_lstm").load_data(sms_file).y_test[:300]
    pred = model.predict(tok.encode(list(texts)), verbose=0).argmax(-1)
    assert (pred == y).mean() > 0.9
    assert np.isin(tok.encode(list(texts)), np.arange(tok.vocab_size)).all()


def test_examples_and_notebook_are_valid() -> None:
    root = Path(__file__).resolve().parents[1]
    for name in ("image_cnn", "tabular_mlp", "text_lstm"):
        src = (root / "examples" / f"{name}_example.py").read_text()
        compile(src, name, "exec")
        assert "export_model" in src and "EdgeModel" in src
    nb = json.loads((root / "examples" / "image_cnn_walkthrough.ipynb").read_text())
    assert nb["nbformat"] == 4 and nb["cells"]
    for cell in nb["cells"]:
        assert cell["cell_type"] in ("markdown", "code") and isinstance(cell["source"], list)
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and "execution_count" in cell
            compile("".join(cell["source"]), "cell", "exec")


def test_shipped_defaults() -> None:
    root = Path(__file__).resolve().parents[1]
    for model, labels in (
        ("fashion_cnn.keras", FASHION_MNIST_LABELS),
        ("breast_cancer_mlp.keras", ["malignant", "benign"]),
    ):
        path = root / "models" / model
        assert path.stat().st_size < 2_000_000
        meta = load_keras_metadata(path)
        assert meta is not None and meta.labels == labels and meta.preprocessing is not None
    with np.load(root / "calibration_data" / "fashion_mnist.npz") as z:
        assert z["x"].dtype == np.uint8 and z["x"].shape[1:] == (28, 28, 1)
        assert 100 <= len(z["x"]) == len(z["y"]) <= 1000
    with np.load(root / "calibration_data" / "breast_cancer.npz") as z:
        assert z["x"].dtype == np.float32 and z["x"].shape[1] == 30 and len(z["y"]) == len(z["x"])
        assert z["x"].mean() > 10  # raw, not standardised
