"""The models of ``benchmarks/zoo.py``: 12 architectures nobody here wrote, plus the 3 recipes.

- ``keras.applications`` with ``weights=None`` (1000-class ImageNet heads): MobileNetV2,
  MobileNetV3Small/Large, EfficientNetB0, EfficientNetV2B0, ResNet50, DenseNet121,
  ConvNeXtTiny, at ``size`` x ``size`` (224 by default). BatchNorm statistics, betas/gammas
  and biases are drawn at random (seeded): latency needs no trained weights, and fresh 0/1
  statistics would let converters fold layers a trained model keeps.
- keras-io examples, rebuilt in their style (custom layers in ``zoo_layers.py``):
  a small ViT ("Image classification with Vision Transformer", 4 of its 8 layers, a
  [512, 256] head instead of [2048, 1024], patches of ``size // 14``), the text Transformer
  encoder ("Text classification with Transformer"), the bidirectional LSTM ("Bidirectional
  LSTM on IMDB") and the Conv1D text model ("Text classification from scratch"), on int32
  token ids of the examples' lengths and vocabularies.
- the three edgekit recipes: the shipped Fashion-MNIST CNN and breast-cancer MLP
  (``models/``), the SMS text LSTM trained here for 2 epochs from ../shared/data (never
  committed).

Calibration data: image models get Fashion-MNIST training images (../shared/data) resized to
``size``, grey to RGB, 0..255, through the family's ``preprocess_input`` (seeded uniform noise
in 0..255 when the data is absent); text models seeded token ids in the Embedding range; the
recipes their own data (``calibration_data/*.npz``, the SMS table). :func:`prepare` says which.
TensorFlow is imported only inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["ZooModel", "MODELS", "ZOO", "QUICK", "LAYERS", "prepare"]

ROOT = Path(__file__).resolve().parents[1]
FASHION = ROOT.parent / "shared" / "data" / "fashion-mnist"
SMS = ROOT.parent / "shared" / "data" / "sms-spam" / "SMSSpamCollection.tsv"
#: the custom-layer module ``edgekit export --custom-objects`` imports for the keras-io models
LAYERS = Path(__file__).resolve().with_name("zoo_layers.py")


@dataclass(frozen=True)
class ZooModel:
    """One model: ``build(size)`` returns a fresh Keras model (None: a recipe, see
    :func:`prepare`); ``preprocess``: the ``keras.applications`` preprocess_input mode of its
    calibration images (None: the model rescales itself)."""

    name: str
    title: str
    family: str  # "image", "text" or "recipe"
    build: Callable[[int], Any] | None = None
    preprocess: str | None = None
    custom_objects: bool = False
    max_accuracy_drop: float = 100.0  # random weights: the tune's accuracy gate is open


def _app(fn_name: str, **kw: Any) -> Callable[[int], Any]:
    def make(size: int) -> Any:
        import keras

        fn = getattr(keras.applications, fn_name)
        return fn(weights=None, input_shape=(size, size, 3), classes=1000, **kw)

    return make


def _vit(size: int) -> Any:
    import keras
    from keras import layers
    from zoo_layers import PatchEncoder, Patches

    def mlp(x: Any, hidden_units: list[int], dropout_rate: float) -> Any:
        for units in hidden_units:
            x = layers.Dense(units, activation=keras.activations.gelu)(x)
            x = layers.Dropout(dropout_rate)(x)
        return x

    patch_size, projection_dim, num_heads = max(4, size // 14), 64, 4
    num_patches = (size // patch_size) ** 2
    inputs = keras.Input(shape=(size, size, 3))
    patches = Patches(patch_size)(layers.Rescaling(1.0 / 255)(inputs))
    encoded_patches = PatchEncoder(num_patches, projection_dim)(patches)
    for _ in range(4):
        x1 = layers.LayerNormalization(epsilon=1e-6)(encoded_patches)
        attention_output = layers.MultiHeadAttention(num_heads=num_heads, key_dim=projection_dim,
                                                     dropout=0.1)(x1, x1)
        x2 = layers.Add()([attention_output, encoded_patches])
        x3 = layers.LayerNormalization(epsilon=1e-6)(x2)
        x3 = mlp(x3, hidden_units=[projection_dim * 2, projection_dim], dropout_rate=0.1)
        encoded_patches = layers.Add()([x3, x2])
    representation = layers.LayerNormalization(epsilon=1e-6)(encoded_patches)
    representation = layers.Dropout(0.5)(layers.Flatten()(representation))
    features = mlp(representation, hidden_units=[512, 256], dropout_rate=0.5)
    return keras.Model(inputs=inputs, outputs=layers.Dense(100)(features), name="vit_small")


def _transformer_text(_: int) -> Any:
    import keras
    from keras import layers
    from zoo_layers import TokenAndPositionEmbedding, TransformerBlock

    vocab_size, maxlen, embed_dim, num_heads, ff_dim = 20000, 200, 32, 2, 32
    inputs = layers.Input(shape=(maxlen,), dtype="int32")
    x = TokenAndPositionEmbedding(maxlen, vocab_size, embed_dim)(inputs)
    x = TransformerBlock(embed_dim, num_heads, ff_dim)(x)
    x = layers.GlobalAveragePooling1D()(x)
    x = layers.Dropout(0.1)(x)
    x = layers.Dense(20, activation="relu")(x)
    x = layers.Dropout(0.1)(x)
    outputs = layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs=inputs, outputs=outputs, name="transformer_text")


def _lstm_text(_: int) -> Any:
    import keras
    from keras import layers

    max_features, maxlen = 20000, 200
    inputs = keras.Input(shape=(maxlen,), dtype="int32")
    x = layers.Embedding(max_features, 128)(inputs)
    x = layers.Bidirectional(layers.LSTM(64, return_sequences=True))(x)
    x = layers.Bidirectional(layers.LSTM(64))(x)
    outputs = layers.Dense(1, activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="lstm_text")


def _conv1d_text(_: int) -> Any:
    import keras
    from keras import layers

    max_features, embedding_dim, sequence_length = 20000, 128, 500
    inputs = keras.Input(shape=(sequence_length,), dtype="int32")
    x = layers.Embedding(max_features, embedding_dim)(inputs)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3)(x)
    x = layers.Conv1D(128, 7, padding="valid", activation="relu", strides=3)(x)
    x = layers.GlobalMaxPooling1D()(x)
    x = layers.Dense(128, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    predictions = layers.Dense(1, activation="sigmoid", name="predictions")(x)
    return keras.Model(inputs, predictions, name="conv1d_text")


_ENTRIES = [
    ZooModel("mobilenetv2", "MobileNetV2", "image", _app("MobileNetV2"), "tf"),
    ZooModel("mobilenetv3small", "MobileNetV3Small", "image", _app("MobileNetV3Small")),
    ZooModel("mobilenetv3large", "MobileNetV3Large", "image", _app("MobileNetV3Large")),
    ZooModel("efficientnetb0", "EfficientNetB0", "image", _app("EfficientNetB0")),
    ZooModel("efficientnetv2b0", "EfficientNetV2B0", "image", _app("EfficientNetV2B0")),
    ZooModel("resnet50", "ResNet50", "image", _app("ResNet50"), "caffe"),
    ZooModel("densenet121", "DenseNet121", "image", _app("DenseNet121"), "torch"),
    ZooModel("convnexttiny", "ConvNeXtTiny", "image", _app("ConvNeXtTiny")),
    ZooModel("vit_small", "small ViT (keras-io)", "image", _vit, custom_objects=True),
    ZooModel("transformer_text", "Transformer text encoder (keras-io, 200 tokens)", "text",
             _transformer_text, custom_objects=True),
    ZooModel("lstm_text", "bidirectional LSTM text (keras-io, 200 tokens)", "text", _lstm_text),
    ZooModel("conv1d_text", "Conv1D text (keras-io, 500 tokens)", "text", _conv1d_text),
    ZooModel("fashion_cnn", "recipe image_cnn: Fashion-MNIST CNN (28x28x1)", "recipe",
             max_accuracy_drop=1.0),
    ZooModel("breast_cancer_mlp", "recipe tabular_mlp: breast-cancer MLP (30 features)",
             "recipe", max_accuracy_drop=1.0),
    ZooModel("text_lstm", "recipe text_lstm: SMS text LSTM (100 tokens)", "recipe",
             max_accuracy_drop=1.0),
]
MODELS: dict[str, ZooModel] = {m.name: m for m in _ENTRIES}
#: the 12 architectures the targets are stated for (the recipes are extra rows)
ZOO: tuple[str, ...] = tuple(m.name for m in _ENTRIES if m.family != "recipe")
#: ``--quick``: tiny models (MobileNetV3Small at ``--size`` 32, the Conv1D text model, the CNN)
QUICK: tuple[str, ...] = ("mobilenetv3small", "conv1d_text", "fashion_cnn")


def _randomize(model: Any, seed: int = 0) -> None:
    """Seeded random BatchNorm statistics, betas/gammas and biases."""
    rng = np.random.default_rng(seed)
    for w in model.weights:
        if w.path.endswith(("bias", "moving_mean", "beta")):
            w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
        elif w.path.endswith(("moving_variance", "gamma")) and w.shape:
            w.assign(rng.uniform(0.8, 1.2, w.shape).astype("float32"))


def _images(n: int, size: int, mode: str | None) -> tuple[np.ndarray, str]:
    """``n`` calibration images (n, size, size, 3) and what they are."""
    if (FASHION / "train-images-idx3-ubyte.gz").exists():
        import tensorflow as tf

        from edgekit.inputs.datasets import load_image_data

        x = load_image_data(FASHION).x_train[:n].reshape(-1, 28, 28, 1).astype("float32")
        pixels = tf.image.resize(np.repeat(x, 3, axis=-1), (size, size)).numpy()
        what = f"{n} Fashion-MNIST training images resized to {size}x{size}, grey to RGB"
    else:
        pixels = np.random.default_rng(0).uniform(0, 255, (n, size, size, 3)).astype("float32")
        what = f"{n} seeded uniform-noise images {size}x{size} (Fashion-MNIST not found)"
    if mode is None:
        return pixels, what + ", 0..255 (the model rescales)"
    from keras.applications import imagenet_utils

    out = imagenet_utils.preprocess_input(pixels.copy(), mode=mode)
    return np.asarray(out, np.float32), what + f", preprocess_input mode {mode!r}"


def _recipe(name: str, work: Path) -> tuple[Path, Path, str]:
    """(.keras file, calibration data, description) of a recipe."""
    if name == "fashion_cnn":
        cal = ROOT / "calibration_data" / "fashion_mnist.npz"
        return ROOT / "models" / "fashion_cnn.keras", cal, "calibration_data/fashion_mnist.npz"
    if name == "breast_cancer_mlp":
        cal = ROOT / "calibration_data" / "breast_cancer.npz"
        return (ROOT / "models" / "breast_cancer_mlp.keras", cal,
                "calibration_data/breast_cancer.npz")
    if not SMS.exists():
        raise FileNotFoundError(f"{SMS} is needed to train the text LSTM recipe")
    out = work / "model.keras"
    if not out.exists():
        from edgekit.recipes import TrainConfig, train_recipe

        train_recipe("text_lstm", TrainConfig(epochs=2, verbose=0), data=SMS, output=out,
                     force=True)
    return out, SMS, "the SMS Spam Collection table (../shared/data, tokenised by the model)"


def prepare(name: str, size: int, work: Path, samples: int) -> dict[str, Any]:
    """Build ``name`` into ``work/model.keras`` (recipes: the shipped file) and its
    calibration data ``work/calibration.npz`` (recipes: their own data); returns the paths,
    the calibration description and the parameter count."""
    import keras

    from edgekit.convert import load_source, synthetic_inputs

    entry = MODELS[name]
    work.mkdir(parents=True, exist_ok=True)
    if entry.build is None:
        keras_path, cal_path, what = _recipe(name, work)
        model = keras.models.load_model(keras_path, compile=False)
    else:
        keras.utils.set_random_seed(0)
        model = entry.build(size)
        _randomize(model)
        keras_path, cal_path = work / "model.keras", work / "calibration.npz"
        if entry.family == "image":
            x, what = _images(samples, size, entry.preprocess)
        else:
            x = next(iter(synthetic_inputs(load_source(model), samples, seed=1).values()))
            what = f"{samples} seeded random token ids in the Embedding range"
        model.save(keras_path)
        np.savez(cal_path, x=x)
    return {"keras": str(keras_path), "calibration": str(cal_path), "calibration_desc": what,
            "params": int(model.count_params()), "title": entry.title}
