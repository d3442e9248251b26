"""A minimal device-style app: only ``edgekit.runtime.model`` (numpy + onnxruntime), no TensorFlow.

    pip install edgekit            # the device install: numpy, onnxruntime, click
    python examples/embed_app.py out/fashion_cnn.onnx samples.npy
    python examples/embed_app.py out/spam.onnx --text "WIN a free prize, call now"

Loads the model once (stored session settings applied, best available provider), warms it
up, then classifies each sample and prints the label, its probability and the latency.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from edgekit.runtime.model import EdgeModel


def main() -> None:
    ap = argparse.ArgumentParser(description="classify samples with an edgekit model")
    ap.add_argument("model", help=".onnx or .ort model exported by edgekit")
    ap.add_argument("samples", nargs="?", help=".npy file of raw samples (e.g. uint8 images)")
    ap.add_argument("--text", action="append", help="text to classify (text models; repeatable)")
    ap.add_argument("--provider", default="auto", help="cpu, cuda, coreml, nnapi, ... or auto")
    args = ap.parse_args()

    with EdgeModel(args.model, args.provider, fallback=True) as model:
        print(f"loaded {args.model} on {', '.join(model.providers)}")
        model.warmup()
        samples = args.text if args.text else np.load(args.samples)
        for i, sample in enumerate(samples):
            t0 = time.perf_counter()
            (label, prob), *_ = model.predict_top_k(sample, k=1)[0]
            ms = (time.perf_counter() - t0) * 1000
            print(f"{i:4d}  {label:<20} {prob:6.3f}  {ms:6.2f} ms")


if __name__ == "__main__":
    main()
