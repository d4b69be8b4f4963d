"""/collections/{name}/duplicates: near-duplicate groups in tiers, with the copies to keep."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from lookalike import config
from lookalike.service.files import shown_folder, shown_name
from lookalike.service.routes.common import ERRORS, Name, ServiceDep
from lookalike.service.schemas import DuplicateGroupOut, DuplicateImage, Duplicates

router = APIRouter(prefix="/collections/{name}", tags=["collections"], responses=ERRORS)


@router.get("/duplicates")
def duplicates(
    name: Name,
    service: ServiceDep,
    threshold: Annotated[
        float,
        Query(gt=0.0, le=1.0, description="lowest cosine of two images in one group"),
    ] = config.DUPLICATE_THRESHOLD,
) -> Duplicates:
    """Groups of near-duplicates (:meth:`lookalike.Collection.duplicates`): each sorted into
    exact copies, near-duplicates and other shots, with the copy to keep and why. Every
    grouped file is read once, so a large collection takes a while."""
    with service.collections.lease(name) as collection:
        groups = collection.duplicates(threshold)
        images = len(collection)
    uploads = service.collections.files_dir(name)
    found = [
        DuplicateGroupOut(
            size=len(g),
            tier=g.tier or "similar",
            pictures=g.pictures,
            min_score=round(g.min_score, 6),
            max_score=round(g.max_score, 6),
            images=[
                DuplicateImage(
                    id=m.id,
                    name=shown_name(m.path, uploads),
                    folder=shown_folder(m.path, uploads),
                    path=m.path,
                    score=round(m.score, 6),
                    picture=m.picture,
                    tier=m.tier,
                    keep=m.keep,
                    why=m.why,
                    width=m.facts.width,
                    height=m.facts.height,
                    format=m.facts.format,
                    bytes=m.facts.bytes,
                    jpeg_quality=m.facts.jpeg_quality,
                    mtime=m.facts.mtime_ns / 1e9 if m.facts.mtime_ns else None,
                    error=m.facts.error,
                    image_url=f"/collections/{name}/images/{m.id}",
                    thumbnail_url=f"/collections/{name}/images/{m.id}/thumbnail",
                )
                for m in g.members
            ],
        )
        for g in groups
    ]
    return Duplicates(collection=name, threshold=threshold, images=images, groups=found)
