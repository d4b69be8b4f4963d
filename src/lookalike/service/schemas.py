"""The API's request and response bodies (pydantic models), as the OpenAPI schema shows them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from lookalike.config import WEAK_MATCH, WEAK_WORDS
from lookalike.encode.models import builtin_models
from lookalike.service.settings import NAME_PATTERN

NAME_HELP = "file name; for an uploaded image, the name it was uploaded under"
FOLDER_HELP = "the file's folder on the server; 'uploaded' for an image uploaded into it"


class Problem(BaseModel):
    """Every error: 4xx and 5xx alike, ``detail`` is one human-readable string."""

    detail: str


class CollectionCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, examples=["catalogue"])
    model: str = Field(
        default="lite0", description=f"built-in model: {', '.join(builtin_models())}"
    )


class CollectionInfo(BaseModel):
    name: str
    images: int
    model: str
    default: bool = Field(description="the collection given with --db")
    deletable: bool
    skipped: int = Field(description="files that could not be indexed, with their reasons")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]
    default: str | None


class Hit(BaseModel):
    id: int
    score: float = Field(
        description="cosine of the query and this image in the collection's common space "
        "(-1..1), whatever ordered the results (rerank and by_category choose the order)"
    )
    name: str = Field(description=NAME_HELP)
    folder: str = Field(description=FOLDER_HELP)
    path: str = Field(description="the indexed file on the server")
    category: str | None = None
    cluster: int | None = None
    box: tuple[float, float, float, float] | None = Field(
        default=None, description="where the object is, relative x0, y0, x1, y1"
    )
    weak: bool = Field(
        default=False,
        description=f"a weak match: score below {WEAK_MATCH} ({WEAK_WORDS} for words alone)",
    )
    same_item: float | None = Field(
        default=None,
        description="calibrated probability that this is the same item as the query (a copy "
        "of it), from the score; null for a model without a calibration",
    )
    same_kind: float | None = Field(
        default=None,
        description="calibrated probability that this is the same kind (category) as the query",
    )
    image_url: str
    thumbnail_url: str


class SearchResponse(BaseModel):
    collection: str
    query_id: int | None = Field(default=None, description="the image searched like, if any")
    query_path: str | None = Field(default=None, description="that image's file on the server")
    query_name: str | None = Field(default=None, description=f"that image's {NAME_HELP}")
    query_folder: str | None = Field(default=None, description=f"that image's {FOLDER_HELP}")
    query_box: tuple[float, float, float, float] | None = Field(
        default=None, description="where the object was found in the query (localize)"
    )
    searched_categories: list[str] | None = Field(
        default=None, description="categories searched (by_category); null: all of them"
    )
    reranked: bool = Field(default=False, description="re-ranked (rerank, enough images)")
    concepts: list[str] | None = Field(
        default=None, description="what the words named (text), as source:name"
    )
    results: list[Hit]
    took_ms: float


class ConceptItem(BaseModel):
    name: str
    source: Literal["label", "imagenet"] = Field(
        description="the collection's own label, or one of the model's ImageNet classes"
    )
    synonyms: list[str] = Field(description="other names that find it (ImageNet)")


class ImageItem(BaseModel):
    id: int
    name: str = Field(description=NAME_HELP)
    folder: str = Field(description=FOLDER_HELP)
    path: str
    category: str | None = None
    cluster: int | None = None
    image_url: str
    thumbnail_url: str


class FacetValue(BaseModel):
    value: str
    count: int = Field(description="images with this value among those listed")


class Facets(BaseModel):
    """How the images listed (the filters applied) divide, most common values first."""

    category: list[FacetValue]
    folder: list[FacetValue]
    cluster: list[FacetValue] = Field(description="cluster ids; -1: noise")


class ImagePage(BaseModel):
    collection: str
    total: int = Field(description="images that pass the filters")
    offset: int
    limit: int
    category: str | None = Field(default=None, description="the category filter, if any")
    folder: str | None = Field(default=None, description="the folder filter, if any")
    cluster: int | None = Field(default=None, description="the cluster filter, if any")
    facets: Facets
    items: list[ImageItem]


class UploadOutcome(BaseModel):
    filename: str
    status: Literal["added", "updated", "unchanged", "skipped"]
    id: int | None = None
    path: str | None = None
    reason: str | None = None


class UploadReport(BaseModel):
    collection: str
    added: int
    results: list[UploadOutcome]


class IndexJobRequest(BaseModel):
    paths: list[str] = Field(
        min_length=1,
        max_length=1000,
        description="absolute folders or files on the server, inside a configured --root",
    )
    all_files: bool = Field(default=False, description="not only image file extensions")


JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class JobInfo(BaseModel):
    id: str
    kind: Literal["index"]
    collection: str
    paths: list[str]
    state: JobState
    done: int = Field(description="files processed so far")
    total: int | None = Field(description="files to process, once known")
    report: dict[str, Any] | None = Field(
        description="added, updated, removed, unchanged, skipped (path, reason), seconds"
    )
    error: str | None
    created: float
    started: float | None
    finished: float | None


class JobList(BaseModel):
    jobs: list[JobInfo]


class Categories(BaseModel):
    collection: str
    categories: dict[str, int] = Field(description="category -> images")


class Clusters(BaseModel):
    collection: str
    clusters: dict[int, int] = Field(description="cluster id -> images")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    collections: int
    default_collection: str | None
    models_loaded: list[str]
    writes_need_token: bool
    server_paths: bool = Field(description="whether indexing server-side folders is allowed")
    max_upload_bytes: int
    file_deletion: bool = Field(
        default=False,
        description="whether removing an image may delete its file on disk (serve "
        "--allow-file-deletion)",
    )
    jobs_queued: int
    jobs_running: int


class DuplicateImage(BaseModel):
    id: int
    name: str = Field(description="file name (an upload's: the name it was uploaded under)")
    folder: str = Field(description='its folder, or "uploaded" for an image uploaded here')
    path: str
    score: float = Field(description="best cosine with another image of the group")
    picture: int = Field(description="which picture of the group (0: the first listed)")
    tier: Literal["keep", "exact", "near", "similar"] = Field(
        description="keep: the copy to keep of picture 0; similar: another shot, the copy to "
        "keep of its picture; exact (same bytes or pixels) or near (the same picture edited): "
        "a copy of its picture's keeper, suggested for removal"
    )
    keep: bool = Field(description="the suggestion: keep it (else remove it)")
    why: str = Field(description="why, for people")
    width: int
    height: int
    format: str | None
    bytes: int
    jpeg_quality: int | None = Field(description="estimated from the file's tables (JPEG only)")
    mtime: float | None = Field(description="seconds since the epoch")
    error: str | None = Field(default=None, description="why the file could not be read")
    image_url: str
    thumbnail_url: str


class DuplicateGroupOut(BaseModel):
    size: int
    tier: Literal["exact", "near", "similar"] = Field(
        description="exact: one picture, exact copies only; near: one picture, edited copies; "
        "similar: several pictures (other shots)"
    )
    pictures: int
    min_score: float
    max_score: float
    images: list[DuplicateImage]


class Duplicates(BaseModel):
    collection: str
    threshold: float
    images: int = Field(description="images in the collection")
    groups: list[DuplicateGroupOut] = Field(description="exact groups first, then near, similar")
