"""Small ONNX test models (built with onnx.helper) for the runtime, serve and `run` tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edgekit.metadata import ModelMetadata, Preprocessing

FASHION_LABELS = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]  # fmt: skip
IMAGE_PRE = Preprocessing(
    kind="image", scale=1 / 255, image_size=[28, 28], color="grayscale", raw_dtype="uint8"
)
VOCAB = ["", "[UNK]", "free", "win", "prize", "call", "now", "hello", "see", "you", "later"]
SEQ_LEN = 8


def _save(graph: onnx.GraphProto, path: Path, meta: ModelMetadata | None, **props: str) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    all_props = {**(meta.to_props() if meta else {}), **props}
    for k, v in all_props.items():
        model.metadata_props.add(key=k, value=v)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def image_weights(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.05, (784, 10)).astype(np.float32), rng.normal(0, 0.1, 10).astype(
        np.float32
    )


def make_image_model(path: Path, *, session: dict | None = None, softmax: bool = True) -> Path:
    """[N,28,28,1] float32 -> Reshape -> MatMul+Add -> Softmax, with Fashion-MNIST metadata."""
    w, b = image_weights()
    nodes = [
        helper.make_node("Reshape", ["image", "shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["mm"]),
        helper.make_node("Add", ["mm", "B"], ["logits" if softmax else "probs"]),
    ]
    if softmax:
        nodes.append(helper.make_node("Softmax", ["logits"], ["probs"], axis=-1))
    graph = helper.make_graph(
        nodes,
        "image_classifier",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 28, 28, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        initializer=[
            numpy_helper.from_array(np.array([-1, 784], np.int64), "shape"),
            numpy_helper.from_array(w, "W"),
            numpy_helper.from_array(b, "B"),
        ],
    )
    meta = ModelMetadata(labels=FASHION_LABELS, preprocessing=IMAGE_PRE,
                         output_kinds=["probabilities" if softmax else "logits"])
    extra = {"edgekit.session": json.dumps(session)} if session else {}
    return _save(graph, path, meta, **extra)


def image_reference(x_float: np.ndarray) -> np.ndarray:
    """Numpy reference of make_image_model on already-scaled float inputs."""
    w, b = image_weights()
    z = x_float.reshape(-1, 784).astype(np.float32) @ w + b
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def tokenizer_dict() -> dict:
    return {"vocabulary": VOCAB, "sequence_length": SEQ_LEN}


def make_text_model(path: Path) -> Path:
    """[N,8] int32 token ids -> Gather -> ReduceMean -> MatMul -> Softmax, ham/spam labels."""
    rng = np.random.default_rng(1)
    emb = rng.normal(0, 1, (len(VOCAB), 4)).astype(np.float32)
    emb[[2, 3, 4, 5, 6]] += 2.0  # spammy words
    w = np.array([[-1, 1]] * 4, np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["E", "tokens"], ["emb"]),
            helper.make_node("ReduceMean", ["emb"], ["pooled"], axes=[1], keepdims=0),
            helper.make_node("MatMul", ["pooled", "W"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probs"], axis=-1),
        ],
        "text_classifier",
        [helper.make_tensor_value_info("tokens", TensorProto.INT32, ["N", SEQ_LEN])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 2])],
        initializer=[numpy_helper.from_array(emb, "E"), numpy_helper.from_array(w, "W")],
    )
    graph.node[1].ClearField("attribute")  # opset 17 ReduceMean takes axes as an attribute
    graph.node[1].attribute.extend(
        [helper.make_attribute("axes", [1]), helper.make_attribute("keepdims", 0)]
    )
    meta = ModelMetadata(
        labels=["ham", "spam"],
        preprocessing=Preprocessing(kind="text"),
        tokenizer=tokenizer_dict(),
        output_kinds=["probabilities"],
    )
    return _save(graph, path, meta)


def make_two_input_model(path: Path) -> Path:
    """a [N,3] float32 + b [N,3] float32 -> sum [N,3] (no metadata)."""
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"])],
        "two_inputs",
        [
            helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3]),
        ],
        [helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["N", 3])],
    )
    return _save(graph, path, None)


TAB_MEAN = [1.0, 2.0, 3.0, 4.0]
TAB_STD = [2.0, 2.0, 4.0, 4.0]


def make_tabular_model(path: Path) -> Path:
    """features [N,4] float32 -> MatMul -> logits [N,3] (standardisation in the metadata)."""
    w = np.arange(12, dtype=np.float32).reshape(4, 3) - 6.0
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["features", "W"], ["logits"])],
        "tabular",
        [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 3])],
        initializer=[numpy_helper.from_array(w, "W")],
    )
    meta = ModelMetadata(
        labels=["a", "b", "c"],
        preprocessing=Preprocessing(kind="tabular", mean=TAB_MEAN, std=TAB_STD),
        output_kinds=["logits"],
    )
    return _save(graph, path, meta)


def make_regression_model(d: Path) -> tuple[Path, Path]:
    """``reg.onnx``: an MLP regression (8 features -> 1 value in the tens) whose output is
    declared ``regression``, and ``reg.npz``: 300 samples with their real-valued targets as
    'y'."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(a.astype(np.float32), n) for n, a in (
        ("w1", rng.normal(size=(8, 32))), ("b1", rng.normal(size=32)),
        ("w2", rng.normal(size=(32, 1))), ("b2", np.array([20.0])))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["y"])]
    graph = helper.make_graph(nodes, "reg", [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 8])], [helper.make_tensor_value_info(
            "y", TensorProto.FLOAT, ["N", 1])], inits)
    path = _save(graph, d / "reg.onnx", ModelMetadata(task="regression",
                                                      output_kinds=["regression"]))
    np.savez(d / "reg.npz", x=rng.normal(size=(300, 8)).astype(np.float32),
             y=rng.normal(20.0, 10.0, 300).astype(np.float32))
    return path, d / "reg.npz"
