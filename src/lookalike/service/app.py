"""The ASGI app: routes, error handlers, the request guard; and running it."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware
from swagger_ui_bundle import swagger_ui_path

import lookalike
from lookalike.service import errors
from lookalike.service.core import Service
from lookalike.service.routes import collections, duplicates, images, jobs, meta, search
from lookalike.service.routes.meta import WEB_DIR
from lookalike.service.security import Guard, is_loopback
from lookalike.service.settings import ServiceSettings

log = logging.getLogger(__name__)


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The ASGI app: the API, its OpenAPI docs at /docs, and the web page at /."""
    service = Service(settings or ServiceSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="lookalike",
        version=lookalike.__version__,
        summary="Search a collection of images by image.",
        description=(
            "Writes need `Authorization: Bearer <token>` when the server has a token; "
            'reads, and searching by upload, do not. Errors are `{"detail": "..."}`.'
        ),
        lifespan=lifespan,
        docs_url=None,  # served from local files (routes/meta.py): FastAPI's default loads a CDN
    )
    app.state.service = service
    errors.install(app)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    # Swagger UI's files come from the swagger-ui-bundle-v2 package, so /docs works offline.
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    for module in (meta, collections, duplicates, images, search, jobs):
        app.include_router(module.router)
    app.include_router(search.query_router)
    guarded: Any = Guard
    app.add_middleware(guarded, service=service)
    if settings is not None and settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    return app


def serve(
    settings: ServiceSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    insecure_public: bool = False,
    access_log: bool = False,
) -> None:
    """Run the service until interrupted. Refuses a public address without a token unless
    ``insecure_public``."""
    import uvicorn

    from lookalike.service.http import uvicorn_options

    if not is_loopback(host):
        if settings.token is None and not insecure_public:
            raise ValueError(
                f"refusing to serve on {host} without an API token: set LOOKALIKE_TOKEN or "
                "--token-file, or pass --insecure-public"
            )
    elif settings.allowed_hosts is None:
        # Only local names: a web page elsewhere cannot reach this server through a DNS name
        # pointed at 127.0.0.1 (DNS rebinding).
        settings.allowed_hosts = ["127.0.0.1", "localhost", "[::1]", "::1"]
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    log.info("serving on http://%s:%d (API docs at /docs)", shown, port)
    uvicorn.run(
        app, host=host, port=port, log_config=None, access_log=access_log, **uvicorn_options()
    )
