"""Breast cancer end to end: train ``tabular_mlp`` -> export to ONNX -> classify raw rows.

    python examples/tabular_mlp_example.py [--csv FILE --label COLUMN] [--epochs 60]
        [--out examples_out/tabular_mlp]

Without ``--csv`` it trains on scikit-learn's breast-cancer set (80/20 split, seed 0). The
feature standardisation learned on the training split travels in the model metadata, so the
runtime takes raw, unstandardised features.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from edgekit.convert import ExportConfig, export_model
from edgekit.recipes import TrainConfig, tabular_mlp
from edgekit.runtime.model import EdgeModel

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--csv", type=Path, default=None)
ap.add_argument("--label", default=None)
ap.add_argument("--epochs", type=int, default=60)
ap.add_argument("--out", type=Path, default=Path("examples_out/tabular_mlp"))
args = ap.parse_args()

mlp = tabular_mlp
keras_path = args.out / "tabular_mlp.keras"
summary = mlp.train(
    TrainConfig(epochs=args.epochs, seed=0), args.csv, keras_path, force=True, label=args.label
)
print(summary.summary())

onnx_path = export_model(keras_path, args.out, ExportConfig(force=True)).onnx_path
edge = EdgeModel(onnx_path)
split = mlp.load_data(args.csv, label=args.label, seed=0)
names = edge.predict_labels(split.x_test)  # raw features; mean/std applied by the runtime
hits = sum(n == split.labels[y] for n, y in zip(names, split.y_test, strict=True))
print(f"ONNX accuracy on the held-out split: {hits / len(names):.4f} ({onnx_path})")
