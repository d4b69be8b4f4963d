"""What the routes share: parameter types, error responses, the service dependency."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Depends, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.security import HTTPBearer

from lookalike.errors import InvalidInput
from lookalike.image.region import parse_box
from lookalike.service.core import Service
from lookalike.service.errors import TooLarge
from lookalike.service.schemas import Problem
from lookalike.service.settings import NAME_PATTERN

#: Error responses every route may give, documented with the one error body.
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem} for status in (400, 401, 403, 404, 409, 413, 415, 422, 507)
}


def service_of(request: Request) -> Service:
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(service_of)]
#: Routes that change something show the token in the docs (the Guard checks it).
WRITE = [Depends(HTTPBearer(auto_error=False, description="the server's API token"))]

Name = Annotated[str, PathParam(pattern=NAME_PATTERN, description="collection name")]
ImageId = Annotated[int, PathParam(ge=1, le=2**63 - 1, description="image id")]
K = Annotated[int, Query(ge=1, le=200, description="results wanted")]
MinScore = Annotated[
    float | None, Query(ge=-1.0, le=1.0, description="leave out results scoring lower")
]
ByCategory = Annotated[bool, Query(description="only results of the query's predicted category")]
Rerank = Annotated[
    bool,
    Query(
        description="re-rank (database-side augmentation + query expansion) after the best "
        "match, which stays first: for collections of categories; a plain search below a few "
        "images"
    ),
]
RegionQuery = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+$",
        description="search only this region of the query: x0,y0,x1,y1 as fractions 0..1",
        examples=["0.1,0.2,0.6,0.9"],
    ),
]
LocalizeQuery = Annotated[
    Literal["none", "mask", "crop", "saliency", "border"] | None,
    Query(
        description="find the object in the query photo first (crop: best for a photo of an "
        "object in a scene searched against clean catalogue images)"
    ),
]


def region(box: str | None) -> tuple[float, float, float, float] | None:
    """The ``box`` parameter, checked (a clear 422 when it is not a box)."""
    try:
        return parse_box(box) if box is not None else None
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


async def read_upload(file: UploadFile, service: Service) -> bytes:
    limit = service.settings.max_upload_bytes
    if file.size is not None and file.size > limit:
        raise TooLarge(f"{file.filename}: file too large: limit is {limit} bytes")
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise TooLarge(f"{file.filename}: file too large: limit is {limit} bytes")
    return data
