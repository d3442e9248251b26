"""SMS spam end to end: train ``text_lstm`` -> export to ONNX -> classify raw messages.

    python examples/text_lstm_example.py [--data ../shared/data/sms-spam/SMSSpamCollection.tsv]
        [--epochs 5] [--out examples_out/text_lstm]

The tokenizer (vocabulary + rules) is saved in the model metadata; the runtime tokenises raw
text in pure Python (``edgekit.inputs.text.TextTokenizer``), no TensorFlow needed on the device.
The SMS data is read from ../shared/data only; nothing derived from it belongs in the repo.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from edgekit.convert import ExportConfig, export_model  # noqa: E402
from edgekit.recipes import TrainConfig, text_lstm  # noqa: E402
from edgekit.runtime.model import EdgeModel  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
ap.add_argument("--data", type=Path, default=Path("../shared/data/sms-spam/SMSSpamCollection.tsv"))
ap.add_argument("--epochs", type=int, default=5)
ap.add_argument("--out", type=Path, default=Path("examples_out/text_lstm"))
args = ap.parse_args()

lstm = text_lstm
trained = lstm.train(
    TrainConfig(epochs=args.epochs, seed=0, verbose=2),
    args.data,
    args.out / "sms_lstm.keras",
    force=True,
)
print(trained.summary())

onnx_file = export_model(args.out / "sms_lstm.keras", args.out, ExportConfig(force=True)).onnx_path
runtime = EdgeModel(onnx_file)
messages = [
    "Are we still meeting for lunch tomorrow?",
    "WINNER!! You have won a FREE prize. Call 09061701461 now to claim!",
]
for text, label in zip(messages, runtime.predict_labels(messages), strict=True):
    print(f"{label:>5}: {text}")
