"""Data loaders: real IDX/CSV/TSV files, and clear errors (no traceback) on bad inputs."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import DataError, InputError
from edgekit.inputs.datasets import (
    FASHION_MNIST_LABELS,
    load_breast_cancer,
    load_csv,
    load_image_data,
    load_text_table,
    read_idx,
)


def _idx_bytes(arr: np.ndarray) -> bytes:
    head = struct.pack(">BBBB", 0, 0, 0x08, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    return head + arr.astype(np.uint8).tobytes()


def _write_idx_folder(folder: Path, n_train: int = 40, n_test: int = 20) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(x)))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx_bytes(y)))
    return folder


def test_read_idx_real_labels(fashion_dir: Path) -> None:
    y = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz")
    assert y.shape == (10000,) and y.dtype == np.uint8
    assert np.bincount(y).tolist() == [1000] * 10


def test_load_image_folder_real(fashion_dir: Path) -> None:
    d = load_image_data(fashion_dir)
    assert d.x_train.shape == (60000, 28, 28, 1) and d.x_train.dtype == np.uint8
    assert d.x_test.shape == (10000, 28, 28, 1) and len(d.y_test) == 10000
    assert d.labels == FASHION_MNIST_LABELS


def test_load_idx_folder_and_npz(tmp_path: Path) -> None:
    d = load_image_data(_write_idx_folder(tmp_path / "digits"))
    assert d.x_train.shape == (40, 28, 28, 1) and d.labels == [str(i) for i in range(10)]
    npz = tmp_path / "mnist.npz"
    np.savez(
        npz, x_train=d.x_train[..., 0], y_train=d.y_train, x_test=d.x_test[..., 0], y_test=d.y_test
    )
    e = load_image_data(npz)
    assert np.array_equal(e.x_train, d.x_train) and np.array_equal(e.y_test, d.y_test)


def test_idx_truncated_gz(tmp_path: Path, fashion_dir: Path) -> None:
    raw = (fashion_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
    bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match="truncated or not an IDX file"):
        read_idx(bad)


@pytest.mark.parametrize(
    "payload",
    [
        gzip.compress(b"hello, this is not an IDX file at all", mtime=0),  # bad magic
        gzip.compress(_idx_bytes(np.zeros((5, 3), np.uint8))[:-4], mtime=0),  # short body
        b"\x00\x00\x08",  # short header, not gzip
    ],
    ids=["bad-magic", "short-body", "short-header"],  # the same in every xdist worker
)
def test_idx_bad_content(tmp_path: Path, payload: bytes) -> None:
    p = tmp_path / "x.gz"
    p.write_bytes(payload)
    with pytest.raises(DataError, match="truncated or not an IDX file"):
        read_idx(p)


def test_missing_and_empty(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_image_data(tmp_path / "nope")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(DataError, match="empty"):
        load_csv(empty, "y")
    with pytest.raises(DataError, match="empty"):
        load_text_table(empty)
    blank = tmp_path / "blank.tsv"
    blank.write_text("\n\n  \n")
    with pytest.raises(DataError, match="empty"):
        load_text_table(blank)
    with pytest.raises(InputError, match="no train-images"):
        load_image_data(tmp_path)


def test_csv(tmp_path: Path) -> None:
    p = tmp_path / "t.csv"
    p.write_text("a,b,kind\n1,2,x\n3,4,y\n5,6,x\n")
    d = load_csv(p, "kind")
    assert d.x.tolist() == [[1, 2], [3, 4], [5, 6]] and d.y.tolist() == [0, 1, 0]
    assert d.labels == ["x", "y"] and d.feature_names == ["a", "b"]
    with pytest.raises(DataError, match="no column 'label'; columns: a, b, kind"):
        load_csv(p, "label")
    p.write_text("a,b,kind\n1,oops,x\n3,4,y\n")
    with pytest.raises(DataError, match="line 2: non-numeric"):
        load_csv(p, "kind")


def test_breast_cancer() -> None:
    d = load_breast_cancer()
    assert d.x.shape == (569, 30) and d.labels == ["malignant", "benign"]


def test_text_table(tmp_path: Path, sms_file: Path) -> None:
    d = load_text_table(sms_file)
    assert len(d.texts) == 5574 and d.labels == ["ham", "spam"]
    assert np.bincount(d.y).tolist() == [4827, 747]
    p = tmp_path / "t.csv"
    p.write_text('label,text\npos,"good, very good"\nneg,bad\n')
    t = load_text_table(p)
    assert t.texts == ["good, very good", "bad"] and t.labels == ["neg", "pos"]
    p = tmp_path / "bad.tsv"
    p.write_text("label\ttext\nham no tab here\n")
    with pytest.raises(DataError, match="lack a tab"):
        load_text_table(p)


# -- the same errors through the CLI: exit 1 (2: missing file), "error:" + "hint:", no traceback
def _cli_fails(args: list[str], out: Path, match: str, code: int = 1) -> None:
    res = CliRunner().invoke(cli, args)
    assert res.exit_code == code, res.output
    assert "error:" in res.output and match in res.output, res.output
    assert "Traceback" not in res.output
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.stem}*"))  # no temp files left behind


def test_cli_loader_errors(tmp_path: Path, fashion_dir: Path) -> None:
    out = tmp_path / "m.keras"
    _cli_fails(
        ["train", "image_cnn", "-o", str(out), "--data", str(tmp_path / "missing")],
        out,
        "does not exist",
        code=2,  # a missing input is a usage error
    )
    trunc = tmp_path / "trunc"
    _write_idx_folder(trunc)
    raw = (fashion_dir / "train-labels-idx1-ubyte.gz").read_bytes()
    (trunc / "train-labels-idx1-ubyte.gz").write_bytes(raw[:1000])
    _cli_fails(
        ["train", "image_cnn", "-o", str(out), "--data", str(trunc)],
        out,
        "truncated or not an IDX file",
    )
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,kind\n1,2,x\n3,4,y\n")
    _cli_fails(
        ["train", "tabular_mlp", "-o", str(out), "--data", str(csv), "--label", "y"],
        out,
        "columns: a, b, kind",
    )
    empty = tmp_path / "empty.tsv"
    empty.write_text("")
    _cli_fails(["train", "text_lstm", "-o", str(out), "--data", str(empty)], out, "is empty")
    _cli_fails(["train", "text_lstm", "-o", str(out)], out, "needs --data")


def test_offline_download_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    keras = pytest.importorskip("keras")

    def offline() -> None:
        raise OSError("no network")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    res = CliRunner().invoke(cli, ["train", "image_cnn", "-o", str(tmp_path / "m.keras")])
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "could not be downloaded" in res.output
    assert "--data ../shared/data/fashion-mnist" in res.output
    assert "dataset-fashion-mnist" in res.output
