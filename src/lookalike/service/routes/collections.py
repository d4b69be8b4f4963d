"""/collections: list, create, read, delete; categories and clusters."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Response

from lookalike.errors import LookalikeError
from lookalike.service.routes.common import ERRORS, WRITE, Name, ServiceDep
from lookalike.service.schemas import (
    Categories,
    Clusters,
    CollectionCreate,
    CollectionInfo,
    CollectionList,
)

log = logging.getLogger(__name__)

router = APIRouter(prefix="/collections", tags=["collections"], responses=ERRORS)


@router.get("")
def list_collections(service: ServiceDep) -> CollectionList:
    infos = []
    for name in service.collections.names():
        try:
            infos.append(service.info(name))
        except (LookalikeError, RuntimeError, ValueError, OSError) as exc:
            log.warning("cannot open collection %s: %s", name, exc)
    return CollectionList(collections=infos, default=service.collections.default)


@router.post("", status_code=201, dependencies=WRITE)
def create_collection(body: CollectionCreate, service: ServiceDep) -> CollectionInfo:
    return service.create_collection(body.name, body.model)


@router.get("/{name}")
def get_collection(name: Name, service: ServiceDep) -> CollectionInfo:
    return service.info(name)


@router.delete("/{name}", status_code=204, dependencies=WRITE)
def delete_collection(name: Name, service: ServiceDep) -> Response:
    """Delete a collection, its index and the images uploaded into it (never files indexed
    from server folders). Requests already using it finish first."""
    service.delete_collection(name)
    return Response(status_code=204)


@router.get("/{name}/categories")
def categories(name: Name, service: ServiceDep) -> Categories:
    with service.collections.lease(name) as collection:
        return Categories(collection=name, categories=collection.categories())


@router.get("/{name}/clusters")
def clusters(name: Name, service: ServiceDep) -> Clusters:
    with service.collections.lease(name) as collection:
        return Clusters(collection=name, clusters=collection.clusters())
