"""edgekit serve security: bearer API key, HTTPS, the non-loopback warning, and /metadata that
reveals no local paths or environment."""

from __future__ import annotations

import json
import os
import shutil
import ssl
import warnings
from pathlib import Path
from typing import Any

import httpx
import pytest
from _runtime_models import make_image_model
from _serve_sockets import self_signed
from click.testing import CliRunner

from edgekit.cli.main import cli
from edgekit.errors import InputError
from edgekit.serve import ServeConfig, create_app, server_process
from edgekit.serve.config import is_loopback

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

KEY = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_model(tmp_path_factory.mktemp("security") / "image.onnx")


def test_api_key_required_except_for_probes(model: Path) -> None:
    with TestClient(create_app(model, api_key=KEY)) as c:
        body = {"inputs": [[0] * 28] * 28}
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {KEY}"}):
            r = c.post("/predict", json=body, headers=headers)
            assert r.status_code == 401, r.text
            assert r.headers["www-authenticate"].startswith("Bearer")
            assert "API key" in r.json()["error"]
        for path in ("/metadata", "/metrics", "/v2/models", "/v2/models/image"):
            assert c.get(path).status_code == 401
        ok = {"Authorization": f"Bearer {KEY}"}
        assert c.post("/predict", json=body, headers=ok).status_code == 200
        assert c.get("/metadata", headers=ok).json()["serving"]["authentication"] is True
        for probe in ("/health", "/v2/health/live", "/v2/health/ready"):
            assert c.get(probe).status_code == 200


def test_api_key_from_environment_on_a_real_server(model: Path) -> None:
    with server_process(model, env={"EDGEKIT_API_KEY": KEY}, args=["--workers", "2"]) as url:
        with httpx.Client(base_url=url, timeout=10) as c:
            assert c.get("/metadata").status_code == 401
            r = c.get("/metadata", headers={"Authorization": f"Bearer {KEY}"})
            assert r.status_code == 200
            assert KEY not in r.text


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_https_with_a_self_signed_certificate(model: Path, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "server")
    args = ["--ssl-certfile", str(cert), "--ssl-keyfile", str(key), "--api-key", KEY]
    with server_process(model, args=args) as url:
        assert url.startswith("https://")
        ca = ssl.create_default_context(cafile=str(cert))
        with httpx.Client(base_url=url, verify=ca, timeout=10) as c:
            r = c.post("/predict", json={"inputs": [[0] * 28] * 28},
                       headers={"Authorization": f"Bearer {KEY}"})  # fmt: skip
            assert r.status_code == 200, r.text
        with pytest.raises(httpx.HTTPError):  # plain HTTP on the TLS port
            httpx.get(url.replace("https", "http") + "/health", timeout=5)


def test_non_loopback_bind_without_key_warns(model: Path, tmp_path: Path) -> None:
    """The warning comes before anything binds (here the model is corrupt, so nothing does)."""
    missing = tmp_path / "corrupt.onnx"
    missing.write_bytes(b"not an onnx model")
    r = CliRunner().invoke(cli, ["serve", str(missing), "--host", "0.0.0.0"])
    assert r.exit_code == 1
    assert "warning: serving on 0.0.0.0" in r.output and "--api-key" in r.output
    assert "error:" in r.output and "cannot load" in r.output
    r = CliRunner().invoke(cli, ["serve", str(missing), "--host", "0.0.0.0", "--api-key", KEY])
    assert "warning" not in r.output
    r = CliRunner().invoke(cli, ["serve", str(missing)])
    assert "warning" not in r.output
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2")


def test_config_validation() -> None:
    with pytest.raises(InputError, match="certificate and its key"):
        ServeConfig(ssl_certfile="cert.pem")
    with pytest.raises(InputError, match="API key"):
        ServeConfig(api_key=" padded ")
    with pytest.raises(InputError, match="max_in_flight"):
        ServeConfig(max_in_flight=0)
    with pytest.raises(InputError, match="finite number"):
        ServeConfig(header_timeout=float("inf"))
    with pytest.raises(InputError, match="model name"):
        ServeConfig(model_name="../etc")
    assert KEY not in repr(ServeConfig(api_key=KEY))
    r = CliRunner().invoke(cli, ["serve", "x.onnx", "--ssl-certfile", "nope.pem",
                                 "--ssl-keyfile", "nope.pem"])  # fmt: skip
    assert r.exit_code == 2 and "does not exist" in r.output


def test_metadata_shows_no_paths_or_environment(model: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("EDGEKIT_TEST_SECRET", "do-not-leak-this")
    with TestClient(create_app(model)) as c:
        meta = c.get("/metadata")
        health = c.get("/health")
    text = meta.text + health.text
    assert meta.status_code == 200
    assert str(model.parent) not in text and os.sep + "tmp" not in text
    assert "do-not-leak-this" not in text and os.environ.get("HOME", "~~") not in text

    def strings(o: Any) -> list[str]:
        if isinstance(o, dict):
            return [s for v in o.values() for s in strings(v)]
        if isinstance(o, list):
            return [s for v in o for s in strings(v)]
        return [o] if isinstance(o, str) else []

    assert not [s for s in strings(json.loads(meta.text)) if os.path.isabs(s)]
    assert meta.json()["model"] == "image.onnx" and meta.json()["name"] == "image"
