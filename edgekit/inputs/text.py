"""A pure-Python (+ numpy) tokenizer that reproduces Keras ``TextVectorization`` exactly.

Training adapts a ``TextVectorization(max_tokens=10000, output_sequence_length=100,
standardize="lower_and_strip_punctuation", split="whitespace")`` layer and stores its
vocabulary and rules in a :class:`TextTokenizer`; the runtime rebuilds it with
:meth:`TextTokenizer.from_dict` and calls :meth:`TextTokenizer.encode`, without TensorFlow.

The rules mirror TensorFlow's string ops:

- lower-casing is ``tf.strings.lower`` without an encoding: ASCII ``A-Z`` only; other
  characters (``É``, ``İ`` ...) are left as they are;
- punctuation stripping removes ``[!"#$%&()*+,-./:;<=>?@[\\]^_`{|}~']`` (ASCII only);
- splitting is on runs of ASCII whitespace (space, ``\\t \\n \\v \\f \\r``) only, leading and
  trailing whitespace dropped; Unicode spaces (``\\xa0``, ``\\u2028`` ...) do not split;
- id 0 is padding (the empty string in the vocabulary), id 1 the out-of-vocabulary token
  ``[UNK]``; sequences are truncated to their first ``sequence_length`` tokens and padded at
  the end with 0.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgekit.errors import InputError
from edgekit.schema import Fields, integer, list_of, string

__all__ = ["TextTokenizer", "PUNCTUATION_REGEX", "standardize", "split_whitespace"]

#: The regex Keras' ``strip_punctuation`` uses (``,-\.`` is the range ``,`` ``-`` ``.``).
PUNCTUATION_REGEX = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'
_PUNCT = re.compile(PUNCTUATION_REGEX)
_ASCII_WS = re.compile(r"[ \t\n\x0b\x0c\r]+")
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_STANDARDIZE = ("lower_and_strip_punctuation", "lower", "strip_punctuation", None)
_FORMAT = "edgekit.TextTokenizer/1"
#: bounds of a stored tokenizer: vocabulary size, ids per text (a request allocates
#: batch x sequence_length of them)
MAX_VOCABULARY = 1 << 22
MAX_SEQUENCE_LENGTH = 1 << 16


def standardize(text: str, mode: str | None = "lower_and_strip_punctuation") -> str:
    """Apply Keras' standardisation ``mode`` (default ``lower_and_strip_punctuation``)."""
    if mode in ("lower", "lower_and_strip_punctuation"):
        text = text.translate(_ASCII_LOWER)
    if mode in ("strip_punctuation", "lower_and_strip_punctuation"):
        text = _PUNCT.sub("", text)
    return text


def split_whitespace(text: str) -> list[str]:
    """Split on runs of ASCII whitespace, like ``tf.strings.split`` with no separator."""
    return [t for t in _ASCII_WS.split(text) if t]


@dataclass
class TextTokenizer:
    """Vocabulary + rules of a ``TextVectorization`` layer (integer output mode).

    Attributes:
        vocabulary: index-aligned tokens; ``vocabulary[0] == ""`` (padding) and
            ``vocabulary[1] == "[UNK]"`` (out of vocabulary), as ``get_vocabulary()`` returns.
        sequence_length: output length; default 100.
        standardize: ``"lower_and_strip_punctuation"`` (default), ``"lower"``,
            ``"strip_punctuation"`` or None.
        split: ``"whitespace"`` (default; the only one supported).
        max_tokens: vocabulary size limit used when adapting; default 10,000.
        pad_id: id used for padding; default 0.
        oov_id: id of unknown tokens; default 1.
    """

    vocabulary: list[str]
    sequence_length: int = 100
    standardize: str | None = "lower_and_strip_punctuation"
    split: str = "whitespace"
    max_tokens: int | None = 10000
    pad_id: int = 0
    oov_id: int = 1
    _index: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.standardize not in _STANDARDIZE:
            raise InputError(f"unsupported tokenizer standardize {self.standardize!r}")
        if self.split != "whitespace":
            raise InputError(f"unsupported tokenizer split {self.split!r}")
        if self.sequence_length < 1:
            raise InputError("tokenizer sequence_length must be >= 1")
        if len(self.vocabulary) < 2:
            raise InputError("tokenizer vocabulary needs at least the padding and OOV tokens")
        # first occurrence wins, like a lookup table built from the list
        self._index = {}
        for i, tok in enumerate(self.vocabulary):
            self._index.setdefault(tok, i)

    @property
    def vocab_size(self) -> int:
        """Number of ids (embedding input dimension)."""
        return len(self.vocabulary)

    def tokenize(self, text: str) -> list[str]:
        """Standardise and split one text into tokens (no truncation)."""
        return split_whitespace(standardize(text, self.standardize))

    def encode_one(self, text: str) -> list[int]:
        """Ids of one text, truncated/padded to ``sequence_length``."""
        n = self.sequence_length
        get, oov = self._index.get, self.oov_id
        ids = [get(t, oov) for t in self.tokenize(text)[:n]]
        return ids + [self.pad_id] * (n - len(ids))

    def encode(self, texts: str | Iterable[str]) -> np.ndarray:
        """int32 ids of shape ``(len(texts), sequence_length)``; a single str gives one row."""
        if isinstance(texts, str):
            texts = [texts]
        rows = [self.encode_one(_as_str(t)) for t in texts]
        if not rows:
            return np.zeros((0, self.sequence_length), dtype=np.int32)
        return np.asarray(rows, dtype=np.int32)

    def decode(self, ids: Sequence[int]) -> list[str]:
        """Tokens of an id sequence, padding dropped (for debugging)."""
        return [self.vocabulary[i] for i in ids if i != self.pad_id]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (stored in model metadata)."""
        return {
            "format": _FORMAT,
            "vocabulary": list(self.vocabulary),
            "sequence_length": self.sequence_length,
            "standardize": self.standardize,
            "split": self.split,
            "max_tokens": self.max_tokens,
            "pad_id": self.pad_id,
            "oov_id": self.oov_id,
            "lowercase": "ascii",
            "punctuation_regex": PUNCTUATION_REGEX,
        }

    @classmethod
    def from_dict(cls, d: Any, where: str = "tokenizer") -> TextTokenizer:
        """Rebuild from :meth:`to_dict` output, every field checked
        (:class:`~edgekit.errors.SchemaError` naming ``where``)."""
        f = Fields(d, where)
        vocab = f.get("vocabulary", list_of(string(), MAX_VOCABULARY, 2))
        ids = integer(0, len(vocab) - 1, "an index into the vocabulary")
        mode = f.data.get("standardize", "lower_and_strip_punctuation")  # null: none
        modes = [m for m in _STANDARDIZE if m is not None]
        return cls(
            vocabulary=vocab,
            sequence_length=f.get("sequence_length", integer(1, MAX_SEQUENCE_LENGTH), 100),
            standardize=None if mode is None else string(modes)(mode, f.path("standardize")),
            split=f.get("split", string(("whitespace",)), "whitespace"),
            max_tokens=f.get("max_tokens", integer(1, MAX_VOCABULARY), None),
            pad_id=f.get("pad_id", ids, 0),
            oov_id=f.get("oov_id", ids, 1),
        )

    @classmethod
    def from_text_vectorization(cls, layer: Any) -> TextTokenizer:
        """Capture an adapted Keras ``TextVectorization`` layer (int output, whitespace split)."""
        cfg = layer.get_config()
        if cfg.get("output_mode", "int") != "int" or cfg.get("ngrams") is not None:
            raise InputError("only int output without ngrams can be captured")
        if cfg.get("split") != "whitespace" or not cfg.get("output_sequence_length"):
            raise InputError("TextVectorization must split on whitespace with a fixed length")
        vocab = [v.decode() if isinstance(v, bytes) else str(v) for v in layer.get_vocabulary()]
        return cls(
            vocabulary=vocab,
            sequence_length=int(cfg["output_sequence_length"]),
            standardize=cfg.get("standardize"),
            max_tokens=cfg.get("max_tokens"),
        )


def _as_str(t: Any) -> str:
    if isinstance(t, bytes):
        return t.decode("utf-8")
    if not isinstance(t, str):
        raise InputError(f"text input must be str, got {type(t).__name__}")
    return t
