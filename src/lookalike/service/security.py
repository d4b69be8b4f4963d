"""Request guard (ASGI middleware): metrics, API token, same-origin writes, body size limits,
security headers; and the checks ``serve`` makes before listening."""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import HTTPException
from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from lookalike.service.core import Service

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: POST routes that change nothing, open to everyone like GET (searching by upload, and the
#: preview of a query photo).
READ_ONLY_POST = re.compile(r"^(/collections/[^/]+/search|/preview)$")
LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class BodyTooLarge(HTTPException):
    """Raised from the body stream: an HTTPException, so that the form parser lets it
    through as the 413 it is (HTTP is this module's business, not a domain error)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: limit is {limit} bytes")


class Guard:
    """Pure ASGI middleware around the whole app: metrics, token, same-origin writes, body
    size limits, and a few security headers."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        token = service.settings.token
        self._token = token.encode() if token else None
        upload = service.settings.max_upload_bytes
        self._search_limit = upload + 64 * 1024  # one image and the multipart framing
        self._request_limit = max(self._search_limit, service.settings.max_request_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.service.metrics
        started = time.perf_counter()
        status = 500
        metrics.in_flight += 1

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
            await send(message)

        try:
            await self._guarded(scope, receive, send_wrapper)
        finally:
            metrics.in_flight -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "/static" if scope["path"].startswith("/static/") else "unmatched"
            )
            metrics.observe(scope["method"], template, status, time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        if method in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        read_only = method == "POST" and READ_ONLY_POST.match(path) is not None
        if not read_only:
            if self._token is not None and not _token_matches(
                headers.get("authorization", b""), self._token
            ):
                await _send_json(
                    send, 401, "missing or wrong API token", {"WWW-Authenticate": "Bearer"}
                )
                return
            if not _same_origin(headers):
                await _send_json(send, 403, "cross-site write refused")
                return
        limit = self._search_limit if read_only else self._request_limit
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _send_json(send, 413, f"request body too large: limit is {limit} bytes")
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except BodyTooLarge as exc:  # raised where the app does not turn it into a response
            await _send_json(send, 413, str(exc.detail))


def _token_matches(authorization: bytes, token: bytes) -> bool:
    """Whether ``Authorization: Bearer <token>`` holds the token (compared in constant time)."""
    scheme, _, given = authorization.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)


def _same_origin(headers: dict[str, bytes]) -> bool:
    """False for a browser's cross-site request (a page elsewhere posting a form here)."""
    if headers.get("sec-fetch-site", b"") == b"cross-site":
        return False
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser, or a same-origin GET-like request
    host = headers.get("host", b"")
    return origin.split(b"://", 1)[-1] == host


def is_loopback(host: str) -> bool:
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None) -> str | None:
    """The API token: from ``token_file`` if given, else $LOOKALIKE_TOKEN; None if neither."""
    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"{token_file} holds no token")
        return token
    return os.environ.get("LOOKALIKE_TOKEN") or None
