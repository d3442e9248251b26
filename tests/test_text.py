"""The pure-Python tokenizer reproduces Keras TextVectorization (edgekit rules) exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgekit.errors import InputError
from edgekit.inputs.text import TextTokenizer, split_whitespace, standardize

VOCAB = ["", "[UNK]", "the", "cat", "sat", "é", "çava", "abc"]

TRICKY = [
    "",
    "   ",
    "The CAT sat!!",
    "ÉCOLE École école İstanbul ÀÉÎ",  # non-ASCII upper case is NOT lower-cased by TF
    "tab\tnew\nline\rcr\x0bvt\x0cff  many   spaces ",
    "no\xa0break\u2028line\u3000ideo\x1cfs\x85nel",  # Unicode spaces do not split
    "it's £1.50 (50%) - 100,000 a-b_c [UNK] <br/> ~`^ \\ | ; : ?",
    "ça va? ÇAVA! emoji 😀😀 and ＦＵＬＬＷＩＤＴＨ",
    " ".join(["cat"] * 150),  # truncation keeps the first 100
    "ÿ ß ǅ Ω ω Σ σ ς",
]


def test_rules() -> None:
    assert standardize("The CAT, É!") == "the cat É"
    assert split_whitespace(" a\tb\n\nc\xa0d ") == ["a", "b", "c\xa0d"]
    tok = TextTokenizer(VOCAB, sequence_length=6)
    ids = tok.encode(["The cat sat on the mat", "abc"])
    assert ids.dtype == np.int32 and ids.shape == (2, 6)
    assert ids.tolist() == [[2, 3, 4, 1, 2, 1], [7, 0, 0, 0, 0, 0]]
    assert tok.encode("").tolist() == [[0] * 6]
    assert tok.encode([]).shape == (0, 6)
    assert tok.decode([2, 3, 0, 0]) == ["the", "cat"]


def test_roundtrip_json() -> None:
    tok = TextTokenizer(VOCAB, sequence_length=10)
    back = TextTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))
    assert back == tok
    assert np.array_equal(back.encode(TRICKY), tok.encode(TRICKY))


def test_bad_tokenizer() -> None:
    with pytest.raises(InputError):
        TextTokenizer(["", "[UNK]"], split="character")
    with pytest.raises(InputError):
        TextTokenizer.from_dict({"no": "vocab"})
    with pytest.raises(InputError):
        TextTokenizer(VOCAB).encode([3])  # type: ignore[list-item]


def test_no_tensorflow_import() -> None:
    code = (
        "import sys, edgekit, edgekit.inputs.text, edgekit.inputs.datasets, edgekit.recipes\n"
        "t = edgekit.inputs.text.TextTokenizer(['', '[UNK]', 'a']); t.encode(['a b'])\n"
        "edgekit.recipes.get_recipe('text_lstm'); edgekit.recipes.get_recipe('image_cnn')\n"
        "bad = [m for m in ('tensorflow', 'keras', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_matches_text_vectorization_on_sms(sms_file: Path) -> None:
    """Adapt once on every SMS message (+ tricky strings) and compare every message's ids."""
    from edgekit.inputs.datasets import load_text_table
    from edgekit.recipes.text_lstm import make_vectorizer, vectorize

    texts = load_text_table(sms_file).texts
    assert len(texts) == 5574
    layer = make_vectorizer(texts + TRICKY)
    tok = TextTokenizer.from_text_vectorization(layer)
    assert tok.vocabulary[:2] == ["", "[UNK]"] and tok.sequence_length == 100
    assert tok.vocab_size <= 10000
    tok = TextTokenizer.from_dict(json.loads(json.dumps(tok.to_dict())))  # as the runtime sees it
    expected = vectorize(layer, texts + TRICKY)
    got = tok.encode(texts + TRICKY)
    mismatched = [
        t for t, a, b in zip(texts + TRICKY, expected, got, strict=True) if not np.array_equal(a, b)
    ]
    assert not mismatched, mismatched[:5]
    # a tokenizer adapted on a training split maps unseen words to the OOV id, like Keras
    small = make_vectorizer(texts[:200])
    stok = TextTokenizer.from_text_vectorization(small)
    assert np.array_equal(vectorize(small, texts), stok.encode(texts))
    assert (stok.encode(texts) == 1).any()
