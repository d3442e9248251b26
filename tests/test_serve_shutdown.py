"""edgekit serve --workers 2 stopped by SIGTERM under keep-alive load (a real server on
127.0.0.1, ``tests/_shutdown_drill.py``): every accepted request is answered and the server
exits within the graceful limit. Before the fix a connection accepted as a worker began to
shut down was served keep-alive for the whole 10 s, its last request cancelled unanswered."""

from __future__ import annotations

from pathlib import Path

import pytest
from _runtime_models import make_image_model
from _shutdown_drill import drill

from edgekit.serve.shutdown import GRACEFUL_TIMEOUT

pytestmark = [pytest.mark.file_seconds(10), pytest.mark.slow]

RUNS = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_image_model(tmp_path_factory.mktemp("shutdown") / "image.onnx")


def test_sigterm_under_load_answers_every_accepted_request(model: Path, tmp_path: Path) -> None:
    for run in range(RUNS):
        log = tmp_path / f"server{run}.log"
        r = drill(model, workers=2, log_path=log)
        where = f"run {run}: {r.to_dict()}\n{log.read_text()[-3000:]}"
        assert r.before_sigterm > 0, where  # the load ran
        assert not r.failures and r.unanswered == 0, where
        assert r.exit_s < GRACEFUL_TIMEOUT, where
        assert "Cancel" not in log.read_text(), where  # uvicorn cancelled nothing
