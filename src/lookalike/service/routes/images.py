"""/collections/{name}/images: list, upload, read, thumbnail, delete."""

from __future__ import annotations

import hashlib
import os
from typing import Annotated

from fastapi import APIRouter, File, Header, Query, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse

from lookalike.errors import NotFound
from lookalike.image.decode import DecodeError
from lookalike.service.core import BrowseFilter
from lookalike.service.errors import TooLarge
from lookalike.service.files import MEDIA_TYPES, sniff_format
from lookalike.service.routes.common import ERRORS, WRITE, ImageId, Name, ServiceDep, read_upload
from lookalike.service.schemas import ImagePage

router = APIRouter(prefix="/collections/{name}/images", tags=["images"], responses=ERRORS)


@router.get("")
def list_images(
    name: Name,
    service: ServiceDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 60,
    category: Annotated[str | None, Query(description="only images of this category")] = None,
    folder: Annotated[
        str | None, Query(description="only images in this folder (as `folder` says it)")
    ] = None,
    cluster: Annotated[int | None, Query(description="only images in this cluster")] = None,
) -> ImagePage:
    """The collection's images, most recently added first, narrowed by category, folder and
    cluster, with how those images divide by each (facets, most common values first)."""
    wanted = BrowseFilter(category=category, folder=folder, cluster=cluster)
    return service.browse(name, wanted, offset, limit)


@router.post(
    "",
    dependencies=WRITE,
    status_code=201,
    responses={200: {"description": "nothing new: every image was known"}},
)
async def add_images(
    name: Name,
    service: ServiceDep,
    files: Annotated[list[UploadFile], File(description="image files (decoded by content)")],
) -> JSONResponse:
    """Upload images and index them. Every file is checked first: one bad file refuses
    the whole request, and nothing changes."""
    if len(files) > service.settings.max_files_per_request:
        raise TooLarge(f"too many files: limit is {service.settings.max_files_per_request}")
    uploads = [(f.filename or "upload", await read_upload(f, service)) for f in files]
    async with service.slots.upload():
        report = await run_in_threadpool(service.store_uploads, name, uploads)
    status = 201 if report.added else 200
    return JSONResponse(report.model_dump(), status_code=status)


@router.get(
    "/{image_id}",
    response_class=FileResponse,
    responses={200: {"content": {"image/*": {}}, "description": "the file"}},
)
def get_image(name: Name, image_id: ImageId, service: ServiceDep) -> FileResponse:
    """The original file, with the media type of its content."""
    with service.collections.lease(name) as collection:
        path = service.servable_path(name, collection, image_id)
    fmt = sniff_format(path)
    if fmt is None:
        raise NotFound(f"image {image_id} is no longer an image")
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[fmt],
        headers={"Cache-Control": "private, max-age=300"},
        content_disposition_type="inline",
        filename=os.path.basename(path),
    )


@router.get(
    "/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}},
)
def get_thumbnail(
    name: Name,
    image_id: ImageId,
    service: ServiceDep,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """A JPEG at most 256 px on a side."""
    with service.collections.lease(name) as collection:
        path = service.servable_path(name, collection, image_id)
    try:
        info = os.stat(path)
    except OSError:
        raise NotFound(f"image {image_id} is no longer readable") from None
    key = (name, image_id, path, info.st_size, info.st_mtime_ns)
    etag = '"' + hashlib.sha256(repr(key).encode()).hexdigest()[:20] + '"'
    headers = {"Cache-Control": "private, max-age=300", "ETag": etag}
    if if_none_match == etag:
        return Response(status_code=304, headers=headers)
    data = service.thumbnails.get(key)
    if data is None:
        try:
            data = service.thumbnail(path)
        except DecodeError as exc:
            raise NotFound(f"image {image_id}: {exc.reason}") from None
        service.thumbnails.put(key, data)
    return Response(data, media_type="image/jpeg", headers=headers)


@router.delete("/{image_id}", status_code=204, dependencies=WRITE)
def delete_image(
    name: Name,
    image_id: ImageId,
    service: ServiceDep,
    delete_file: Annotated[
        bool,
        Query(
            description="delete the file on disk too: only on a server started with "
            "--allow-file-deletion (403 otherwise)"
        ),
    ] = False,
) -> Response:
    """Remove an image from the collection (it is forgotten: the file stays where it is); an
    uploaded file is deleted as well, and with ``delete_file`` any file."""
    service.delete_image(name, image_id, delete_file=delete_file)
    return Response(status_code=204)
