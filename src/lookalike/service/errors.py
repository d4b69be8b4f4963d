"""Domain errors -> HTTP, in one place. Library and service code raise
:mod:`lookalike.errors` (and :class:`~lookalike.image.decode.DecodeError`); only this module knows
status codes. Every error body is ``{"detail": "<one string>"}`` (the ``Problem`` schema),
request validation errors included.
"""

from __future__ import annotations

import logging
import sqlite3

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lookalike import errors
from lookalike.image.decode import DecodeError
from lookalike.service.files import DISK_ERRNOS
from lookalike.store.records import StoreError

log = logging.getLogger(__name__)

#: Most specific first: the first class an error is an instance of decides.
STATUS: list[tuple[type[BaseException], int]] = [
    (errors.StorageError, 507),
    (errors.CollectionClosed, 404),
    (errors.NotFound, 404),
    (errors.AlreadyExists, 409),
    (errors.Conflict, 409),
    (errors.Forbidden, 403),
    (errors.ModelUnavailable, 422),
    (errors.Unavailable, 422),
    (errors.InvalidInput, 422),
    (errors.ModelError, 503),
    (errors.StoreUnreachable, 503),
    # a collection file that cannot be used (damaged, too new): nothing the client can change
    (StoreError, 503),
]


class TooLarge(errors.InvalidInput):
    """A request or an uploaded file over the service's limits."""


class UnsupportedMedia(errors.InvalidInput):
    """An upload that is not an image the service accepts."""


class BadUpload(errors.InvalidInput):
    """An uploaded file the decoder refused; the status follows its reason."""

    def __init__(self, filename: str, reason: str) -> None:
        super().__init__(f"{filename}: {reason}")
        self.status = decode_status(reason)


def decode_status(reason: str) -> int:
    if reason.startswith(("file too large", "image too large")):
        return 413
    if reason.startswith(("not a recognised image", "unsupported image format", "empty file")):
        return 415
    return 422


def status_of(exc: BaseException) -> int:
    if isinstance(exc, BadUpload):
        return exc.status
    if isinstance(exc, TooLarge):
        return 413
    if isinstance(exc, UnsupportedMedia):
        return 415
    if isinstance(exc, DecodeError):
        return decode_status(exc.reason)
    for kind, status in STATUS:
        if isinstance(exc, kind):
            return status
    return 500


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def _validation_detail(exc: RequestValidationError) -> str:
    """FastAPI's list of validation errors as one line: ``query.k: must be <= 200; ...``."""
    parts = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error.get("loc", ()))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    """Register the handlers that turn errors into responses."""

    @app.exception_handler(RequestValidationError)
    async def validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _problem(422, _validation_detail(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _problem(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(errors.LookalikeError)
    async def domain(request: Request, exc: errors.LookalikeError) -> JSONResponse:
        status = status_of(exc)
        if status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return _problem(status, str(exc))

    @app.exception_handler(DecodeError)
    async def decode(request: Request, exc: DecodeError) -> JSONResponse:
        return _problem(decode_status(exc.reason), str(exc))

    @app.exception_handler(OSError)
    async def disk(request: Request, exc: OSError) -> JSONResponse:
        if exc.errno in DISK_ERRNOS:
            return _problem(507, f"the server's disk refused the write: {exc.strerror}")
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _problem(500, "internal error")

    @app.exception_handler(sqlite3.OperationalError)
    async def database(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # SQLite says "database or disk is full" rather than raising ENOSPC.
        if "full" in str(exc):
            return _problem(507, "the server's disk is full: the change was not made")
        log.exception("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _problem(500, "internal error")
