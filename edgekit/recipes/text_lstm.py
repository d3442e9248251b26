"""``text_lstm``: Embedding(10,000, 64) - LSTM(32) - Dense(classes, softmax) on token ids.

Texts are tokenised outside the model by a Keras ``TextVectorization`` layer adapted on the
training split (lower-case, strip punctuation, whitespace split, 10,000 tokens, length 100);
its vocabulary and rules are saved as a :class:`edgekit.inputs.text.TextTokenizer` in the model
metadata, so the runtime reproduces the ids in pure Python. The model input is int32
``(batch, 100)``; the LSTM is built with ``use_cudnn=False, go_backwards=True`` so it
exports to one ONNX LSTM op (plus a ReverseSequence) and sees the end-padding first.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from edgekit.errors import require
from edgekit.inputs.datasets import DataSplit, holdout_split, load_text_table
from edgekit.inputs.text import TextTokenizer
from edgekit.metadata import Preprocessing
from edgekit.recipes.config import TrainConfig, TrainResult
from edgekit.recipes.loop import run_training
from edgekit.recipes.recipe import Fitted, Recipe, require_keras

if TYPE_CHECKING:
    import keras

__all__ = [
    "RECIPE",
    "TextLSTM",
    "MAX_TOKENS",
    "SEQUENCE_LENGTH",
    "build_model",
    "load_data",
    "train",
    "make_vectorizer",
]

MAX_TOKENS = 10_000
SEQUENCE_LENGTH = 100


def make_vectorizer(texts: Sequence[str] | np.ndarray) -> keras.layers.TextVectorization:
    """A Keras ``TextVectorization`` layer adapted on ``texts`` (the edgekit rules)."""
    keras = require_keras()
    tf = require("tensorflow", "export", "tensorflow-cpu")
    layer = keras.layers.TextVectorization(
        max_tokens=MAX_TOKENS,
        output_mode="int",
        output_sequence_length=SEQUENCE_LENGTH,
        standardize="lower_and_strip_punctuation",
        split="whitespace",
    )
    layer.adapt(tf.constant(list(texts), dtype=tf.string), batch_size=256)
    return layer


def vectorize(
    layer: keras.layers.TextVectorization, texts: Sequence[str] | np.ndarray
) -> np.ndarray:
    """int32 ids ``(n, 100)`` from an adapted ``TextVectorization`` layer."""
    tf = require("tensorflow", "export", "tensorflow-cpu")
    if len(texts) == 0:
        return np.zeros((0, SEQUENCE_LENGTH), dtype=np.int32)
    ids = layer(tf.constant(list(texts), dtype=tf.string))
    return np.asarray(ids, dtype=np.int32)


class TextLSTM(Recipe):
    """Embedding + LSTM text classifier; defaults: 5 epochs, batch 32, tanh LSTM."""

    name = "text_lstm"
    defaults = {"epochs": 5, "batch_size": 32, "activation": "tanh"}

    def load_split(
        self, path: str | os.PathLike[str] | None, config: TrainConfig, **options: object
    ) -> DataSplit:
        if path is None:
            from edgekit.errors import InputError

            raise InputError(
                "text_lstm needs --data: a TSV/CSV file of label and text",
                hint="e.g. --data ../shared/data/sms-spam/SMSSpamCollection.tsv",
            )
        d = load_text_table(path)
        texts = np.asarray(d.texts, dtype=object)
        return holdout_split(texts, d.y, d.labels, config.test_split, config.seed, d.source)

    def fit_preprocessing(self, x_train: np.ndarray, config: TrainConfig) -> Fitted:
        layer = make_vectorizer(x_train)
        tok = TextTokenizer.from_text_vectorization(layer)
        return Fitted(Preprocessing(kind="text"), lambda x: vectorize(layer, x), tok.to_dict())

    def build_model(
        self, config: TrainConfig, input_shape: Sequence[int], n_classes: int
    ) -> keras.Model:
        keras = require_keras()
        L = keras.layers
        tokens = keras.Input((SEQUENCE_LENGTH,), dtype="int32", name="tokens")
        x = L.Embedding(MAX_TOKENS, 64)(tokens)
        # TextVectorization pads at the end; reading backwards puts the padding first, so the
        # final state summarises the real tokens (a forward LSTM over ~90 trailing pad steps
        # stays stuck at the majority class). Exports to ReverseSequence + one ONNX LSTM.
        x = L.LSTM(32, activation=config.activation or "tanh", use_cudnn=False, go_backwards=True)(
            x
        )
        probs = L.Dense(n_classes, activation="softmax")(x)
        return keras.Model(tokens, probs, name="text_lstm")


RECIPE = TextLSTM()


def build_model(config: TrainConfig | None = None, n_classes: int = 2) -> keras.Model:
    """The uncompiled model (input int32 ``(batch, 100)``; default 2 classes)."""
    return RECIPE.build_model(
        (config or TrainConfig()).resolved(RECIPE.defaults), (SEQUENCE_LENGTH,), n_classes
    )


def load_data(path: str | os.PathLike[str], test_split: float = 0.2, seed: int = 0) -> DataSplit:
    """Raw texts (object array) + labels, split 80/20 (default) stratified with ``seed``."""
    return RECIPE.load_split(path, TrainConfig(test_split=test_split, seed=seed))


def train(
    config: TrainConfig | None = None,
    data: str | os.PathLike[str] | None = None,
    output: str | os.PathLike[str] | None = None,
    force: bool = False,
) -> TrainResult:
    """Train on a label/text table and save to ``output`` (with the tokenizer) when given."""
    return run_training(RECIPE, config, data_path=data, output=output, force=force)
