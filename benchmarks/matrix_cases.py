"""The cases of the public conversion matrix (issue #23): other projects' test lists as models.

Three suites, each case a small Keras 3 model built from nothing (``weights=None``, nothing is
downloaded) by ``build()``:

* ``applications``: the 41 ``keras.applications`` architectures of Keras' own applications
  tests (``MODEL_LIST`` of ``keras/src/applications/applications_test.py``), at the smallest
  input side each accepts (32 px; Xception 71, InceptionV3 and InceptionResNetV2 75), 1000
  classes, BatchNorm statistics set from one batch (``tests/_coverage_models.py``: random deep
  networks otherwise give the same output for every input). ``slow`` marks those over ~40 M
  parameters.
* ``keras_onnx_test``: every model of Keras' ``keras/src/export/onnx_test.py`` (including the
  Bidirectional LSTM that Keras skips on TensorFlow), with the same inputs.
* ``tf2onnx_layers``: a Keras 3 port of tf2onnx's Keras layer tests
  (``tests/keras2onnx_unit_tests/test_layers.py``, 136 test functions): one case per test
  function, a few more where the function checks distinct configurations, named
  ``<test name>[config]``. ``tf.*`` inside ``Lambda`` stays ``tf.*`` (Keras 3 runs it on the
  TensorFlow backend); ``keras.backend`` functions became ``keras.ops``. ``NOT_PORTED`` names
  the functions left out and why.

The Keras modules are bound on first use (:func:`build`), so the case list itself imports
nothing heavy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Case", "CASES", "NOT_PORTED", "SUITES", "TF2ONNX_TESTS", "build", "samples"]

SUITES = ("applications", "keras_onnx_test", "tf2onnx_layers")
#: test functions of tf2onnx's test_layers.py (commit 6537fcb2 of onnx/tensorflow-onnx)
TF2ONNX_TESTS = 136

# bound by _bind() on first build: the builders below read them when they run
keras: Any = None
L: Any = None  # keras.layers
ops: Any = None  # keras.ops
tf: Any = None


def _bind() -> None:
    global keras, L, ops, tf
    import keras as keras_module
    import tensorflow as tf_module

    keras, L, ops, tf = keras_module, keras_module.layers, keras_module.ops, tf_module


@dataclass(frozen=True)
class Case:
    """One model of the matrix.

    Attributes:
        name: unique, ``<suite test>[config]``.
        suite: one of :data:`SUITES`.
        source: the upstream test (or ``keras.applications`` function) it reproduces.
        make: builds the model (a built, callable Keras model).
        sample: the reference inputs as the model is called (an array, a list, tuple or dict
            of arrays); default: from the model's inputs (batch 3, dynamic dimensions 8).
        shapes: further input shapes to check both exported files on (dynamic dimensions).
        spread: call the model as ``model(*sample)`` (several positional inputs).
        data: give edgekit the sample as validation and calibration data (inputs whose
            values must be valid indices; default: edgekit's synthetic inputs).
        keras_export: keyword arguments of Keras' ``model.export`` for this case.
        note: what the port changed.
        quick: part of ``--quick``.
        slow: a large model (a longer timeout; always alone in its process).
    """

    name: str
    suite: str
    source: str
    make: Callable[[], Any]
    sample: Callable[[], Any] | None = None
    shapes: tuple[tuple[tuple[int, ...], ...], ...] = ()
    spread: bool = False
    data: bool = False
    keras_export: Callable[[], dict[str, Any]] | None = None
    note: str = ""
    quick: bool = False
    slow: bool = False
    tags: tuple[str, ...] = field(default=())


def build(case: Case) -> Any:
    """The case's model, built with seeded weights."""
    _bind()
    keras.utils.set_random_seed(0)
    return case.make()


def _rand(shape: tuple[int, ...], dtype: str = "float32", high: int = 10) -> np.ndarray:
    rng = np.random.default_rng(sum(shape) + len(shape))
    if dtype.startswith("int"):
        return rng.integers(0, high, shape).astype(dtype)
    if dtype == "bool":
        return rng.integers(0, 2, shape).astype(bool)
    return rng.normal(size=shape).astype(dtype)


def _arr(*shapes: tuple[int, ...], dtypes: tuple[str, ...] = (), high: int = 10,
         scale: float = 1.0) -> Callable[[], Any]:
    """A sample maker: one array per shape (a list when several), ``dtypes`` per input."""
    def make() -> Any:
        kinds = dtypes or ("float32",) * len(shapes)
        arrays = [_rand(s, d, high) * (scale if d == "float32" else 1)
                  for s, d in zip(shapes, kinds, strict=True)]
        return arrays[0] if len(arrays) == 1 else arrays

    return make


def samples(case: Case, model: Any) -> list[Any]:
    """The case's reference input structures: its sample, then one per extra shape."""
    if case.sample is not None:
        first = case.sample()
    else:
        specs = [(tuple(3 if d is None and i == 0 else 8 if d is None else d
                        for i, d in enumerate(t.shape)), str(t.dtype)) for t in model.inputs]
        arrays = [_rand(s, d) for s, d in specs]
        first = arrays[0] if len(arrays) == 1 else arrays
    out = [first]
    for shapes in case.shapes:
        arrays = [_rand(s) for s in shapes]
        out.append(arrays[0] if len(arrays) == 1 else arrays)
    return out


# ---------------------------------------------------------------------------------------------
# model helpers
# ---------------------------------------------------------------------------------------------
def _seq(shape: tuple[int | None, ...], *layers: Any, dtype: str = "float32") -> Any:
    return keras.Sequential([keras.Input(shape, dtype=dtype), *layers])


def _lam(fn: Callable[[Any], Any], shape: tuple[int | None, ...], dtype: str = "float32",
         **kw: Any) -> Any:
    return _seq(shape, L.Lambda(fn, **kw), dtype=dtype)


def _fn(shapes: list[tuple[int | None, ...]], body: Callable[[list[Any]], Any],
        dtypes: list[str] | None = None, names: list[str] | None = None) -> Any:
    """A functional model over several inputs: ``body(inputs) -> outputs``."""
    dtypes = dtypes or ["float32"] * len(shapes)
    ins = [keras.Input(s, dtype=d, name=None if names is None else names[i])
           for i, (s, d) in enumerate(zip(shapes, dtypes, strict=True))]
    return keras.Model(ins, body(ins))


def _lamn(shapes: list[tuple[int | None, ...]], fn: Callable[[Any], Any],
          dtypes: list[str] | None = None) -> Any:
    return _fn(shapes, lambda xs: L.Lambda(fn)(xs), dtypes)


def _one(layer: Callable[[], Any], shape: tuple[int | None, ...]) -> Callable[[], Any]:
    return lambda: _seq(shape, layer())


# ---------------------------------------------------------------------------------------------
# keras.applications (MODEL_LIST of Keras' applications_test.py)
# ---------------------------------------------------------------------------------------------
_APPS = ["VGG16", "VGG19", "Xception", "InceptionV3", "InceptionResNetV2", "MobileNet",
         "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0",
         "EfficientNetB1", "EfficientNetB2", "EfficientNetB3", "EfficientNetB4",
         "EfficientNetB5", "EfficientNetB6", "EfficientNetB7", "EfficientNetV2B0",
         "EfficientNetV2B1", "EfficientNetV2B2", "EfficientNetV2B3", "EfficientNetV2S",
         "EfficientNetV2M", "EfficientNetV2L", "DenseNet121", "DenseNet169", "DenseNet201",
         "ConvNeXtTiny", "ConvNeXtSmall", "ConvNeXtBase", "ConvNeXtLarge", "ConvNeXtXLarge",
         "NASNetMobile", "NASNetLarge", "ResNet50", "ResNet101", "ResNet152", "ResNet50V2",
         "ResNet101V2", "ResNet152V2"]
#: smallest input side keras.applications accepts (imagenet_utils min_size), default 32
APP_SIZES = {"Xception": 71, "InceptionV3": 75, "InceptionResNetV2": 75}
#: over ~40 M parameters at 1000 classes (VGG16 at 32 px has 38 M)
_SLOW_APPS = {"VGG19", "InceptionResNetV2", "EfficientNetB6", "EfficientNetB7",
              "EfficientNetV2M", "EfficientNetV2L", "ConvNeXtSmall", "ConvNeXtBase",
              "ConvNeXtLarge", "ConvNeXtXLarge", "NASNetLarge", "ResNet101", "ResNet152",
              "ResNet101V2", "ResNet152V2"}


def _app(name: str) -> Callable[[], Any]:
    def make() -> Any:
        from _coverage_models import calibrate_batchnorm

        side = APP_SIZES.get(name, 32)
        fn = getattr(keras.applications, name)
        return calibrate_batchnorm(fn(weights=None, input_shape=(side, side, 3)))

    return make


# ---------------------------------------------------------------------------------------------
# Keras' keras/src/export/onnx_test.py
# ---------------------------------------------------------------------------------------------
def _onnx_test_layers() -> list[Any]:
    return [L.Dense(10, activation="relu"), L.BatchNormalization(),
            L.Dense(1, activation="sigmoid")]


def _standard(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        if kind == "sequential":
            model = keras.Sequential(_onnx_test_layers())
        elif kind == "functional":
            x = keras.Input((10,))
            y = x
            for layer in _onnx_test_layers():
                y = layer(y)
            model = keras.Model(x, y)
        elif kind == "subclass":
            model = _custom_model(_onnx_test_layers())
        else:  # the Bidirectional LSTM of keras-team/keras#21390
            x = keras.Input((4, 10))
            y = L.Bidirectional(L.LSTM(10, kernel_initializer="he_normal",
                                       return_sequences=True), merge_mode="sum")(x)
            y = L.Bidirectional(L.LSTM(10, kernel_initializer="he_normal",
                                       return_sequences=True), merge_mode="concat")(y)
            return keras.Model(x, y)
        model(_rand((3, 10)))
        return model

    return make


def _custom_model(layer_list: list[Any]) -> Any:
    class CustomModel(keras.Model):
        def __init__(self, layers: list[Any]) -> None:
            super().__init__()
            self.layer_list = layers

        def call(self, inputs: Any) -> Any:
            out = inputs
            for layer in self.layer_list:
                out = layer(out)
            return out

    return CustomModel(layer_list)


def _structure(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        class TupleModel(keras.Model):
            def call(self, inputs: Any) -> Any:
                x, y = inputs
                return ops.add(x, y)

        class ArrayModel(keras.Model):
            def call(self, inputs: Any) -> Any:
                return ops.add(inputs[0], inputs[1])

        class DictModel(keras.Model):
            def call(self, inputs: Any) -> Any:
                return ops.add(inputs["x"], inputs["y"])

        classes: dict[str, Any] = {"tuple": TupleModel, "array": ArrayModel,
                                   "dict": DictModel}
        model = classes[kind]()
        model(_structure_sample(kind)())
        return model

    return make


def _structure_sample(kind: str) -> Callable[[], Any]:
    def sample() -> Any:
        x = _rand((3, 10))
        if kind == "tuple":
            return (x, x * 2)
        if kind == "array":
            return [x, x * 2]
        return {"x": x, "y": x * 2}

    return sample


def _two_inputs() -> Any:
    class TwoInputsModel(keras.Model):
        def call(self, x: Any, y: Any) -> Any:
            return x + y

        def build(self, y_shape: Any, x_shape: Any) -> None:
            self.built = True

    model = TwoInputsModel()
    model(_rand((3, 10)), _rand((3, 10)))
    return model


def _dynamic(kind: str, shape: tuple[int | None, ...]) -> Callable[[], Any]:
    def make() -> Any:
        layer_list = [L.Conv2D(16, 3, padding="same", activation="relu"),
                      L.GlobalAveragePooling2D(), L.Dense(10, activation="softmax")]
        if kind == "sequential":
            model = keras.Sequential([L.Input(shape=shape), *layer_list])
        else:
            x = y = L.Input(shape=shape)
            for layer in layer_list:
                y = layer(y)
            model = keras.Model(x, y)
        model(_rand((1, 32, 32, 3) if shape[0] else (1, 28, 28, 3)))
        return model

    return make


def _multi_input_dynamic() -> Any:
    text = L.Input(shape=(None, 64), name="text_input")
    image = L.Input(shape=(None, None, 3), name="image_input")
    t = L.GlobalAveragePooling1D()(L.Dense(128, activation="relu")(text))
    i = L.GlobalAveragePooling2D()(L.Conv2D(32, 1, activation="relu")(image))
    out = L.Dense(5, activation="softmax")(L.Concatenate()([t, i]))
    return keras.Model([text, image], out)


def _input_names_export() -> dict[str, Any]:
    return {"input_signature": [keras.InputSpec(name="custom_input", shape=(3, 10),
                                                dtype="float32")]}


_KERAS_ONNX: list[Case] = [
    *[Case(f"standard_model_export[{k}]", "keras_onnx_test",
           "ExportONNXTest.test_standard_model_export", _standard(k),
           sample=_arr((3, 4, 10)) if k == "lstm" else _arr((3, 10)),
           shapes=(((6, 4, 10),),) if k == "lstm" else (((6, 10),),),
           quick=k in ("subclass", "lstm"),
           note="Keras skips this on TensorFlow ('Bidirectional LSTM is unsupported')"
           if k == "lstm" else "")
      for k in ("sequential", "functional", "subclass", "lstm")],
    *[Case(f"model_with_input_structure[{k}]", "keras_onnx_test",
           "ExportONNXTest.test_model_with_input_structure", _structure(k),
           sample=_structure_sample(k))
      for k in ("tuple", "array", "dict")],
    Case("model_with_multiple_inputs", "keras_onnx_test",
         "ExportONNXTest.test_model_with_multiple_inputs", _two_inputs,
         sample=_arr((3, 10), (3, 10)), spread=True),
    *[Case(f"export_with_opset_version[{v}]", "keras_onnx_test",
           "ExportONNXTest.test_export_with_opset_version", _standard("sequential"),
           sample=_arr((3, 10)),
           keras_export=(lambda: {"opset_version": 17}) if v == "17" else None,
           note="Keras' export gets opset_version=17; edgekit's default opset is 17")
      for v in ("None", "17")],
    Case("export_with_input_names", "keras_onnx_test",
         "ExportONNXTest.test_export_with_input_names", _standard("sequential"),
         sample=_arr((3, 10)), keras_export=_input_names_export,
         note="Keras' export gets input_signature=[InputSpec(name='custom_input')]; edgekit "
         "runs with default options (its --input-spec is the equivalent)"),
    *[Case(f"dynamic_shapes_export[{k},{d}]", "keras_onnx_test",
           "ExportONNXTest.test_dynamic_shapes_export",
           _dynamic(k, (32, 32, 3) if d == "batch_only" else (None, None, 3)),
           sample=_arr((1, 32, 32, 3) if d == "batch_only" else (1, 28, 28, 3)),
           shapes=(((4, 32, 32, 3),),) if d == "batch_only"
           else (((1, 64, 64, 3),), ((1, 128, 96, 3),)))
      for k in ("sequential", "functional") for d in ("batch_only", "height_width")],
    Case("multi_input_dynamic_shapes", "keras_onnx_test",
         "ExportONNXTest.test_multi_input_dynamic_shapes", _multi_input_dynamic,
         sample=_arr((1, 20, 64), (1, 32, 32, 3)),
         shapes=(((2, 15, 64), (2, 64, 64, 3)), ((1, 25, 64), (1, 48, 32, 3)))),
]


# ---------------------------------------------------------------------------------------------
# tf2onnx's tests/keras2onnx_unit_tests/test_layers.py, ported to Keras 3
# ---------------------------------------------------------------------------------------------
def _t(test: str, config: str, make: Callable[[], Any], **kw: Any) -> Case:
    name = f"{test}[{config}]" if config else test
    return Case(name, "tf2onnx_layers", f"test_layers.py::{test}", make, **kw)


def _tf_conv(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        rng = np.random.default_rng(0)
        if kind == "conv2d":
            k = tf.constant(rng.normal(size=(1, 2, 3, 5)).astype("float32"))
            return _lam(lambda x: tf.nn.conv2d(x, k, strides=[1, 1, 2, 1], padding="SAME"),
                        (10, 14, 3))
        if kind == "conv1d":
            k = tf.constant(rng.normal(size=(1, 3, 5)).astype("float32"))
            return _lam(lambda x: tf.nn.conv1d(x, k, stride=2, padding="SAME"), (10, 3))
        k = tf.constant(rng.normal(size=(1, 2, 3, 5, 2)).astype("float32"))
        return _lam(lambda x: tf.nn.conv3d(x, k, strides=[1, 1, 2, 1, 1], padding="SAME"),
                    (10, 14, 3, 5))

    return make


def _tf_pool(op: str, padding: str, dims: int) -> Callable[[], Any]:
    def make() -> Any:
        if dims == 2:
            fn = tf.nn.avg_pool if op == "avg" else tf.nn.max_pool
            return _lam(lambda x: fn(x, 2, strides=[1, 1, 2, 1], padding=padding), (10, 12, 3))
        fn = tf.nn.avg_pool3d if op == "avg" else tf.nn.max_pool3d
        return _lam(lambda x: fn(x, 2, strides=[1, 1, 2], padding=padding), (10, 12, 3, 4))

    return make


def _batch_norm_consts(nchw: bool) -> Callable[[], Any]:
    def make() -> Any:
        if nchw:
            c = [tf.constant(v) for v in ([0.1, 0.2], [0.9, 1.0], [0.2, 0.3], [0.5, 0.4])]
        else:
            c = [tf.constant(v) for v in ([0.1, 0.2, 0.3, 0.4], [0.9, 1.0, 1.0, 1.1],
                                          [0.2, 0.3, 0.4, 0.5], [0.5, 0.4, 0.3, 0.2])]
        fmt = "NCHW" if nchw else "NHWC"
        return _lam(lambda x: tf.compat.v1.nn.fused_batch_norm(
            x, c[3], c[2], c[0], c[1], 0.001, data_format=fmt, is_training=False)[0],
                    (2, 3, 4), output_shape=(2, 3, 4))

    return make


def _tf_rsqrt() -> Any:
    z = tf.constant([0.0] * 4)
    return _lam(lambda x: tf.nn.batch_normalization(x, z, tf.constant([1.0] * 4), z, z, 0.001),
                (2, 3, 4))


def _tf_pad(mode: str) -> Callable[[], Any]:
    return lambda: _lam(lambda x: tf.pad(x, tf.constant([[0, 0], [1, 3], [2, 4]]), mode=mode),
                        (5, 5))


def _tf_range_dynamic() -> Any:
    return _lamn([(5,), (1,)], lambda x: x[0] + tf.cast(
        tf.range(3, 18, tf.cast(x[1][0, 0], tf.int32)), tf.float32))


def _tf_reshape_dynamic() -> Any:
    return _lamn([(6,), (3,)], lambda x: tf.reshape(x[0][0], tf.cast(x[1][0], tf.int32)))


def _tf_slice_dynamic() -> Any:
    return _fn([(2, 3, 5), (4,)], lambda xs: L.Lambda(
        lambda x: tf.slice(x[0], tf.cast(x[1][0], tf.int32), [3, 1, 1, 2]))(xs),
        ["float32", "int32"], ["inputs", "begin"])


def _space_to_batch() -> Any:
    f = tf.constant(np.random.default_rng(0).random((3, 3, 2, 2)).astype("float32"))
    return _lam(lambda x: tf.nn.depthwise_conv2d(x, f, strides=(1, 1, 1, 1), padding="VALID",
                                                 dilations=(2, 2)), (8, 8, 2))


def _strided_dynamic_end(transpose_first: bool) -> Callable[[], Any]:
    def cut(x: Any) -> Any:
        return x[:, :-1, 1:tf.shape(x)[2] - 1, :]

    def make() -> Any:
        conv = L.Conv2DTranspose(8, (2, 5), strides=(1, 2) if transpose_first else (1, 1),
                                 use_bias=False, padding="valid" if transpose_first else "same")
        if transpose_first:
            return _seq((3, 4, 5), conv, L.Lambda(cut))
        return _seq((3, 4, 5), L.Lambda(cut), conv)

    return make


def _conv(layer: str, cin: int, cout: int, kernel: Any, strides: Any, size: tuple[int, ...],
          **kw: Any) -> Callable[[], Any]:
    """tf2onnx's conv_runner: one conv layer, no bias unless asked, channels last."""
    def make() -> Any:
        kw.setdefault("use_bias", False)
        first = kw.get("data_format") == "channels_first"
        shape = (cin, *size) if first else (*size, cin)
        return _seq(shape, getattr(L, layer)(cout, kernel, strides=strides, **kw))

    return make


def _merge(layer: str, *shapes: tuple[int, ...], **kw: Any) -> Callable[[], Any]:
    return lambda: _fn(list(shapes), lambda xs: getattr(L, layer)(**kw)(xs))


def _pool(layer: str, shape: tuple[int, ...], **kw: Any) -> Callable[[], Any]:
    def make() -> Any:
        cls = getattr(L, layer)
        return _seq(shape, cls(**kw) if layer.startswith("Global") else cls(2, **kw))

    return make


def _gelu() -> Any:
    def gelu(x: Any) -> Any:
        return x * 0.5 * (1.0 + tf.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * tf.pow(x, 3))))

    mi = keras.Input((20, 10), name="input")
    x = L.Dense(10, name="dense", trainable=False)(L.GlobalMaxPooling1D()(mi))
    return keras.Model(mi, L.Activation(gelu, name="dense_gelu")(x))


def _dot2(i: int) -> Callable[[], Any]:
    cfg = {1: ((2, 3, 5), (2, 3, 5), 1, True), 4: ((2, 7), (2, 7, 5), [1, 1], False)}[i]

    def make() -> Any:
        a = keras.Input(batch_shape=cfg[0], name="input1")
        b = keras.Input(batch_shape=cfg[1], name="input2")
        return keras.Model([a, b], L.Dot(axes=cfg[2], normalize=cfg[3])([a, b]))

    return make


def _batch_norm(axis: int, center: bool) -> Any:
    data = np.arange(1, 11, dtype="float32")
    return _seq((1, 2, 5), L.BatchNormalization(
        axis=axis, moving_mean_initializer=keras.initializers.Constant(float(np.mean(data))),
        moving_variance_initializer=keras.initializers.Constant(float(np.var(data))),
        beta_initializer="ones", center=center))


def _simple_rnn(state: bool) -> Callable[[], Any]:
    def make() -> Any:
        if not state:
            x = keras.Input((3, 1))
            return keras.Model(x, L.SimpleRNN(2, return_sequences=True)(x))
        x, s = keras.Input((1, 2)), keras.Input((10,))
        h, out_state = L.SimpleRNN(10, activation="relu", return_sequences=True,
                                   return_state=True)(x, initial_state=[s])
        return keras.Model([x, s], [L.Dense(2)(h), out_state])

    return make


def _gru_initial_state() -> Any:
    x, s = keras.Input((3, 1)), keras.Input((2,))
    return keras.Model([x, s], L.GRU(2, return_sequences=True)(x, initial_state=s))


def _lstm_pair(**kw: Any) -> Callable[[], Any]:
    """tf2onnx's LSTM tests: an LSTM layer and RNN(LSTMCell) side by side, with states."""
    def make() -> Any:
        x = keras.Input((3, 5))
        bias = kw.get("use_bias", True)
        a = L.LSTM(2, return_state=True, **kw)(x)
        b = L.RNN(L.LSTMCell(2, use_bias=bias), return_state=True,
                  return_sequences=kw.get("return_sequences", False))(x)
        return keras.Model(x, [*a, *b])

    return make


def _lstm_rev() -> Any:
    x = keras.Input((3, 5))
    return keras.Model(x, list(L.LSTM(2, return_state=True, go_backwards=True,
                                      return_sequences=True)(x)))


def _lstm_with_bias() -> Any:
    x = keras.Input((1, 1))
    a = L.LSTM(1, return_state=True, return_sequences=True)(x)
    b = L.RNN(L.LSTMCell(1), return_state=True, return_sequences=True)(x)
    model = keras.Model(x, [*a, *b])
    w = [np.array([[1, 2, 3, 4]]), np.array([[5, 6, 7, 8]]), np.array([1, 2, 3, 4])]
    model.set_weights([v.astype("float32") for v in w + w])
    return model


def _lstm_reshape() -> Any:
    x = keras.Input((3, 7))
    a = L.Reshape((3, 5))(L.LSTM(5, return_sequences=True)(x))
    b = L.Reshape((3, 5))(L.RNN(L.LSTMCell(5), return_sequences=True)(x))
    return keras.Model(x, [a, b])


def _lstm_initializer() -> Any:
    x = keras.Input((1, 2), name="inputs")
    h, c = keras.Input((5,), name="state_h"), keras.Input((5,), name="state_c")
    a = L.LSTM(5, activation="relu", return_sequences=True)(x, initial_state=[h, c])
    b = L.RNN(L.LSTMCell(5, activation="relu"), return_sequences=True)(x, initial_state=[h, c])
    return keras.Model([x, h, c], [L.Dense(2, activation="sigmoid")(a),
                                   L.Dense(2, activation="sigmoid")(b)])


def _lstm_stateful() -> Any:
    x = keras.Input(batch_shape=(1, None, 1))
    a = L.LSTM(2, return_sequences=True, stateful=True)(x)
    b = L.RNN(L.LSTMCell(2), return_sequences=True, stateful=True)(x)
    return keras.Model(x, [a, b])


def _rnn(kind: str) -> Any:
    return {"simple_rnn": L.SimpleRNN, "gru": L.GRU, "lstm": L.LSTM}[kind]


def _bidirectional(kind: str, seq: bool, merge: str | None) -> Callable[[], Any]:
    def make() -> Any:
        x = keras.Input((5, 10))
        y = L.Bidirectional(_rnn(kind)(7, return_sequences=seq), merge_mode=merge)(x)
        if merge is None:
            return keras.Model(x, y)
        return keras.Model(x, L.Activation("softmax")(L.Dense(5)(y)))

    return make


def _bidirectional_bias() -> Any:
    model = _seq((3, 5), L.Bidirectional(L.LSTM(4), name="bi"))
    bi = model.get_layer("bi")
    w = bi.get_weights()
    w[2] = np.random.default_rng(0).uniform(size=w[2].shape).astype("float32")
    w[5] = w[2]
    bi.set_weights(w)
    return model


def _bidirectional_states() -> Any:
    a, b = keras.Input((None, 5)), keras.Input((None, 5))
    states = L.Bidirectional(L.LSTM(2, return_state=True))(a)[1:]
    return keras.Model([a, b], L.Bidirectional(L.LSTM(2, return_sequences=True))(
        b, initial_state=states))


def _state_passing() -> Any:
    a, b = keras.Input((None, 5)), keras.Input((None, 5))
    states = L.GRU(2, return_state=True)(a)[1:]
    return keras.Model([a, b], L.GRU(2, return_sequences=True)(b, initial_state=states))


def _masked(kind: str, bidirectional: bool = False, mask_value: float = 0.0,
            bias: bool = False) -> Callable[[], Any]:
    def make() -> Any:
        rnn = _rnn(kind)(8, name="rnn")
        model = _seq((3, 5), L.Masking(mask_value=mask_value),
                     L.Bidirectional(rnn, name="bi") if bidirectional else rnn)
        if bias:
            layer = model.get_layer("bi" if bidirectional else "rnn")
            w = layer.get_weights()
            w[2] = np.random.default_rng(0).uniform(size=w[2].shape).astype("float32")
            if bidirectional:
                w[5] = w[2]
            layer.set_weights(w)
        return model

    return make


def _masked_sample(mask_value: float, row: str) -> Callable[[], Any]:
    def make() -> Any:
        x = np.random.default_rng(0).uniform(100, 999, (2, 3, 5)).astype("float32")
        if row == "tail":
            x[1, 1:, :] = mask_value
        elif row == "all":
            x[1] = mask_value
        return x

    return make


def _masking_custom() -> Any:
    class MyPoolingMask(L.Layer):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.supports_masking = True

        def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
            return None

        def call(self, inputs: Any, mask: Any = None) -> Any:
            if mask is None:
                return ops.mean(inputs, axis=-2)
            count = ops.sum(ops.cast(mask, inputs.dtype), axis=-1, keepdims=True)
            return ops.sum(inputs, axis=-2) / (count + keras.config.epsilon())

    return _seq((3, 5), L.Masking(mask_value=0.0), MyPoolingMask())


def _unrolled_stack(kind: str) -> Callable[[], Any]:
    def make() -> Any:
        cls = _rnn(kind)
        return _seq((3, 4), cls(128, return_sequences=True, unroll=True),
                    cls(256, return_sequences=True, unroll=True), cls(128, unroll=True))

    return make


def _shared_embed() -> Any:
    c, q = keras.Input((5,), dtype="int32"), keras.Input((7,), dtype="int32")
    emb = L.Embedding(10, 6, trainable=False, name="word_embedding_aa")
    return keras.Model([c, q], [L.Dropout(0.2)(emb(c)), L.Dropout(0.2)(emb(q))])


def _recursive(shared: bool) -> Any:
    def sub(act: str | None) -> Any:
        x = keras.Input((3,))
        y = L.Dense(3)(x)
        return keras.Model(x, L.Activation(act)(y) if act else y)

    a, b = keras.Input((3,)), keras.Input((3,))
    if not shared:
        return keras.Model([a, b], L.Add()([sub(None)(a), sub(None)(b)]))
    m1 = sub("sigmoid")
    x2 = keras.Input((3,))
    m2 = keras.Model(x2, L.Activation("tanh")(m1(x2)))
    left = m1(m1(L.Activation("tanh")(a)))
    return keras.Model([a, b], L.Add()([left, m2(L.Activation("sigmoid")(b))]))


def _conv_bn(x: Any, filters: int, kernel: int, relu: bool = False, strides: int = 1,
             name: str = "") -> Any:
    if strides > 1:
        x = L.ZeroPadding2D(((0, 1), (0, 1)))(x)
    x = L.Conv2D(filters, kernel, strides=strides, padding="same" if strides == 1 else "valid",
                 use_bias=False, name=f"{name}conv" if name else None)(x)
    x = L.BatchNormalization(name=f"{name}bnorm" if name else None)(x)
    return L.ReLU()(x) if relu else x


def _shared_model_2() -> Any:
    inner = keras.Input((3, 320, 320), name="input_1")
    backbone = keras.Model(inner, _conv_bn(inner, 16, 3), name="backbone")
    x = keras.Input((3, 320, 320), name="input")
    return keras.Model(x, _conv_bn(backbone(x), 16, 3))


def _shared_model_3() -> Any:
    def bottleneck(x: Any, filters: int, strides: int, block: int) -> Any:
        x = _conv_bn(x, filters // 2, 1, name=f"bottleneck_{block}_0_")
        x = L.LeakyReLU()(x)
        x = _conv_bn(x, filters // 2, 3, strides=strides, name=f"bottleneck_{block}_1_")
        x = L.LeakyReLU()(x)
        return L.LeakyReLU()(_conv_bn(x, filters, 1, name=f"bottleneck_{block}_2_"))

    x = keras.Input((3, 96, 128), name="input_1")
    return keras.Model(x, bottleneck(bottleneck(x, 16, 1, 1), 32, 2, 2), name="convnet_7")


def _sub_model() -> Any:
    class IdentityLayer(L.Layer):
        def call(self, inputs: Any, training: Any = None) -> Any:
            return inputs

    image = keras.Input((98, 84, 1), name="image_input")
    features = keras.Sequential([
        keras.Input((98, 84, 1)), L.Conv2D(32, 3, activation="relu"),
        L.Conv2D(64, 3, activation="relu"), L.MaxPooling2D(2, 2), L.Dropout(0.25),
        L.Conv2D(128, 12, strides=14, activation="relu"), L.Dropout(0.5)])(image)
    outputs = []
    for _ in range(3):
        for units, act in ((10, "softmax"), (1, "sigmoid"), (2, "tanh"), (2, "tanh")):
            h = L.Dense(64, activation="relu")(L.Dense(128, activation="relu")(features))
            outputs.append(L.Dense(units, activation=act)(h))
    return keras.Model(image, IdentityLayer()(L.Concatenate(name="output")(outputs)))


def _two_zero_padding() -> Any:
    x = keras.Input((32, 32, 3))
    t = L.Conv2D(64, 3, padding="same")(x)
    conv = L.Conv2D(64, 3, padding="valid")
    a = conv(L.ZeroPadding2D(((1, 0), (1, 0)))(t))
    b = conv(L.ZeroPadding2D(((0, 1), (0, 1)))(t))
    return keras.Model(x, L.concatenate([a, b], axis=3))


def _einsum(eq: str, a: tuple[int, ...], b: tuple[int, ...]) -> Callable[[], Any]:
    return lambda: _lamn([a, b], lambda x: tf.einsum(eq, x[0][:, 0], x[1][:, 1]))


def _int_pair(shape: tuple[int, ...]) -> Callable[[], Any]:
    return _arr(shape, shape, dtypes=("int32", "int32"), high=100)


_ACTIVATIONS = ["tanh", "sigmoid", "hard_sigmoid", "relu", "elu", "selu", "softsign",
                "softplus", "softmax", "linear"]
_REDUCE = [("min", 1, True), ("max", None, True), ("mean", 1, False), ("sum", None, False),
           ("prod", 1, True)]


_TF2ONNX: list[Case] = [
    _t("test_keras_lambda", "", lambda: _seq((3, 5), L.Lambda(lambda x: x ** 2),
                                             L.Lambda(ops.round), L.Flatten())),
    _t("test_keras_lambda_depth_to_space", "NHWC,dynamic", lambda: _lam(
        lambda x: tf.nn.depth_to_space(x, block_size=2), (None, None, 8)),
       sample=_arr((3, 4, 6, 8))),
    _t("test_tf_addn", "", lambda: _lamn([(5, 3, 4), (5, 3, 4)], tf.add_n)),
    *[_t("test_tf_argmax_argmin", op, (lambda op=op: _lam(
        lambda x: getattr(tf, op)(x, axis=2), (3, 4, 2)))) for op in ("argmax", "argmin")],
    *[_t("test_tf_pool", f"{op},{pad},{d}d", _tf_pool(op, pad, d))
      for op, pad, d in (("avg", "SAME", 2), ("max", "VALID", 2), ("avg", "VALID", 3),
                         ("max", "SAME", 3))],
    *[_t("test_tf_conv", k, _tf_conv(k)) for k in ("conv2d", "conv1d", "conv3d")],
    _t("test_tf_floormod", "float", lambda: _lamn([(2, 2), (2, 2)],
                                                  lambda x: tf.math.floormod(x[0], x[1])),
       sample=_arr((2, 2, 2), (2, 2, 2), scale=10.0), data=True),
    _t("test_tf_floormod", "int", lambda: _lamn([(2, 2), (2, 2)], lambda x: tf.math.floormod(
        tf.cast(x[0], tf.int32), tf.cast(x[1], tf.int32))),
       sample=lambda: [np.full((2, 2, 2), 57.0, "float32"), np.full((2, 2, 2), 5.0, "float32")],
       data=True),
    _t("test_tf_rsqrt", "", _tf_rsqrt),
    _t("test_tf_bias_add", "NHWC", lambda: _lam(
        lambda x: tf.nn.bias_add(x, tf.constant([100.0, -100.0])), (3, 4, 2))),
    _t("test_tf_bias_add", "NCHW", lambda: _lam(lambda x: tf.nn.bias_add(
        x, tf.constant([100.0, -100.0]), data_format="NCHW"), (2, 3, 4))),
    _t("test_tf_clip", "", lambda: _lam(lambda x: ops.clip(x, 0, 10), (5, 5)),
       note="K.clip -> keras.ops.clip"),
    _t("test_tf_pow", "", lambda: _lam(lambda x: tf.math.pow(
        tf.cast(x, tf.int32), tf.cast(tf.constant([[2.0, 2.0], [2.0, 2.0]]), tf.int32)),
        (2, 2))),
    _t("test_tf_concat", "", lambda: _lamn([(2, 3), (4, 3)], lambda x: tf.concat(x, 1))),
    *[_t("test_depthwise_conv2d", f"use_bias={b}", _one(
        lambda b=b: L.DepthwiseConv2D((3, 3), padding="valid", use_bias=b), (8, 8, 2)))
      for b in (True, False)],
    _t("test_tf_einsum", "ibh,hnd->ibnd",
       _einsum("ibh,hnd->ibnd", (2, 3, 2), (2, 4, 5)),
       sample=_arr((2, 2, 3, 2), (2, 2, 4, 5)), data=True,
       note="the batch is the contracted h axis: Keras runs it at batch 2 only"),
    _t("test_tf_einsum", "ibnd,jbnd->ijbn",
       _einsum("ibnd,jbnd->ijbn", (2, 3, 4, 2), (2, 3, 4, 2))),
    *[_t("test_tf_expand_dims", f"dim={d}", (lambda d=d: _lam(lambda x: tf.expand_dims(x, d),
                                                              (2, 3, 4))))
      for d in (0, -1)],
    _t("test_tf_fill", "", lambda: _lam(lambda x: x + tf.fill([2, 3], 2.3), (2, 3))),
    *[_t("test_tf_fused_batch_norm", f, _batch_norm_consts(f == "NCHW"))
      for f in ("NHWC", "NCHW")],
    _t("test_tf_gather", "", lambda: _lam(lambda x: tf.gather(x, [1, 1], axis=1), (5, 5))),
    _t("test_tf_maximum_minimum", "float", lambda: _lamn(
        [(2, 3), (2, 1)], lambda x: tf.minimum(tf.maximum(x[0], 0.5), x[1]))),
    _t("test_tf_maximum_minimum", "int", lambda: _lamn(
        [(2, 3), (2, 3)], lambda x: tf.minimum(tf.maximum(x[0], x[1]), 50),
        ["int32", "int32"]), sample=_int_pair((2, 2, 3)), data=True),
    _t("test_tf_one_hot", "", lambda: _lam(
        lambda x: tf.one_hot(tf.cast(x, tf.int32), 3, 5.0, -1.0, 1), (3,)),
       sample=lambda: np.array([[0, 1, 2], [2, 1, 0]], "float32"), data=True),
    *[_t("test_tf_pad", m, _tf_pad(m)) for m in ("CONSTANT", "REFLECT")],
    _t("test_tf_range", "constant", lambda: _lam(
        lambda x: x + tf.cast(tf.range(3, 18, 3), tf.float32), (1,))),
    _t("test_tf_range", "dynamic", _tf_range_dynamic,
       sample=lambda: [np.ones((1, 5), "float32"), np.full((1, 1), 3.0, "float32")],
       data=True),
    _t("test_tf_compare_equal", "not_equal", lambda: _lamn(
        [(3,), (3,)], lambda x: tf.not_equal(x[0], x[1]), ["int32", "int32"]),
       sample=_int_pair((2, 3))),
    _t("test_tf_realdiv", "broadcast", lambda: _lamn(
        [(2, 3), (3,)], lambda x: tf.realdiv(x[0], x[1])),
       sample=lambda: [np.random.default_rng(0).random((2, 2, 3), "float32") + 0.5,
                       np.random.default_rng(1).random((2, 3), "float32") + 0.5], data=True),
    *[_t("test_tf_reduce_op", f"{op},axis={a},keepdims={k}", (
        lambda op=op, a=a, k=k: _lam(lambda x: getattr(ops, op)(x, axis=a, keepdims=k),
                                     (2, 2))),
        note="K.<op> -> keras.ops.<op>") for op, a, k in _REDUCE],
    _t("test_tf_reshape", "float", lambda: _lam(lambda x: tf.reshape(x, [-1, 2, 4]), (2, 2, 2))),
    _t("test_tf_reshape", "dynamic", _tf_reshape_dynamic,
       sample=lambda: [np.random.default_rng(0).random((1, 6), "float32"),
                       np.array([[1, 2, 3]], "float32")], data=True),
    *[_t("test_tf_resize", f"{m},dynamic_height", (lambda m=m: _lam(
        lambda x: tf.image.resize(x, [5, 10], method=m), (None, 20, 3))),
        sample=_arr((2, 10, 20, 3)), note="tf.image.resize_bilinear/_nearest_neighbor (TF 1) "
        "-> tf.image.resize(method=...)") for m in ("bilinear", "nearest")],
    _t("test_tf_resize_2", "align_corners", lambda: _lam(lambda x: tf.compat.v1.image.resize(
        x, [3, 4], method="bilinear", align_corners=True), (5, 7, 3))),
    _t("test_tf_size", "", lambda: _lam(lambda x: x + tf.cast(tf.size(x), tf.float32),
                                        (2, 3, 5))),
    _t("test_tf_slice", "constant", lambda: _lam(
        lambda x: tf.slice(x, [0, 1, 0, 2], [3, 1, 2, 2]), (2, 3, 5)),
       sample=_arr((3, 2, 3, 5)), data=True, note="the size fixes the batch at 3"),
    _t("test_tf_slice", "dynamic_begin", _tf_slice_dynamic,
       sample=lambda: [np.random.default_rng(0).random((3, 2, 3, 5), "float32"),
                       np.tile(np.array([[0, 1, 0, 2]], "int32"), (3, 1))], data=True),
    _t("test_tf_softmax", "axis=1", lambda: _lam(lambda x: tf.nn.softmax(x, axis=1),
                                                 (2, 3, 5))),
    _t("test_tf_sqrt", "", lambda: _lam(lambda x: tf.sqrt(x + 1.0), (2, 5)),
       sample=_arr((3, 2, 5), scale=0.1), data=True),
    _t("test_tf_space_to_batch_nd", "", _space_to_batch),
    _t("test_tf_splitv", "", lambda: _lam(lambda x: tf.split(x, [4, 15, 11], 2)[0], (5, 30))),
    _t("test_tf_square", "", lambda: _lam(lambda x: x + tf.square(x), (2, 3, 5))),
    _t("test_tf_squeeze", "[1]", lambda: _lam(lambda x: tf.squeeze(x, [1]), (1, 2, 1, 2))),
    _t("test_tf_stack", "axis=-1", lambda: _lamn([(2, 3)] * 3,
                                                 lambda x: tf.stack(x, axis=-1))),
    _t("test_stridedslice_with_version", "v1=-1,v2=2", lambda: _lam(
        lambda x: x[:, tf.newaxis, -1:, tf.newaxis, :2, tf.newaxis, 3], (2, 3, 4, 5))),
    _t("test_stridedslice_ellipse_newaxis", "", lambda: _lam(
        lambda x: x[:, 1:, tf.newaxis, ..., :, 1:, tf.newaxis], (2, 3, 4, 3, 2, 2))),
    _t("test_stridedslice_ellipsis_mask_with_version", "", lambda: _lam(
        lambda x: x[:, :2, ..., 1:], (3, 4, 5, 6, 3))),
    _t("test_stridedslice_shrink_mask_with_version", "-1", lambda: _lam(
        lambda x: x[:, -1, :], (3, 4, 5))),
    _t("test_stridedslice_dynamic_end", "", _strided_dynamic_end(True)),
    _t("test_conv_transpose_dynamic", "", _strided_dynamic_end(False),
       note="skipped upstream ('ConvTranspose does not support dynamic input for "
       "padding=same'); ported"),
    _t("test_tf_tile", "", lambda: _lam(lambda x: tf.tile(x, [1, 1, 3]), (2, 2))),
    _t("test_tf_topk", "", lambda: _lam(lambda x: tf.nn.top_k(x, k=2)[0], (5, 5))),
    _t("test_tf_transpose", "perm", lambda: _lam(lambda x: tf.transpose(x, perm=[0, 2, 3, 1]),
                                                 (2, 3, 4))),
    _t("test_tf_transpose", "all_axes", lambda: _lam(tf.transpose, (2, 3, 4)),
       sample=_arr((4, 2, 3, 4)), note="moves the batch axis last"),
    _t("test_tf_unpack", "axis=1", lambda: _lam(lambda x: tf.unstack(x, axis=1)[0],
                                                (2, 3, 4))),
    *[_t("test_any_all", f"{op},axis={a}", (lambda op=op, a=a: _lam(
        lambda x: getattr(ops, op)(x, axis=a), (3, 5))), note="K.any/all -> keras.ops")
      for op, a in (("any", 1), ("all", -1))],
    _t("test_dense", "use_bias=False", lambda: _seq(
        (4,), L.Dense(5, activation="sigmoid"), L.Dense(3, use_bias=False))),
    _t("test_dense_add", "", lambda: _fn([(4,), (5,), (3,)], lambda xs: L.Add()(
        [L.Dense(3, activation="relu")(xs[0]), L.Dense(3, activation="sigmoid")(xs[1]),
         L.Dense(3)(xs[2])]))),
    _t("test_dense_softmax", "Activation", lambda: _seq(
        (4,), L.Dense(5), L.Activation("softmax"), L.Dense(3))),
    _t("test_merge_layer", "Add,3 inputs", _merge("Add", (3,), (3,), (3,))),
    _t("test_merge_layer", "Subtract", _merge("Subtract", (3,), (3,))),
    _t("test_merge_layer", "Multiply", _merge("Multiply", (3,), (3,))),
    _t("test_merge_layer", "Average", _merge("Average", (3,), (3,))),
    _t("test_merge_layer", "Maximum", _merge("Maximum", (3,), (3,))),
    _t("test_merge_layer", "Concatenate(1)", _merge("Concatenate", (1, 2, 2), (1, 2, 2),
                                                    axis=1)),
    _t("test_conv1d", "stride=2", _conv("Conv1D", 4, 5, 3, 2, (15,))),
    _t("test_conv1d_padding", "causal", _conv("Conv1D", 4, 5, 3, 1, (15,), padding="causal")),
    _t("test_conv1d_activation", "sigmoid", _conv("Conv1D", 4, 5, 3, 1, (15,),
                                                  activation="sigmoid")),
    _t("test_conv1d_bias", "", _conv("Conv1D", 4, 5, 3, 1, (15,), use_bias=True)),
    _t("test_conv2d", "", _conv("Conv2D", 3, 5, (2, 2), (1, 1), (5, 5))),
    _t("test_conv2d_transpose", "", _conv("Conv2DTranspose", 3, 5, (2, 2), (1, 1), (5, 5))),
    *[_t("test_conv2d_transpose_2", p, (lambda p=p: _seq(
        (32, 32, 3), L.Conv2DTranspose(256, 4, strides=2, use_bias=False, padding=p,
                                       kernel_initializer="he_normal"),
        L.BatchNormalization())), note="input 32x32 (upstream 128x128)") for p in ("same",
                                                                                  "valid")],
    _t("test_conv2d_padding_same", "k(5,7),s(3,5)", _conv(
        "Conv2D", 1, 1, (5, 7), (3, 5), (25, 25), padding="same")),
    _t("test_conv2d_format", "channels_first", _conv(
        "Conv2D", 3, 5, (2, 2), (1, 1), (5, 5), data_format="channels_first")),
    _t("test_conv2d_activation", "softmax", _conv("Conv2D", 3, 5, (2, 2), (1, 1), (5, 5),
                                                  activation="softmax")),
    _t("test_conv2d_bias", "", _conv("Conv2D", 3, 5, (2, 2), (1, 1), (5, 5), use_bias=True)),
    _t("test_conv2d_larger", "", _conv("Conv2D", 3, 5, (7, 9), 1, (30, 20))),
    _t("test_conv2d_uneven_stride", "", _conv("Conv2D", 3, 5, (4, 4), (3, 2), (20, 10))),
    _t("test_conv3d", "", _conv("Conv3D", 3, 5, (2, 2, 2), (1, 1, 1), (5, 5, 8))),
    _t("test_conv3d_transpose", "", _conv("Conv3DTranspose", 3, 5, (2, 2, 2), (1, 1, 1),
                                          (5, 5, 8)),
       note="skipped upstream ('ONNXRuntime doesn't support 3D ConvTranspose'); ported"),
    _t("test_flatten", "", lambda: _seq((3, 2), L.Flatten(), L.Dense(3)), quick=True),
    _t("test_opt_push_transpose_unsqueeze", "conv2d", lambda: _seq(
        (1, 5, 7), L.Conv2D(64, 3, padding="same"), L.Lambda(lambda x: tf.squeeze(x, [1])),
        L.Lambda(lambda x: tf.expand_dims(x, 1)))),
    _t("test_flatten2", "channels_first", lambda: _seq(
        (3, 5, 7), L.Conv2D(64, 3, padding="same"), L.Flatten(data_format="channels_first"))),
    _t("test_reshape", "", _one(lambda: L.Reshape((2, 3)), (3, 2))),
    _t("test_permute", "", _one(lambda: L.Permute((2, 1)), (3, 2))),
    _t("test_repeat_vector", "", _one(lambda: L.RepeatVector(3), (4,))),
    _t("test_pooling_1d", "AveragePooling1D", _pool("AveragePooling1D", (4, 6))),
    _t("test_pooling_1d", "MaxPool1D,channels_first", _pool("MaxPool1D", (4, 6),
                                                            data_format="channels_first")),
    _t("test_pooling_2d", "AveragePooling2D", _pool("AveragePooling2D", (4, 4, 3))),
    _t("test_pooling_2d", "MaxPooling2D,same", lambda: _seq(
        (5, 5, 3), L.MaxPooling2D((2, 2), strides=(2, 2), padding="same"))),
    _t("test_pooling_3d", "AveragePooling3D", _pool("AveragePooling3D", (4, 4, 4, 3))),
    _t("test_pooling_3d", "MaxPool3D", _pool("MaxPool3D", (4, 4, 4, 3))),
    _t("test_pooling_global", "", _pool("GlobalAveragePooling2D", (4, 6, 2))),
    *[_t("test_activation_layer", a, _one(lambda a=a: L.Activation(a), (11,)))
      for a in _ACTIVATIONS],
    _t("test_selu", "", lambda: _seq((10, 10, 1), L.Conv2D(32, 3, strides=2), L.Flatten(),
                                     L.Dense(32, activation="selu"),
                                     L.Dense(5, activation="softmax"))),
    _t("test_gelu", "", _gelu),
    _t("test_LeakyReLU", "", _one(lambda: L.LeakyReLU(negative_slope=0.1), (11,))),
    _t("test_ThresholdedReLU", "", _one(lambda: L.ReLU(threshold=1.0), (11,)),
       note="ThresholdedReLU is gone in Keras 3: ReLU(threshold=1.0)"),
    _t("test_ELU", "", _one(lambda: L.ELU(alpha=1.0), (11,))),
    _t("test_PReLU", "RandomNormal", _one(lambda: L.PReLU(alpha_initializer="random_normal"),
                                          (11,))),
    _t("test_ReLU", "max_value,negative_slope", _one(
        lambda: L.ReLU(max_value=1.5, negative_slope=0.1), (11,))),
    _t("test_Softmax", "", _one(lambda: L.Softmax(axis=-1), (11,))),
    *[_t("test_Softmax_2", f"axis={a}", _one(lambda a=a: L.Softmax(axis=a), (2, 3, 4)),
         note="axis 0 is the batch axis" if a == 0 else "") for a in (0, 1)],
    *[_t("test_tf_nn_activation", name, (lambda f=f: _seq(
        (10,), L.Dense(64, activation=f), L.Dense(64, activation=f), L.Dense(1))))
      for name, f in (("relu6", "relu6"), ("leaky_relu", "leaky_relu"))],
    _t("test_crop", "Cropping1D", _one(lambda: L.Cropping1D((1, 2)), (10, 20))),
    _t("test_crop", "Cropping2D,channels_first", _one(
        lambda: L.Cropping2D(((1, 2), (2, 3)), data_format="channels_first"), (20, 20, 10))),
    _t("test_crop", "Cropping3D", _one(lambda: L.Cropping3D(((1, 2), (2, 3), (3, 5))),
                                       (20, 20, 20, 10))),
    _t("test_upsample", "UpSampling1D", _one(lambda: L.UpSampling1D(2), (20, 5))),
    _t("test_upsample", "UpSampling2D,bilinear", _one(
        lambda: L.UpSampling2D((2, 3), interpolation="bilinear"), (20, 20, 1))),
    _t("test_upsample", "UpSampling3D", _one(lambda: L.UpSampling3D((2, 3, 4)), (20, 20, 20, 1))),
    _t("test_padding", "", _one(lambda: L.ZeroPadding2D(((1, 2), (2, 3))), (20, 20, 1))),
    _t("test_embedding", "", lambda: _seq((10,), L.Embedding(1000, 64), dtype="int32"),
       note="int32 ids (upstream float32); input_length is gone in Keras 3"),
    _t("test_dot", "normalize", _merge("Dot", (3,), (3,), axes=-1, normalize=True)),
    *[_t("test_dot2", cfg, _dot2(i)) for i, cfg in ((1, "axes=1,normalize"),
                                                   (4, "axes=[1,1],batch_shape"))],
    _t("test_training_layer", "", lambda: _seq(
        (2, 3, 4), L.Dense(32), L.GaussianNoise(0.1), L.Activation("relu"),
        L.GaussianDropout(0.1), L.AlphaDropout(0.1), L.SpatialDropout2D(0.2), L.Dense(1))),
    _t("test_batch_normalization", "axis=1,center=False", lambda: _batch_norm(1, False)),
    _t("test_batch_normalization_2", "4d,axis=1", lambda: _seq(
        (10, 20, 30), L.BatchNormalization(axis=1), L.Dense(5))),
    _t("test_simpleRNN", "", _simple_rnn(False), quick=True),
    _t("test_simpleRNN", "initial_state,return_state", _simple_rnn(True)),
    _t("test_GRU", "initial_state,return_sequences", _gru_initial_state),
    _t("test_GRU_2", "", lambda: _seq((1, 257), L.GRU(400, reset_after=True),
                                      L.Dense(257, activation="sigmoid"))),
    _t("test_LSTM", "return_sequences,no_bias", _lstm_pair(return_sequences=True,
                                                           use_bias=False)),
    _t("test_LSTM_rev", "", _lstm_rev),
    _t("test_LSTM_with_bias", "", _lstm_with_bias),
    _t("test_LSTM_reshape", "", _lstm_reshape),
    _t("test_LSTM_with_initializer", "", _lstm_initializer),
    _t("test_LSTM_seqlen_none", "stateful", _lstm_stateful, sample=_arr((1, 5, 1))),
    _t("test_bidirectional", "LSTM,return_sequences", _bidirectional("lstm", True, "concat")),
    _t("test_bidirectional", "GRU,merge_mode=None", _bidirectional("gru", False, None)),
    _t("test_bidirectional", "SimpleRNN", _bidirectional("simple_rnn", False, "concat")),
    _t("test_bidirectional_with_bias", "LSTM", _bidirectional_bias,
       sample=_masked_sample(0.0, "none")),
    _t("test_bidirectional_with_initial_states", "LSTM", _bidirectional_states,
       sample=_arr((4, 3, 5), (4, 3, 5))),
    _t("test_bidirectional_seqlen_none", "LSTM", lambda: _seq(
        (None,), L.Embedding(39, 128), L.Bidirectional(L.LSTM(256, return_sequences=True)),
        L.Dense(44), dtype="int32"), sample=_arr((4, 50), dtypes=("int32",), high=39),
       note="int32 ids (upstream float32)"),
    _t("test_rnn_state_passing", "GRU", _state_passing, sample=_arr((4, 3, 5), (4, 3, 5))),
    _t("test_seq_dynamic_batch_size", "LSTM,unroll", _unrolled_stack("lstm"),
       note="not trained (upstream fits 200 epochs on random data)"),
    _t("test_separable_convolution", "2d", lambda: _seq(
        (5, 5, 3), L.SeparableConv2D(10, (1, 2), depth_multiplier=4),
        L.MaxPooling2D((2, 2), strides=(2, 2)))),
    _t("test_separable_convolution", "1d", lambda: _seq((5, 3), L.SeparableConv1D(10, 2))),
    _t("test_shared_embed", "", _shared_embed, note="int32 ids (upstream float32)"),
    _t("test_recursive_model", "", lambda: _recursive(False)),
    _t("test_recursive_and_shared_model", "", lambda: _recursive(True)),
    _t("test_shared_model_2", "", _shared_model_2),
    _t("test_shared_model_3", "leaky", _shared_model_3),
    _t("test_masking", "LSTM", _masked("lstm"), sample=_masked_sample(0.0, "none")),
    _t("test_masking_bias", "GRU", _masked("gru", bias=True),
       sample=_masked_sample(0.0, "tail"), data=True),
    _t("test_masking_bias_bidirectional", "LSTM", _masked("lstm", True, bias=True),
       sample=_masked_sample(0.0, "tail"), data=True),
    _t("test_masking_value", "GRU", _masked("gru", mask_value=5.0),
       sample=_masked_sample(5.0, "all"), data=True),
    _t("test_masking_custom", "", _masking_custom, sample=_masked_sample(0.0, "tail"),
       data=True),
    _t("test_timedistributed", "Dense", _one(lambda: L.TimeDistributed(L.Dense(8)), (10, 16))),
    _t("test_timedistributed", "Conv2D", _one(lambda: L.TimeDistributed(L.Conv2D(64, 3)),
                                              (10, 15, 15, 3))),
    _t("test_sub_model", "", _sub_model, note="input 98x84x1 (upstream 700x420x1)"),
    _t("test_reverseV2", "", lambda: _lam(lambda x: tf.reverse(x, [1]), (2, 4)),
       note="tf.reverse on a KerasTensor -> inside a Lambda"),
    _t("test_tensor_scatter_update", "", lambda: _lam(lambda x: tf.tensor_scatter_nd_update(
        x, np.array([[0], [0]], "int64"), np.ones((2, 2, 2), "float32")), (2, 2)),
       sample=_arr((2, 2, 2)), note="tf.tensor_scatter_nd_update inside a Lambda; the "
       "indices address the batch, so the batch is 2"),
    _t("test_two_zero_padding", "", _two_zero_padding),
]

#: tf2onnx test functions not ported, and why
NOT_PORTED = {
    "test_tf_variable": "TensorFlow 1 only (skipped upstream on TF 2): K.variable captured "
    "by a Lambda",
    "test_tf_where": "TensorFlow 1 only (skipped upstream on TF 2): constant tf.where "
    "outputs that ignore the input",
    "test_conv_add": "TensorFlow 1 only (skipped upstream on TF 2): Input(tensor=tf.constant)",
    "test_LSTM_time_major_return_seq_true": "tf.keras only: Keras 3 LSTM/RNN have no "
    "time_major argument",
    "test_LSTM_time_major_return_seq_false": "tf.keras only: Keras 3 LSTM/RNN have no "
    "time_major argument",
    "test_bidirectional_time_major_true": "tf.keras only: Keras 3 LSTM/RNN have no "
    "time_major argument",
    "test_channel_first_input": "tests keras2onnx's channel_first_inputs conversion option "
    "(NHWC inputs transposed by the converter), which neither edgekit nor Keras' export has",
    "test_channel_last": "tests keras2onnx's channel_first_inputs conversion option, which "
    "neither edgekit nor Keras' export has",
}

_APPLICATIONS = [Case(name, "applications", f"keras.applications.{name}", _app(name),
                      quick=name == "MobileNetV2", slow=name in _SLOW_APPS,
                      note=f"{APP_SIZES.get(name, 32)}x{APP_SIZES.get(name, 32)}x3, "
                      "1000 classes")
                 for name in _APPS]

#: every case by name, suites in order
CASES: dict[str, Case] = {c.name: c for c in [*_APPLICATIONS, *_KERAS_ONNX, *_TF2ONNX]}
