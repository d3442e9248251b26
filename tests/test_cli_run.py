"""`edgekit run` and `edgekit serve` command lines (argument handling and error messages)."""

from __future__ import annotations

import json
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from _runtime_models import FASHION_LABELS, make_image_model, make_text_model
from click.testing import CliRunner
from onnx import numpy_helper

from edgekit.cli import cli
from edgekit.errors import InputError
from edgekit.runtime.model import EdgeModel
from edgekit.runtime.predict import MAX_IMAGE_PIXELS, load_image
from edgekit.runtime.session import PROVIDER_NAMES, available_providers

RNG = np.random.default_rng(0)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    d = tmp_path_factory.mktemp("cli_run")
    np.save(d / "batch.npy", RNG.integers(0, 256, (2, 28, 28), dtype=np.uint8))
    Image.fromarray(RNG.integers(0, 256, (40, 30, 3), dtype=np.uint8)).save(d / "photo.png")
    (d / "notes.txt").write_text("hello")
    (d / "corrupt.onnx").write_bytes(b"\x08\x07garbage")
    return {
        "image": make_image_model(d / "image.onnx"),
        "text": make_text_model(d / "text.onnx"),
        "npy": d / "batch.npy",
        "png": d / "photo.png",
        "txt": d / "notes.txt",
        "corrupt": d / "corrupt.onnx",
        "dir": d,
    }


def invoke(*args: object) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, [str(a) for a in args])
    if r.exception and not isinstance(r.exception, SystemExit):
        raise r.exception
    return r.exit_code, r.stdout, r.stderr


def test_run_npy_table(files: dict[str, Path]) -> None:
    code, out, _ = invoke("run", files["image"], files["npy"])
    assert code == 0
    probs = EdgeModel(files["image"]).predict(np.load(files["npy"]))
    assert "sample 1:" in out
    assert FASHION_LABELS[int(probs[0].argmax())] in out
    assert f"{probs[0].max():.4f}" in out


def test_run_json_and_top_k(files: dict[str, Path]) -> None:
    code, out, _ = invoke("run", files["image"], files["npy"], "--json", "--top-k", "2")
    assert code == 0
    report = json.loads(out)
    assert report["providers"] == ["CPUExecutionProvider"]
    assert len(report["predictions"]) == 2 and len(report["predictions"][0]) == 2
    probs = EdgeModel(files["image"]).predict(np.load(files["npy"]))
    best = report["predictions"][1][0]
    assert best["label"] == FASHION_LABELS[int(probs[1].argmax())]
    assert best["probability"] == pytest.approx(float(probs[1].max()), rel=1e-6)


def test_run_image_file(files: dict[str, Path]) -> None:
    code, out, _ = invoke("run", files["image"], files["png"], "--json", "--top-k", "1")
    assert code == 0
    m = EdgeModel(files["image"])
    x = load_image(files["png"], m.preprocessing)
    assert x.shape == (28, 28, 1) and x.dtype == np.uint8
    assert json.loads(out)["predictions"][0][0]["label"] == m.predict_labels(x)[0]


def test_run_text(files: dict[str, Path]) -> None:
    code, out, _ = invoke("run", files["text"], "--text", "Win a FREE prize now!", "--json")
    assert code == 0
    assert json.loads(out)["predictions"][0][0]["label"] == "spam"


def test_run_provider_choices(files: dict[str, Path]) -> None:
    missing = next(n for n in PROVIDER_NAMES if n not in available_providers())
    code, _, err = invoke("run", files["image"], files["npy"], "--provider", missing)
    assert code == 1 and "not available" in err and "cpu" in err and "hint:" in err
    code, out, _ = invoke("run", files["image"], files["npy"], "--provider", missing, "--fallback")
    assert code == 0 and "CPUExecutionProvider" in out
    code, _, err = invoke("run", files["image"], files["npy"], "--provider", "warp-drive")
    assert code == 1 and "unknown execution provider 'warp-drive'" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("{corrupt}", "{npy}"), "cannot load"),
        (("{image}", "{txt}"), "unsupported input file type"),
        (("{image}",), "give exactly one input"),
        (("{image}", "{npy}", "--text", "hi"), "give exactly one input"),
        (("{image}", "--text", "hi"), "not a text model"),
    ],
)
def test_run_errors(files: dict[str, Path], args: tuple[str, ...], message: str) -> None:
    code, out, err = invoke("run", *(a.format(**files) for a in args))
    assert code == 1, out
    assert err.startswith("error: ") and message in err
    assert "Traceback" not in err


@pytest.mark.parametrize("args", [("{dir}/missing.onnx", "{npy}"),
                                  ("{image}", "{dir}/missing.npy")])
def test_run_missing_inputs_exit_2(files: dict[str, Path], args: tuple[str, ...]) -> None:
    code, _, err = invoke("run", *(a.format(**files) for a in args))
    assert code == 2
    assert err.startswith("error: ") and "does not exist" in err and "Traceback" not in err


def test_serve_help_and_bad_model(files: dict[str, Path]) -> None:
    code, out, _ = invoke("serve", "--help")
    assert code == 0 and "--workers" in out and "--port" in out
    code, _, err = invoke("serve", files["dir"] / "missing.onnx")
    assert code == 2 and "does not exist" in err
    code, _, err = invoke("serve", files["corrupt"], "--workers", "2")
    assert code == 1 and "cannot load" in err
    code, _, err = invoke("serve", files["image"], "--port", "0")
    assert code == 2


# -- outputs that are not numbers, images too large to decode -----------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf])
@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_run_refuses_outputs_that_are_not_numbers(files: dict[str, Path], tmp_path: Path,
                                                  value: float, json_flag: tuple[str, ...]
                                                  ) -> None:
    """A model whose outputs are NaN/inf: `edgekit run` exits 1 with `error:` and prints no
    probability (it once printed `nan` and exited 0)."""
    model = onnx.load(str(files["image"]))
    bias = next(t for t in model.graph.initializer if t.name == "B")
    bias.CopyFrom(numpy_helper.from_array(np.full(10, value, np.float32), "B"))
    bad = tmp_path / "not_numbers.onnx"
    onnx.save(model, str(bad))
    code, out, err = invoke("run", bad, files["npy"], *json_flag)
    assert code == 1 and out == "", out
    assert err.startswith("error: the model produced NaN or infinite outputs"), err
    assert "20 of 20 values" in err and "hint: " in err and "Traceback" not in err


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares ``width`` x ``height`` but holds almost no pixel data: decoding it
    would fail as truncated, so a refusal that names the size was made from the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
                     + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize(("width", "height"), [(20000, 20000), (10000, 10000), (8000, 5001)])
def test_run_refuses_huge_images_before_decoding(files: dict[str, Path], tmp_path: Path,
                                                 width: int, height: int) -> None:
    """Over MAX_IMAGE_PIXELS (40 Mpixel): refused from the header, whatever Pillow's own
    bomb limits (89 Mpixel warns, 179 Mpixel raises) would have done."""
    assert width * height > MAX_IMAGE_PIXELS
    png = _png_header(tmp_path / "huge.png", width, height)
    code, out, err = invoke("run", files["image"], png)
    assert code == 1 and out == ""
    assert err.startswith(f"error: image {png} is over edgekit's limit of 40 Mpixel"), err
    assert "Traceback" not in err and "Warning" not in err
    with pytest.raises(InputError, match="limit of 40 Mpixel"):
        load_image(png)
    small = _png_header(tmp_path / "small.png", 8000, 5000)  # at the limit: decoded, truncated
    with pytest.raises(InputError, match="cannot read image"):
        load_image(small)
