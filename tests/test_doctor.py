"""edgekit doctor: what this machine offers and where a model's nodes run, on real onnxruntime
(and OpenVINO where installed); missing GPUs and EPs are reported, not failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from _runtime_models import make_image_model
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.doctor import (
    Gpu,
    check_provider,
    doctor,
    format_doctor,
    machine_notes,
    machine_report,
    pci_gpus,
)
from edgekit.runtime.engine_openvino import openvino_available

CPU = "CPUExecutionProvider"


def _invoke(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, ["doctor", *args])
    assert "Traceback" not in r.output, r.output
    return r.exit_code, r.stdout, r.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_model(tmp_path_factory.mktemp("doctor") / "m.onnx")


def _missing_provider() -> tuple[str, str]:
    """A provider this onnxruntime build lacks: (short name, full name)."""
    for short, full in (("cuda", "CUDAExecutionProvider"), ("coreml", "CoreMLExecutionProvider"),
                        ("qnn", "QNNExecutionProvider"), ("dml", "DmlExecutionProvider")):
        if full not in ort.get_available_providers():
            return short, full
    pytest.skip("this onnxruntime build has every provider")


def test_doctor_describes_the_machine() -> None:
    code, out, _ = _invoke("-q")
    assert code == 0
    for part in ("cpu: ", "int8 level: ", "engines: onnxruntime " + ort.__version__,
                 "providers ", CPU, "gpus: "):
        assert part in out, out
    assert ("openvino " in out) == openvino_available()
    code, out, _ = _invoke("--json", "-q")
    m = json.loads(out)["machine"]
    assert code == 0 and m["onnxruntime"]["version"] == ort.__version__
    assert CPU in m["onnxruntime"]["available_providers"]
    if hasattr(ort, "get_ep_devices"):  # onnxruntime 1.22+: the CPU EP's device at least
        assert any(d["ep"] == CPU and d["device_type"] == "CPU"
                   for d in m["onnxruntime"]["ep_devices"])
    assert m["openvino"]["installed"] == openvino_available()
    if openvino_available():
        assert "CPU" in [d["name"] for d in m["openvino"]["devices"]]
    else:
        assert "not installed" in m["openvino"]["error"]
    if m["arch"] in ("x86_64", "AMD64") and m["cpu_features"]:
        assert {"AVX2", "AVX-512 VNNI", "AVX-512 BF16", "AMX"} <= set(m["cpu_features"])
    if not m["gpus"]:  # a machine without a GPU says so, plainly
        assert any(n.startswith("no GPU found") for n in m["notes"])


def test_gpus_from_the_pci_list_and_what_is_missing_for_them(tmp_path: Path) -> None:
    for name, cls, vendor in (("0000:01:00.0", "0x030200", "0x10de"),   # NVIDIA 3D controller
                              ("0000:02:00.0", "0x030000", "0x1a03"),   # ASPEED BMC console
                              ("0000:03:00.0", "0x020000", "0x8086")):  # Intel network card
        d = tmp_path / name
        d.mkdir()
        (d / "class").write_text(cls + "\n")
        (d / "vendor").write_text(vendor + "\n")
        (d / "device").write_text("0x2335\n")
    gpus = pci_gpus(tmp_path)
    assert [(g.vendor, g.source) for g in gpus] == [("NVIDIA", "pci")]
    assert "10de:2335" in gpus[0].name
    report = machine_report()
    report.gpus = [Gpu("NVIDIA", "H100", "nvidia-smi")]
    notes = machine_notes(report)
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert any("NVIDIA GPU found, but this onnxruntime build" in n and
                   "CUDAExecutionProvider" in n for n in notes), notes
    assert not any(n.startswith("no GPU found") for n in notes)


def test_doctor_model_json_reports_where_nodes_ran(model: Path) -> None:
    code, out, _ = _invoke(str(model), "--json", "-q")
    assert code == 0
    r = json.loads(out)["model"]
    assert r["auto"]["engine"] == "onnxruntime" and r["auto"]["providers"][-1] == CPU
    cpu = next(c for c in r["providers"] if c["provider"] == CPU)
    assert cpu["status"] == "ok" and cpu["session_providers"] == [CPU]
    assert cpu["nodes"] == cpu["nodes_by_provider"][CPU] >= 2
    assert cpu["time_share"] == {CPU: 1.0}
    runs = cpu["node_runs"]
    assert {n["provider"] for n in runs} == {CPU} and all(n["time_us"] > 0 for n in runs)
    assert {"Reshape", "Softmax"} <= {n["op_type"] for n in runs}
    assert cpu["source"] == ("partitioning" if hasattr(
        ort.InferenceSession, "get_provider_graph_assignment_info") else "profile")
    if "AzureExecutionProvider" in ort.get_available_providers():
        azure = next(c for c in r["providers"] if c["provider"] == "AzureExecutionProvider")
        assert azure["status"] == "skipped"
    if openvino_available():
        ov = next(o for o in r["openvino"] if o["device"] == "CPU")
        assert ov["supported_ops"] == ov["total_ops"] > 0 and ov["error"] is None
    else:
        assert r["openvino"] == []


def test_unavailable_provider_and_plugin_ep_are_reported_not_failed(model: Path) -> None:
    short, full = _missing_provider()
    code, out, _ = _invoke(str(model), "--provider", short, "--provider", "cpu",
                           "--plugin-ep", "NoSuchEp=/nonexistent/libnosuchep.so", "--json", "-q")
    assert code == 0
    report = json.loads(out)
    checks = {c["provider"]: c for c in report["model"]["providers"]}
    assert list(checks) == [full, CPU]
    assert checks[full]["status"] == "unavailable"
    assert "not in this onnxruntime build" in checks[full]["message"]
    assert checks[CPU]["status"] == "ok"
    plugin = report["machine"]["onnxruntime"]["plugin_eps"]
    assert plugin[0]["name"] == "NoSuchEp" and plugin[0]["registered"] is False
    assert "libnosuchep.so" in plugin[0]["error"]
    code, out, _ = _invoke(str(model), "--provider", short, "-q")
    assert code == 0 and f"{full}: unavailable (not in this onnxruntime build" in out


def test_doctor_usage_and_model_errors(tmp_path: Path) -> None:
    code, _, err = _invoke("--plugin-ep", "no-equals-sign", "-q")
    assert code == 1 and "error: --plugin-ep 'no-equals-sign' is not NAME=LIBRARY" in err
    assert "hint:" in err
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    code, _, err = _invoke(str(tmp_path / "bad.onnx"), "-q")
    assert code == 1 and err.startswith("error: cannot load") and "hint:" in err
    code, _, err = _invoke(str(tmp_path / "bad.onnx"), "--provider", "warp-drive", "-q")
    assert code == 1 and "unknown execution provider 'warp-drive'" in err
    code, _, err = _invoke(str(tmp_path / "missing.onnx"))
    assert code == 2 and "does not exist" in err


def test_stored_settings_are_what_auto_picks_and_what_runs(tmp_path: Path) -> None:
    engine = "openvino" if openvino_available() else "onnxruntime"
    path = make_image_model(tmp_path / "tuned.onnx", session={
        "engine": engine, "intra_op_num_threads": 1, "graph_optimization_level": "basic"})
    report = doctor(path)
    assert report.model is not None
    auto = report.model.auto
    assert auto.engine == engine
    assert auto.session == {"intra_op_num_threads": 1, "graph_optimization_level": "basic"}
    text = format_doctor(report)
    assert f"auto picks: {engine} on " in text and "intra_op_num_threads=1" in text
    assert f"{CPU}: " in text and "nodes, 100% of node time" in text


def test_ep_devices_path_and_ort_format(model: Path, tmp_path: Path) -> None:
    """Plugin EPs are only reachable through their EP devices: the same path with the CPU EP's
    device; and an ORT-format file (no OpenVINO for it)."""
    feeds = {"image": np.zeros((1, 28, 28, 1), np.float32)}
    if hasattr(ort, "get_ep_devices"):
        devices = [d for d in ort.get_ep_devices() if d.ep_name == CPU]
        c = check_provider(model, CPU, feeds, devices=devices)
        assert c.status == "ok" and c.nodes_by_provider == {CPU: c.nodes}
    from edgekit.quantize.ort_format import convert_to_ort

    ort_file, _, _ = convert_to_ort(model, tmp_path / "m.ort", tmp_path / "m.config")
    report = doctor(ort_file, providers=[CPU])
    assert report.model is not None and report.model.openvino == []
    assert report.model.providers[0].status == "ok"
