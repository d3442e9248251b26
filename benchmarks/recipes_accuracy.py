"""Full-size accuracy of the recipes and shipped models; prints a table, writes JSON.

    python benchmarks/recipes_accuracy.py [--data-root ../shared/data] [--skip-text]
        [--skip-determinism] [--out benchmarks/results/recipes_accuracy.json]

- ``models/fashion_cnn.keras`` on the 10,000 Fashion-MNIST test images (target >= 90.0%);
- ``models/breast_cancer_mlp.keras`` on the held-out 20% split of its seed (target >= 95%);
- ``text_lstm`` trained on the SMS Spam Collection, 80/20 split, seed 0 (target >= 97%), and
  the pure-Python tokenizer checked against Keras TextVectorization on every message;
- determinism: two runs with the same seed give the same test accuracy (to 0.1 pt).

The SMS file is only read from ``--data-root``; nothing derived from it is written.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

ROOT = Path(__file__).resolve().parents[1]


def _shipped(path: Path, x_raw: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    import keras

    from edgekit.metadata import load_keras_metadata
    from edgekit.recipes.evaluate import accuracy

    meta = load_keras_metadata(path)
    assert meta is not None and meta.preprocessing is not None, f"{path} has no metadata"
    model = keras.saving.load_model(path)
    acc = accuracy(model, meta.preprocessing.apply(x_raw), y)
    return {
        "model": str(path.relative_to(ROOT)),
        "test_accuracy": acc,
        "n_test": len(y),
        "seed": int(meta.extra.get("edgekit.train.seed", meta.extra.get("train.seed", -1))),
        "size_bytes": path.stat().st_size,
        "labels": meta.labels,
    }


def fashion(data_root: Path) -> dict[str, Any]:
    from edgekit.inputs.datasets import load_image_data

    d = load_image_data(data_root / "fashion-mnist")
    r = _shipped(ROOT / "models" / "fashion_cnn.keras", d.x_test, d.y_test)
    return {**r, "target": 0.90, "data": "Fashion-MNIST test set (10,000 images)"}


def breast_cancer() -> dict[str, Any]:
    from edgekit.metadata import load_keras_metadata
    from edgekit.recipes import get_recipe

    path = ROOT / "models" / "breast_cancer_mlp.keras"
    meta = load_keras_metadata(path)
    seed = int((meta.extra if meta else {}).get("train.seed", 0))
    s = get_recipe("tabular_mlp").load_data(seed=seed)
    r = _shipped(path, s.x_test, s.y_test)
    return {
        **r,
        "target": 0.95,
        "data": f"breast cancer, held-out 20% split (stratified, seed {seed})",
    }


def text(data_root: Path) -> dict[str, Any]:
    from edgekit.inputs.text import TextTokenizer
    from edgekit.recipes import TrainConfig, get_recipe
    from edgekit.recipes.text_lstm import make_vectorizer, vectorize

    sms = data_root / "sms-spam" / "SMSSpamCollection.tsv"
    rec = get_recipe("text_lstm")
    r = rec.train(TrainConfig(seed=0, verbose=2), sms)
    # tokenizer equivalence: vocabulary adapted on the same training split, every message
    split = rec.load_data(sms, seed=0)
    layer = make_vectorizer(split.x_train)
    tok = TextTokenizer.from_dict(
        json.loads(json.dumps(TextTokenizer.from_text_vectorization(layer).to_dict()))
    )
    texts = list(split.x_train) + list(split.x_test)
    same = (vectorize(layer, texts) == tok.encode(texts)).all(axis=1)
    return {
        "recipe": "text_lstm",
        "test_accuracy": r.test_accuracy,
        "train_accuracy": r.train_accuracy,
        "val_accuracy": r.val_accuracy,
        "n_train": r.n_train,
        "n_val": r.n_val,
        "n_test": r.n_test,
        "seed": 0,
        "seconds": r.seconds,
        "target": 0.97,
        "config": r.config,
        "tokenizer_messages_checked": len(texts),
        "tokenizer_mismatches": int((~same).sum()),
        "vocab_size": tok.vocab_size,
        "data": "SMS Spam Collection, stratified 80/20 split, seed 0",
    }


def determinism(data_root: Path) -> dict[str, Any]:
    from edgekit.recipes import TrainConfig, train_recipe

    runs = {
        "tabular_mlp": (TrainConfig(seed=7), None),
        "image_cnn": (TrainConfig(seed=7, epochs=2, limit=10000), data_root / "fashion-mnist"),
    }
    out = {}
    for name, (cfg, data) in runs.items():
        accs = [train_recipe(name, cfg, data=data).test_accuracy for _ in range(2)]
        out[name] = {
            "seed": cfg.seed,
            "test_accuracies": accs,
            "difference_pt": abs(accs[0] - accs[1]) * 100,
            "config": {"epochs": cfg.epochs, "limit": cfg.limit},
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", type=Path, default=ROOT.parent / "shared" / "data")
    ap.add_argument("--skip-text", action="store_true")
    ap.add_argument("--skip-determinism", action="store_true")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "recipes_accuracy.json"
    )
    args = ap.parse_args(argv)
    t0 = time.time()
    res: dict[str, Any] = {
        "fashion_cnn": fashion(args.data_root),
        "breast_cancer_mlp": breast_cancer(),
    }
    if not args.skip_text:
        res["text_lstm_sms"] = text(args.data_root)
    if not args.skip_determinism:
        res["determinism"] = determinism(args.data_root)
    import keras
    import tensorflow as tf

    res["environment"] = {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "seconds": time.time() - t0,
    }
    print("\n{:<20} {:>10} {:>8} {:>6}  {}".format("model", "test acc", "target", "seed", "data"))
    ok = True
    for key in ("fashion_cnn", "breast_cancer_mlp", "text_lstm_sms"):
        if key in res:
            r = res[key]
            passed = r["test_accuracy"] >= r["target"]
            ok &= passed
            print(
                f"{key:<20} {100 * r['test_accuracy']:>9.2f}% {100 * r['target']:>7.1f}% "
                f"{r['seed']:>6}  {r['data']}{'' if passed else '  BELOW TARGET'}"
            )
    if "text_lstm_sms" in res:
        t = res["text_lstm_sms"]
        print(
            f"tokenizer: {t['tokenizer_mismatches']} mismatches on "
            f"{t['tokenizer_messages_checked']} messages"
        )
        ok &= t["tokenizer_mismatches"] == 0
    for name, d in res.get("determinism", {}).items():
        print(f"determinism {name}: {d['test_accuracies']} (diff {d['difference_pt']:.3f} pt)")
        ok &= d["difference_pt"] <= 0.1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
