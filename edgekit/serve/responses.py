"""Error mapping and raw ASGI answers of ``edgekit serve``.

Every user error is answered ``{"error": message, "hint": hint}``: an :class:`HTTPError` with
its own status, an :class:`~edgekit.errors.EdgekitError` with the status of the route (422 for
``/predict``, 400 for V2 infer), Starlette's 404/405 through :func:`starlette_error`. The hot
POST routes answer with :func:`send_json` and :func:`messages`, without Starlette's responses.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.types import Message, Receive, Scope, Send

__all__ = [
    "HTTPError",
    "RawHandler",
    "RawASGI",
    "messages",
    "send_json",
    "send_error",
    "header",
    "starlette_error",
]

#: a raw ASGI handler (``scope, receive, send``)
RawHandler = Callable[["Scope", "Receive", "Send"], Awaitable[None]]


class HTTPError(Exception):
    """A user error with its status; ``close`` ends the connection after the answer (the
    request body was not read, so its bytes must not be parsed as the next request)."""

    def __init__(self, status: int, message: str, hint: str | None = None,
                 close: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.hint, self.close = status, message, hint, close


def messages(
    status: int, body: bytes, content_type: bytes, headers: Sequence[tuple[bytes, bytes]] = ()
) -> tuple[Message, Message]:
    """The two ASGI messages of a complete response."""
    head = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        *headers,
    ]
    return (
        {"type": "http.response.start", "status": status, "headers": head},
        {"type": "http.response.body", "body": body},
    )


async def send_error(send: Send, exc: Exception, status: int) -> None:
    """Answer a user error: ``HTTPError`` with its status, an EdgekitError with ``status``."""
    status = exc.status if isinstance(exc, HTTPError) else status
    hint = getattr(exc, "hint", None)
    close = [(b"connection", b"close")] if getattr(exc, "close", False) else []
    await send_json(send, status, {"error": getattr(exc, "message", str(exc)), "hint": hint},
                    close)


async def send_json(
    send: Send, status: int, obj: object, headers: Sequence[tuple[bytes, bytes]] = ()
) -> None:
    """Answer ``obj`` as compact JSON."""
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    start, end = messages(status, body, b"application/json", headers)
    await send(start)
    await send(end)


def header(scope: Scope, name: bytes) -> str | None:
    """The value of request header ``name`` (lower case), None when absent."""
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class RawASGI:
    """A raw ASGI handler as a Starlette route endpoint (a function would be wrapped as a
    request -> response endpoint)."""

    def __init__(self, app: RawHandler) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def starlette_error(
    json_response: type[JSONResponse],
) -> Callable[[Request, Exception], Awaitable[Response]]:
    """Starlette's exception handler for its own HTTP errors (404, 405) in our JSON form."""

    async def handler(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        detail = getattr(exc, "detail", "error")
        return json_response(
            {"error": str(detail), "hint": None}, status_code=status,
            headers=getattr(exc, "headers", None),
        )  # fmt: skip

    return handler
