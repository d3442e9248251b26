"""Re-create the shipped defaults: models/*.keras and calibration_data/*.npz.

    python benchmarks/make_defaults.py [--data-root ../shared/data] [--only models|calibration]
        [--force]

Models are trained with the recipes' defaults and seed 0 (the same as
``edgekit train image_cnn -o models/fashion_cnn.keras --data ../shared/data/fashion-mnist``
and ``edgekit train tabular_mlp -o models/breast_cancer_mlp.keras``); calibration data are
500 seeded training images (uint8, (N, 28, 28, 1)) and the breast-cancer training split
(raw float32 features). Run ``benchmarks/recipes_accuracy.py`` afterwards for the figures.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parents[1]
SEED = 0
N_CALIB = 500


def _save_npz(path: Path, force: bool, **arrays: np.ndarray) -> None:
    import io

    from edgekit.io.artifacts import atomic_write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue(), force=force)
    path.chmod(0o644)
    print(
        f"wrote {path.relative_to(ROOT)} "
        + ", ".join(f"{k}{v.shape} {v.dtype}" for k, v in arrays.items())
    )


def calibration(fashion: Path, force: bool) -> None:
    from edgekit.inputs.datasets import load_image_data
    from edgekit.recipes import get_recipe

    d = load_image_data(fashion)
    idx = np.sort(np.random.default_rng(SEED).permutation(len(d.y_train))[:N_CALIB])
    _save_npz(
        ROOT / "calibration_data" / "fashion_mnist.npz",
        force,
        x=d.x_train[idx],
        y=d.y_train[idx].astype(np.int64),
    )
    s = get_recipe("tabular_mlp").load_data(seed=SEED)  # the 80% training split, raw
    _save_npz(
        ROOT / "calibration_data" / "breast_cancer.npz",
        force,
        x=s.x_train.astype(np.float32),
        y=s.y_train.astype(np.int64),
    )


def models(fashion: Path, force: bool) -> None:
    from edgekit.recipes import TrainConfig, train_recipe

    for name, out, data in (
        ("image_cnn", "fashion_cnn.keras", fashion),
        ("tabular_mlp", "breast_cancer_mlp.keras", None),
    ):
        r = train_recipe(
            name,
            TrainConfig(seed=SEED, verbose=2),
            data=data,
            output=ROOT / "models" / out,
            force=force,
        )
        print(r.summary())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--only", choices=["models", "calibration"], default=None)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    fashion = args.data_root / "fashion-mnist"
    if args.only in (None, "calibration"):
        calibration(fashion, args.force)
    if args.only in (None, "models"):
        models(fashion, args.force)
    return 0


if __name__ == "__main__":
    sys.exit(main())
