"""``POST /predict``: raw data in (the model's preprocessing applies), predictions and labels
out. See :mod:`edgekit.serve.app` for the request and answer forms."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, cast

import numpy as np

from edgekit.contract import has_class_rows, top1
from edgekit.errors import EdgekitError
from edgekit.runtime.model import EdgeModel, RawInput
from edgekit.runtime.specs import check_outputs_finite
from edgekit.serve.responses import HTTPError, RawASGI, send_error, send_json
from edgekit.serve.service import Service

if TYPE_CHECKING:
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send

__all__ = ["PredictRequest", "PredictRoutes", "parse_predict", "answer"]

#: what /predict takes as inputs: raw JSON data, by position or by input name
RawInputs = list[object] | dict[str, object] | str


@dataclasses.dataclass
class PredictRequest:
    """A validated /predict body and, once prepared, the model's feeds."""

    x: RawInputs
    top_k: int | None
    preprocess: bool | None
    feeds: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)


def parse_predict(model: EdgeModel, body: bytes) -> PredictRequest:
    """Validate a /predict body (shape of the JSON, not the data)."""
    try:
        req = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise HTTPError(400, f"malformed JSON: {exc}") from None
    if not isinstance(req, dict) or ("inputs" in req) == ("text" in req):
        raise HTTPError(
            400,
            "the body must be a JSON object with either 'inputs' or 'text'",
            hint='send {"inputs": [...]} (or {"text": "..."} for text models)',
        )
    top_k = req.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise HTTPError(400, f"'top_k' must be a positive integer, got {top_k!r}")
    preprocess = req.get("preprocess")
    if preprocess is not None and not isinstance(preprocess, bool):
        raise HTTPError(400, "'preprocess' must be true, false or null")
    if "text" in req:
        x = req["text"]
        if not model.is_text:
            raise HTTPError(422, "this model does not take text", hint="send 'inputs'")
        if not (isinstance(x, str) or (isinstance(x, list) and all(isinstance(t, str) for t in x))):
            raise HTTPError(422, "'text' must be a string or a list of strings")
        return PredictRequest(x, top_k, preprocess)
    x = req["inputs"]
    if not isinstance(x, (list, dict)) or not x:
        raise HTTPError(422, "'inputs' must be a non-empty (nested) list of numbers")
    if isinstance(x, dict) and len(model.inputs) == 1 and x.keys() == {model.input_names[0]}:
        x = x[model.input_names[0]]  # the named form of a single-input model: same rules
        if not isinstance(x, list) or not x:
            raise HTTPError(422, "'inputs' must be a non-empty (nested) list of numbers")
    return PredictRequest(x, top_k, preprocess)


def answer(model: EdgeModel, probs: np.ndarray, top_k: int | None) -> dict[str, object]:
    """The /predict answer for the model's outputs ``probs``."""
    check_outputs_finite(probs)  # a PredictionError: 422 with its hint, like every user error
    out: dict[str, object] = {"predictions": probs.tolist()}
    if model.metadata.task != "classification":
        return out
    labels = model.labels
    multi = model.multi_label(probs)
    if top_k is None and labels and probs.ndim == 2 and probs.shape[1] == len(labels) > 1 \
            and not multi:
        # the common case, top_k(probs, 1) without its per-row sorting: the first maximum
        out["labels"] = [labels[i] for i in top1(probs).tolist()]
        return out
    if top_k is None and not has_class_rows(probs):
        return out  # per pixel or per step: no classification rows, so no labels
    rows = model.top_k(probs, None if multi else top_k or 1)  # multi-label: by threshold
    if multi:
        out["labels"] = [[lab for lab, _ in row] for row in rows]
        rows = rows if top_k is None else [row[:top_k] for row in rows]
    else:
        out["labels"] = [row[0][0] for row in rows]
    if top_k is not None:
        out["top_k"] = [[{"label": lab, "probability": p} for lab, p in row] for row in rows]
    return out


class PredictRoutes:
    """The /predict handler of one served model (micro-batched when the config says so)."""

    def __init__(self, service: Service) -> None:
        self.service, self.em = service, service.em
        self.batcher = service.batcher(self.predict_outputs)

    def routes(self, route: type[Route]) -> list[Route]:
        """``/predict`` as a Starlette route (the middleware serves it without routing)."""
        return [route("/predict", RawASGI(self.predict), methods=["POST"])]

    def predict_outputs(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [self.em.predict(feeds, preprocess=False)]

    def decode_predict(self, body: bytes) -> PredictRequest:
        req = parse_predict(self.em, body)
        # JSON lists/objects/strings: numpy and the preprocessing read them as arrays
        req.feeds = self.em.prepare(cast(RawInput, req.x), preprocess=req.preprocess)
        self.service.check_batch(req.feeds)
        return req

    async def predict(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /predict, as a raw ASGI app (the hot path skips Starlette's routing)."""
        try:
            req, outs = await self.service.decode_and_run(
                scope, receive, self.decode_predict, self.predict_outputs, self.batcher
            )
            result = answer(self.em, outs[0], req.top_k)
        except (HTTPError, EdgekitError) as exc:
            await send_error(send, exc, 422)
            return
        await send_json(send, 200, result)
