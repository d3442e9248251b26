"""Shared test setup: quiet TensorFlow, hide GPUs, paths to the shared real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
FASHION_DIR = SHARED_DATA / "fashion-mnist"
SMS_FILE = SHARED_DATA / "sms-spam" / "SMSSpamCollection.tsv"


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
