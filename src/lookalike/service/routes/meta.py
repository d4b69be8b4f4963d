"""The page, the offline API docs, health and metrics."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, PlainTextResponse

import lookalike
from lookalike.service.routes.common import ServiceDep
from lookalike.service.schemas import Health

WEB_DIR = Path(__file__).parents[2] / "web"

PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
}

router = APIRouter()


@router.get("/", include_in_schema=False)
def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=PAGE_HEADERS)


@router.get("/docs", include_in_schema=False)
def docs(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=request.app.openapi_url or "/openapi.json",
        title="lookalike API",
        swagger_js_url="/docs-assets/swagger-ui-bundle.js",
        swagger_css_url="/docs-assets/swagger-ui.css",
        swagger_favicon_url="/docs-assets/favicon-32x32.png",
    )


@router.get("/health", tags=["service"])
def health(service: ServiceDep) -> Health:
    counts = service.jobs.counts() if service.jobs else Counter()
    return Health(
        status="ok",
        version=lookalike.__version__,
        collections=len(service.collections.names()),
        default_collection=service.collections.default,
        models_loaded=service.models_loaded(),
        writes_need_token=service.settings.token is not None,
        server_paths=bool(service.roots),
        max_upload_bytes=service.settings.max_upload_bytes,
        file_deletion=service.settings.allow_file_deletion,
        jobs_queued=counts["queued"],
        jobs_running=counts["running"],
    )


@router.get("/metrics", tags=["service"], response_class=PlainTextResponse)
def metrics(service: ServiceDep) -> PlainTextResponse:
    """Prometheus text format: requests, latency, jobs, search queue, images."""
    return PlainTextResponse(
        service.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
    )
