"""Shared test setup: quiet TensorFlow, hide GPUs, the shared fixtures, paths to the shared real
data and the file order for xdist.

Speed labels live in the test files: ``@pytest.mark.slow`` on a test that takes 2 s or more on
2 cores (``pytestmark = pytest.mark.slow`` where every test of a file does), and
``pytestmark = pytest.mark.file_seconds(N)`` for the seconds a file takes in a serial run.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from _bench_models import BenchModels, build_bench_models
from _serve_models import shipped_onnx

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FASHION_DIR = SHARED_DATA / "fashion-mnist"
SMS_FILE = SHARED_DATA / "sms-spam" / "SMSSpamCollection.tsv"


@pytest.hookimpl(tryfirst=True)  # before -m deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first, by each file's ``file_seconds`` mark (a stable sort: each file's own
    order stays), so that the xdist workers (``-n 3 --dist loadfile``) end together."""
    items.sort(key=lambda item: -_file_seconds(item))


def _file_seconds(item: pytest.Item) -> float:
    """The seconds the item's file takes in a serial run (its ``file_seconds`` mark), else 0."""
    mark = item.get_closest_marker("file_seconds")
    return float(mark.args[0]) if mark else 0.0


@pytest.fixture(scope="session")
def bench_models_dir(tmp_path_factory: pytest.TempPathFactory) -> BenchModels:
    """A tiny trained CNN (Keras + ONNX), a much bigger ONNX model and labelled uint8 data."""
    return build_bench_models(tmp_path_factory.mktemp("bench_models"))


@pytest.fixture(scope="session")
def shipped_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped Fashion-MNIST CNN as ONNX ([N, 28, 28, 1] float32 -> 10 classes)."""
    return shipped_onnx("fashion_cnn", tmp_path_factory)


@pytest.fixture(scope="session")
def shipped_mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shipped breast-cancer MLP as ONNX ([N, 30] float32, standardised in the metadata)."""
    return shipped_onnx("breast_cancer_mlp", tmp_path_factory)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """Folder of Fashion-MNIST IDX gz files (skips when ../shared/data is absent)."""
    if not (FASHION_DIR / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip(f"Fashion-MNIST not found at {FASHION_DIR}")
    return FASHION_DIR


@pytest.fixture(scope="session")
def sms_file() -> Path:
    """The SMS Spam Collection TSV (skips when ../shared/data is absent)."""
    if not SMS_FILE.exists():
        pytest.skip(f"SMS Spam Collection not found at {SMS_FILE}")
    return SMS_FILE
