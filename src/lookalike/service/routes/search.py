"""Searching: by an uploaded image, and "more like this" by an indexed image's id."""

from __future__ import annotations

import asyncio
import time
from contextlib import nullcontext
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from lookalike import config
from lookalike.collection import Collection
from lookalike.errors import Conflict, InvalidInput, NotFound
from lookalike.image.decode import DecodeError
from lookalike.search import engine as search
from lookalike.search.engine import Region, Text
from lookalike.search.explain import Explanation
from lookalike.service.batcher import QueryOptions
from lookalike.service.core import Service
from lookalike.service.decoding import file_pixels
from lookalike.service.files import shown_folder, shown_name
from lookalike.service.routes.common import (
    ERRORS,
    ByCategory,
    ImageId,
    K,
    LocalizeQuery,
    MinScore,
    Name,
    RegionQuery,
    Rerank,
    ServiceDep,
    read_upload,
    region,
)
from lookalike.service.schemas import ConceptItem, SearchResponse

#: What searching a collection without images answers (409).
EMPTY = "this collection is empty: add images first"

router = APIRouter(prefix="/collections/{name}", tags=["search"], responses=ERRORS)
#: Routes about a query that no collection is needed for.
query_router = APIRouter(tags=["search"], responses=ERRORS)


@query_router.post(
    "/preview",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}},
)
async def preview_upload(
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="the query image")],
) -> Response:
    """A JPEG of an uploaded image as searches see it (turned upright, at most
    ``PREVIEW_SIDE`` px a side), for a browser that cannot draw the file itself (HEIC). A file
    that is not an image answers 415, as searching with it does."""
    data = await read_upload(file, service)
    async with service.slots.search(data):
        jpeg = await run_in_threadpool(service.preview, data, file.filename or "upload")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})


Words = Annotated[
    str | None,
    Query(
        max_length=1000,
        description="search by words: ImageNet concepts and the collection's labels, a fixed "
        "vocabulary (GET .../concepts lists it; several: commas). With a file: the images "
        "most like it among those the words find. A word that names nothing: 422, with the "
        "nearest known names",
        examples=["golden retriever"],
    ),
]
MatchQuery = Annotated[
    Literal["all", "any"],
    Query(description="several words: images showing all of them, or any one"),
]


@router.post("/search")
async def search_by_upload(
    name: Name,
    service: ServiceDep,
    file: Annotated[UploadFile | None, File(description="the query image")] = None,
    k: K = config.DEFAULT_K,
    min_score: MinScore = None,
    by_category: ByCategory = False,
    localize: LocalizeQuery = None,
    box: RegionQuery = None,
    rerank: Rerank = False,
    text: Words = None,
    match: MatchQuery = "all",
) -> SearchResponse:
    """The indexed images most like an uploaded one (or the ``box`` region of it), or that
    the words of ``text`` name, or both, best first, described and searched as `lookalike
    search` and `Collection.search` do (through the query batcher). Needs no token. An
    empty collection answers 409."""
    started = time.perf_counter()
    if file is None and text is None:
        raise InvalidInput("nothing to search for: send a file, text, or both")
    part = region(box)
    data = await read_upload(file, service) if file is not None else None
    ranking = search.SearchOptions(k=k, min_score=min_score, by_category=by_category, rerank=rerank)
    options = QueryOptions(ranking, localize)
    with service.collections.lease(name) as collection:
        if len(collection) == 0:
            raise Conflict(EMPTY)
        batcher = await run_in_threadpool(service.batcher, collection.spec)
        photo: Image.Image | Region | None = None
        if data is not None:
            assert file is not None
            # decoded as the library decodes a query file (see lookalike.search.engine.Region)
            setting = collection.query_localization(localize)
            encoder = await run_in_threadpool(collection.query_embedder, setting)
            side = search.decode_side(encoder, region=part is not None)
            async with service.slots.search(data):
                image = await run_in_threadpool(
                    service.decode_query, data, file.filename or "upload", side
                )
            photo = image if part is None else Region(image, part)
        query: Image.Image | Region | Text
        if text is not None:
            query = Text(text, match, like=photo)
        else:
            assert photo is not None
            query = photo
        outcome = await asyncio.wrap_future(batcher.submit(collection, query, options))
    return SearchResponse(
        collection=name,
        query_box=outcome.query_box,
        searched_categories=outcome.searched,
        reranked=outcome.reranked,
        concepts=outcome.concepts,
        results=service.hits(name, outcome.results, outcome.weak_below),
        took_ms=round((time.perf_counter() - started) * 1000, 2),
    )


@router.get("/concepts")
def concepts(name: Name, service: ServiceDep) -> list[ConceptItem]:
    """What ``text`` can name in this collection: its labels (two or more are needed), then
    the model's ImageNet classes with their synonyms. Search by words is concept search over
    this fixed vocabulary, not free text."""
    with service.collections.lease(name) as collection:
        found = collection.concepts()
    return [ConceptItem(name=c.name, source=c.source, synonyms=list(c.synonyms)) for c in found]


@router.get("/images/{image_id}/similar")
def more_like_this(
    name: Name,
    image_id: ImageId,
    service: ServiceDep,
    k: K = config.DEFAULT_K,
    min_score: MinScore = None,
    by_category: ByCategory = False,
    box: RegionQuery = None,
    rerank: Rerank = False,
) -> SearchResponse:
    """More like this: the indexed images most like an indexed one (or the ``box`` region of
    it), itself left out."""
    started = time.perf_counter()
    part = region(box)
    with service.collections.lease(name) as collection:
        path = service.servable_path(name, collection, image_id)
        # The library's "more like this": an indexed file searches with its stored vector
        # and is left out of its results (should the file have changed since, with its
        # content). A region of it is decoded and described afresh (and left out too).
        try:
            query: search.Query = path if part is None else Region(path, part)
            # a region is decoded from the stored file: in a decode slot, as every decode
            decoding = service.decodes.for_file(path) if part is not None else nullcontext()
            with decoding:
                outcome = service.search_direct(
                    collection,
                    query,
                    k=k + 1,
                    min_score=min_score,
                    by_category=by_category,
                    rerank=rerank,
                )
        except DecodeError as exc:
            raise NotFound(f"image {image_id} is no longer readable: {exc}") from None
    results = [r for r in outcome.results if r.id != image_id][:k]
    uploads = service.collections.files_dir(name)
    return SearchResponse(
        collection=name,
        query_id=image_id,
        query_path=path,
        query_name=shown_name(path, uploads),
        query_folder=shown_folder(path, uploads),
        searched_categories=outcome.searched,
        reranked=outcome.reranked,
        results=service.hits(name, results),
        took_ms=round((time.perf_counter() - started) * 1000, 2),
    )


Stacked = Annotated[
    bool, Query(description="draw the two images one above the other (for narrow screens)")
]
PNG: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/png": {}}, "description": "query and result, heat drawn over both"}
}


@router.post("/images/{image_id}/explain", response_class=Response, responses=PNG)
async def explain_upload(
    name: Name,
    image_id: ImageId,
    service: ServiceDep,
    file: Annotated[UploadFile, File(description="the query image")],
    box: RegionQuery = None,
    stacked: Stacked = False,
) -> Response:
    """Why the indexed image ``image_id`` is like an uploaded one (or its ``box`` region):
    a PNG of both images with each feature-map cell's part of their score drawn over them
    (`lookalike search --explain`, `Collection.explain`). Needs no token."""
    part = region(box)
    data = await read_upload(file, service)
    filename = file.filename or "upload"
    with service.collections.lease(name) as collection:
        result = service.servable_path(name, collection, image_id)
        side = search.decode_side(collection.embedder, region=part is not None)
        async with service.slots.search(data):
            image = await run_in_threadpool(service.decode_query, data, filename, side)
            query = image if part is None else Region(image, part)
            explained = await run_in_threadpool(
                explained_in_slot, service, collection, query, image_id, [result], stacked
            )
            png = await run_in_threadpool(explained.png)
    return Response(png, media_type="image/png", headers={"X-Score": f"{explained.score:.6f}"})


@router.get("/images/{image_id}/explain", response_class=Response, responses=PNG)
def explain_indexed(
    name: Name,
    image_id: ImageId,
    service: ServiceDep,
    query_id: Annotated[int, Query(ge=1, le=2**63 - 1, description="the indexed query image")],
    box: RegionQuery = None,
    stacked: Stacked = False,
) -> Response:
    """Why the indexed image ``image_id`` is like the indexed image ``query_id`` (or its
    ``box`` region), as a PNG (see the POST form)."""
    part = region(box)
    with service.collections.lease(name) as collection:
        result = service.servable_path(name, collection, image_id)
        path = service.servable_path(name, collection, query_id)
        try:
            query = path if part is None else Region(path, part)
            explained = explained_in_slot(
                service, collection, query, image_id, [result, path], stacked
            )
        except DecodeError as exc:
            raise NotFound(f"an image is no longer readable: {exc}") from None
        png = explained.png()
    return Response(png, media_type="image/png", headers={"X-Score": f"{explained.score:.6f}"})


def explained_in_slot(
    service: Service,
    collection: Collection,
    query: Image.Image | Region | str,
    image_id: int,
    files: list[str],
    stacked: bool,
) -> Explanation:
    """``collection.explain`` holding one decode slot, sized by the largest of the stored
    ``files`` it decodes (see :mod:`lookalike.service.decoding`)."""
    with service.decodes.hold(max(file_pixels(path) for path in files)):
        return collection.explain(query, image_id, stacked=stacked)
