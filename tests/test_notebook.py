"""The image walkthrough notebook runs top to bottom with nbclient, from a foreign working dir.

The kernel is the ``python3`` kernelspec of the running interpreter (ipykernel's own spec;
jupyter_client starts it with ``sys.executable``), so it imports the same edgekit. The working
directory is a temp folder, not the repository: the notebook has to find the repository and
the data itself, and writes its outputs under that temp folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = [pytest.mark.file_seconds(10), pytest.mark.slow]

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "image_cnn_walkthrough.ipynb"


def _text(nb: object) -> str:
    """All stream and plain-text outputs of the executed notebook, in order."""
    parts: list[str] = []
    for cell in nb.cells:  # type: ignore[attr-defined]
        for out in cell.get("outputs", []):
            if out.get("output_type") == "stream":
                parts.append(out["text"])
            elif "data" in out and "text/plain" in out["data"]:
                parts.append(out["data"]["text/plain"])
    return "".join(parts)


@pytest.mark.slow
def test_walkthrough_runs_from_any_working_directory(
    tmp_path: Path, fashion_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FASHION_MNIST_DIR", raising=False)  # the notebook finds ../shared itself
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    work = tmp_path / "elsewhere"
    work.mkdir()
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                     resources={"metadata": {"path": str(work)}})
    client.execute()  # raises CellExecutionError with the cell's traceback on any failure

    text = _text(nb)
    assert f"repository: {NOTEBOOK.parents[1]}" in text
    assert "(60000, 28, 28, 1) uint8 (10000, 28, 28, 1)" in text
    accuracy = float(text.split("ONNX accuracy on 1,000 test images:")[1].split()[0])
    assert 0.6 < accuracy <= 1.0, text  # chance is 0.10 after 2 epochs on 5,000 images
    out = work / "examples_out" / "notebook"  # relative outputs land in the working dir
    assert (out / "fashion_cnn.keras").is_file() and (out / "fashion_cnn.onnx").is_file()
    report = json.loads((out / "fashion_cnn.report.json").read_text())
    assert report["validation"]["passed"] is True
