"""The Open Inference Protocol (KServe V2) routes of ``edgekit serve``: server and model
metadata, readiness, and ``infer`` (the tensor codec is :mod:`edgekit.serve.v2`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from edgekit import __version__
from edgekit.errors import EdgekitError
from edgekit.serve.responses import HTTPError, RawHandler, header, messages, send_error
from edgekit.serve.service import Service
from edgekit.serve.v2 import (
    HEADER_LENGTH,
    InferRequest,
    encode_infer_response,
    parse_infer_request,
    tensor_metadata,
)

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route
    from starlette.types import Receive, Scope, Send

__all__ = ["V2Routes"]


class V2Routes:
    """The V2 handlers of one served model (infer micro-batched when the config says so)."""

    def __init__(self, service: Service) -> None:
        self.service, self.em, self.name = service, service.em, service.name
        self.json = service.JSONResponse
        self.batcher = service.batcher(self.em.run)

    def routes(self, route: type[Route]) -> list[Route]:
        """Starlette routes (infer on the served name is also served by the middleware)."""
        routes = [
            route("/v2", self.v2_server, methods=["GET"]),
            route("/v2/health/live", self.v2_live, methods=["GET"]),
            route("/v2/health/ready", self.v2_ready, methods=["GET"]),
            route("/v2/models", self.v2_models, methods=["GET"]),
        ]
        for base in ("/v2/models/{name}", "/v2/models/{name}/versions/{version}"):
            routes += [
                route(base, self.v2_model, methods=["GET"]),
                route(base + "/ready", self.v2_model_ready, methods=["GET"]),
                route(base + "/infer", self.v2_infer_elsewhere, methods=["POST"]),
            ]
        return routes

    def fast_paths(self) -> dict[str, RawHandler]:
        """Infer on the served name, as raw ASGI handlers the middleware serves directly."""
        return {path: self.v2_infer for path in (
            f"/v2/models/{self.name}/infer", f"/v2/models/{self.name}/versions/1/infer")}

    def v2_model_error(self, request: Request) -> Response | None:
        p, name = request.path_params, self.name
        if p["name"] != name:
            return self.service.error(404, f"unknown model {p['name']!r}",
                                      f"this server serves {name!r}")
        if p.get("version", "1") != "1":
            return self.service.error(404, f"unknown version {p['version']!r} of {name!r}",
                                      "use version 1")
        return None

    async def v2_server(self, request: Request) -> Response:
        return self.json(
            {"name": "edgekit", "version": __version__, "extensions": ["binary_tensor_data"]}
        )

    async def v2_live(self, request: Request) -> Response:
        return self.json({"live": True})

    async def v2_ready(self, request: Request) -> Response:
        return self.json({"ready": True})

    async def v2_models(self, request: Request) -> Response:
        return self.json({"models": [self.name]})

    async def v2_model(self, request: Request) -> Response:
        return self.v2_model_error(request) or self.json(
            {
                "name": self.name,
                "versions": ["1"],
                "platform": "onnxruntime_onnx",
                "inputs": tensor_metadata(self.em.inputs),
                "outputs": tensor_metadata(self.em.outputs),
            }
        )

    async def v2_model_ready(self, request: Request) -> Response:
        return self.v2_model_error(request) or self.json({"name": self.name, "ready": True})

    def v2_decode(self, body: bytes, header_length: int | None) -> InferRequest:
        req = parse_infer_request(body, header_length, self.em.inputs, self.em.outputs)
        self.em.check_values(req.feeds)  # NaN/Inf: refused here, before any batching
        self.service.check_batch(req.feeds)
        return req

    async def v2_infer(self, scope: Scope, receive: Receive, send: Send) -> None:
        """POST /v2/models/{name}[/versions/1]/infer, as a raw ASGI app."""
        raw_len = header(scope, HEADER_LENGTH.encode())
        try:
            if raw_len is not None and not raw_len.isdigit():
                raise HTTPError(400, f"invalid {HEADER_LENGTH} header")
            header_length = int(raw_len) if raw_len is not None else None
            req, values = await self.service.decode_and_run(
                scope, receive, self.v2_decode, self.em.run, self.batcher, header_length
            )
            body, json_len = encode_infer_response(self.name, req, self.em.output_names, values)
        except (HTTPError, EdgekitError) as exc:
            await send_error(send, exc, 400)
            return
        if json_len is None:
            start, end = messages(200, body, b"application/json")
        else:
            extra = [(HEADER_LENGTH.encode(), str(json_len).encode())]
            start, end = messages(200, body, b"application/octet-stream", extra)
        await send(start)
        await send(end)

    async def v2_infer_elsewhere(self, request: Request) -> Response:
        """Infer on another model name or version: the right one is served by ``v2_infer``."""
        return self.v2_model_error(request) or self.service.error(404, "not found")
