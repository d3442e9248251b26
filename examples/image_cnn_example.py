"""Fashion-MNIST end to end: train ``image_cnn`` -> export to ONNX -> classify raw images.

    python examples/image_cnn_example.py [--data ../shared/data/fashion-mnist] [--epochs 1]
        [--limit 5000] [--out examples_out/image_cnn]

Defaults train a quick model on 5,000 images; ``--limit 0 --epochs 10`` trains the shipped
``models/fashion_cnn.keras`` (>= 90% test accuracy).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edgekit.convert import ExportConfig, export_model  # noqa: E402
from edgekit.recipes import TrainConfig, get_recipe  # noqa: E402
from edgekit.runtime.model import EdgeModel  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--data", type=Path, default=Path("../shared/data/fashion-mnist"))
ap.add_argument("--epochs", type=int, default=1)
ap.add_argument("--limit", type=int, default=5000, help="0 = all 60,000 images")
ap.add_argument("--out", type=Path, default=Path("examples_out/image_cnn"))
args = ap.parse_args()

recipe = get_recipe("image_cnn")
config = TrainConfig(epochs=args.epochs, limit=args.limit or None, seed=0, verbose=2)
result = recipe.train(config, args.data, args.out / "fashion_cnn.keras", force=True)
print(result.summary())

exported = export_model(args.out / "fashion_cnn.keras", args.out, ExportConfig(force=True))
print(f"exported {exported.onnx_path}")

model = EdgeModel(exported.onnx_path)  # labels + x/255 scaling come from the metadata
data = recipe.load_data(args.data)
raw = data.x_test[:8]  # uint8 (8, 28, 28, 1), exactly as stored in the IDX file
for truth, guess in zip(data.y_test[:8], model.predict_labels(raw), strict=True):
    print(f"{data.labels[truth]:>12} -> {guess}")
