"""The coverage zoo: one representative model per common Keras architecture family.

Shared by ``tests/test_coverage.py`` (small inputs, CI) and ``benchmarks/coverage.py``
(realistic sizes). Every builder takes ``size`` (image side or sequence length) and
``classes`` and returns a fresh Keras model with seeded, non-trivial weights; nothing is
downloaded (``weights=None``). ``CUSTOM_LAYER_SOURCE`` is a user module with a registered
custom layer, written next to the model so that the CLI has to import it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ZooModel", "ZOO", "build", "calibrate_batchnorm", "CUSTOM_LAYER_SOURCE",
           "MIN_SIZE"]


@dataclass(frozen=True)
class ZooModel:
    """A zoo entry: ``make(size, classes)`` builds it; ``small``: its CI input size."""

    name: str
    family: str
    make: Callable[[int, int], Any]
    small: int
    image: bool = True


def _app(fn_name: str, **kw: Any) -> Callable[[int, int], Any]:
    def make(size: int, classes: int) -> Any:
        import keras

        fn = getattr(keras.applications, fn_name)
        return fn(weights=None, input_shape=(size, size, 3), classes=classes, **kw)

    return make


def _randomize_biases(model: Any) -> Any:
    """Non-zero biases and BatchNorm statistics (fresh ones are 0/1, which converters fold)."""
    rng = np.random.default_rng(0)
    for w in model.weights:
        path = w.path
        if path.endswith(("bias", "moving_mean", "beta")):
            w.assign(rng.normal(0, 0.05, w.shape).astype("float32"))
        elif path.endswith(("moving_variance", "gamma")) and w.shape:
            w.assign(rng.uniform(0.8, 1.2, w.shape).astype("float32"))
    return model


def _transformer(size: int, classes: int) -> Any:
    import keras
    from keras import layers

    tokens = keras.Input((size,), dtype="int32", name="tokens")
    x = layers.Embedding(500, 32)(tokens)
    attn = layers.MultiHeadAttention(num_heads=2, key_dim=16)(x, x)
    x = layers.LayerNormalization(epsilon=1e-6)(x + attn)
    ff = layers.Dense(32)(layers.Dense(64, activation="gelu")(x))
    x = layers.LayerNormalization(epsilon=1e-6)(x + ff)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(tokens, layers.Dense(classes, activation="softmax")(x), name="transformer")


def _rnn(kind: str) -> Callable[[int, int], Any]:
    def make(size: int, classes: int) -> Any:
        import keras
        from keras import layers

        seq = keras.Input((size, 6), name="sequence")
        if kind == "lstm":
            x = layers.LSTM(16, use_cudnn=False)(seq)
        elif kind == "gru":
            x = layers.GRU(16, use_cudnn=False)(seq)
        elif kind == "bidirectional":
            x = layers.Bidirectional(layers.LSTM(12, use_cudnn=False))(seq)
        else:  # stacked
            x = layers.LSTM(16, return_sequences=True, use_cudnn=False)(seq)
            x = layers.GRU(12, return_sequences=True, use_cudnn=False)(x)
            x = layers.LSTM(8, use_cudnn=False)(x)
        out = layers.Dense(classes, activation="softmax")(x)
        return keras.Model(seq, out, name=kind)

    return make


def _time_distributed(size: int, classes: int) -> Any:
    import keras
    from keras import layers

    frames = keras.Input((4, size, 5), name="frames")
    x = layers.TimeDistributed(layers.GRU(8, use_cudnn=False))(frames)
    x = layers.TimeDistributed(layers.Dense(8, activation="relu"))(x)
    out = layers.Dense(classes, activation="softmax")(layers.Flatten()(x))
    return keras.Model(frames, out, name="time_distributed")


def _conv1d_text(size: int, classes: int) -> Any:
    """Dynamic sequence length; three Conv1D(5) + pool(2) blocks need >= 46 tokens."""
    import keras
    from keras import layers

    tokens = keras.Input((None,), dtype="int32", name="tokens")
    x = layers.Embedding(1000, 16)(tokens)
    for _ in range(3):
        x = layers.MaxPooling1D(2)(layers.Conv1D(16, 5, activation="relu")(x))
    x = layers.GlobalMaxPooling1D()(x)
    return keras.Model(tokens, layers.Dense(classes, activation="softmax")(x), name="conv1d_text")


def _preprocessing(size: int, classes: int) -> Any:
    import keras
    from keras import layers

    rng = np.random.default_rng(0)
    norm = layers.Normalization()
    norm.adapt(rng.uniform(0, 1, (64, 8, 8, 3)).astype("float32"))
    image = keras.Input((size, size, 3), name="image")
    x = layers.Resizing(8, 8)(image)
    x = layers.Rescaling(1 / 255.0)(x)
    x = norm(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(classes, activation="softmax")(x), name="preprocessing")


def _multi_input(size: int, classes: int) -> Any:
    import keras
    from keras import layers

    image = keras.Input((size, size, 3), name="image")
    meta = keras.Input((5,), name="meta")
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, activation="relu")(image))
    x = layers.Concatenate()([x, layers.Dense(8, activation="relu")(meta)])
    return keras.Model([image, meta], layers.Dense(classes, activation="softmax")(x),
                       name="multi_input")


def _multi_output(size: int, classes: int) -> Any:
    import keras
    from keras import layers

    image = keras.Input((size, size, 3), name="image")
    x = layers.GlobalAveragePooling2D()(layers.Conv2D(8, 3, activation="relu")(image))
    probs = layers.Dense(classes, activation="softmax", name="probs")(x)
    box = layers.Dense(4, name="box")(x)
    return keras.Model(image, [probs, box], name="multi_output")


CUSTOM_LAYER_SOURCE = '''
import keras


@keras.saving.register_keras_serializable(package="zoo")
class ScaledSwish(keras.layers.Layer):
    """x * sigmoid(beta * x) with a learned beta: a custom layer Keras cannot know."""

    def build(self, input_shape):
        self.beta = self.add_weight(shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * keras.ops.sigmoid(self.beta * x)
'''


def _custom_layer(size: int, classes: int) -> Any:
    """Needs the module from :data:`CUSTOM_LAYER_SOURCE` imported (see :func:`build`)."""
    import keras
    from keras import layers

    cls = keras.saving.get_registered_object("zoo>ScaledSwish")
    image = keras.Input((size, size, 3), name="image")
    x = cls()(layers.Conv2D(8, 3)(image))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(image, layers.Dense(classes, activation="softmax")(x), name="custom_layer")


ZOO: list[ZooModel] = [
    ZooModel("mobilenet_v1", "MobileNet", _app("MobileNet", alpha=0.25), 32),
    ZooModel("mobilenet_v2", "MobileNetV2", _app("MobileNetV2", alpha=0.35), 32),
    ZooModel("mobilenet_v3", "MobileNetV3Small", _app("MobileNetV3Small", alpha=0.75), 32),
    ZooModel("efficientnet_b0", "EfficientNetB0", _app("EfficientNetB0"), 32),
    ZooModel("efficientnet_v2_b0", "EfficientNetV2B0", _app("EfficientNetV2B0"), 32),
    ZooModel("resnet50", "ResNet50", _app("ResNet50"), 32),
    ZooModel("resnet50_v2", "ResNet50V2", _app("ResNet50V2"), 32),
    ZooModel("densenet121", "DenseNet121", _app("DenseNet121"), 32),
    ZooModel("nasnet_mobile", "NASNetMobile", _app("NASNetMobile"), 32),
    ZooModel("xception", "Xception", _app("Xception"), 71),
    ZooModel("inception_v3", "InceptionV3", _app("InceptionV3"), 75),
    ZooModel("convnext_tiny", "ConvNeXtTiny", _app("ConvNeXtTiny"), 32),
    ZooModel("vgg16", "VGG16", _app("VGG16"), 32),
    ZooModel("transformer", "Transformer encoder", _transformer, 16, image=False),
    ZooModel("lstm", "LSTM", _rnn("lstm"), 10, image=False),
    ZooModel("gru", "GRU", _rnn("gru"), 10, image=False),
    ZooModel("bidirectional", "Bidirectional LSTM", _rnn("bidirectional"), 10, image=False),
    ZooModel("stacked_rnn", "stacked LSTM/GRU", _rnn("stacked"), 10, image=False),
    ZooModel("conv1d_text", "Conv1D text", _conv1d_text, 0, image=False),
    ZooModel("time_distributed", "TimeDistributed(GRU)", _time_distributed, 6, image=False),
    ZooModel("preprocessing", "Resizing/Rescaling/Normalization", _preprocessing, 16),
    ZooModel("multi_input", "multi-input", _multi_input, 16),
    ZooModel("multi_output", "multi-output", _multi_output, 16),
    ZooModel("custom_layer", "registered custom layer", _custom_layer, 16),
]

MIN_SIZE = {"xception": 71, "inception_v3": 75}


def calibrate_batchnorm(model: Any, x: np.ndarray | None = None, samples: int = 64) -> Any:
    """Set every BatchNormalization's moving statistics to those of one batch (``x``, default
    seeded synthetic inputs), as training would. Fresh statistics (mean 0, variance 1) let
    activations grow layer after layer in a deep random network, until every input gives the
    same output."""
    import keras

    bns = [lay for lay in model._flatten_layers()
           if isinstance(lay, keras.layers.BatchNormalization)]
    if not bns:
        return model
    if x is None:
        from edgekit.convert import load_source, synthetic_inputs

        source = load_source(model)
        feeds = synthetic_inputs(source, samples, seed=1)
        xs = [feeds[s.name] for s in source.inputs]
        x_in: Any = xs if len(xs) > 1 else xs[0]
    else:
        x_in = x
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.momentum = 0.0
    model(x_in, training=True)
    for bn, m in zip(bns, momenta, strict=True):
        bn.momentum = m
    return _unit_logits(model, x_in)


def _unit_logits(model: Any, x: Any) -> Any:
    """Scale a keras.applications head (``predictions`` Dense) so its logits have unit spread
    on ``x``, like a trained, calibrated classifier. Random heads on deep features give
    logits in the tens: a saturated softmax, where float32 rounding alone moves a probability
    by more than 1e-4."""
    import keras

    try:
        head = model.get_layer("predictions")
    except ValueError:
        return model
    if not isinstance(head, keras.layers.Dense):
        return model
    features = keras.Model(model.inputs, head.input)(x, training=False)
    kernel, bias = head.get_weights()
    logits = np.asarray(features) @ kernel + bias
    head.set_weights([kernel / max(float(logits.std()), 1e-6), bias * 0.0])
    return model


def build(entry: ZooModel, size: int | None = None, classes: int = 10) -> Any:
    """A fresh, seeded instance of ``entry`` at ``size`` (default: its small CI size), with
    non-zero biases and BatchNorm statistics calibrated on synthetic inputs."""
    import keras

    keras.utils.set_random_seed(0)
    side = entry.small if size is None else max(size, MIN_SIZE.get(entry.name, 0))
    return calibrate_batchnorm(_randomize_biases(entry.make(side, classes)))
