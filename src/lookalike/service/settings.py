"""What ``lookalike serve`` can be told; the defaults are the safe ones."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from lookalike import config

#: Collection names: also file names, so no dots, slashes or spaces.
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
NAME_RE = re.compile(NAME_PATTERN)


@dataclass
class ServiceSettings:
    """Everything ``lookalike serve`` can be told; the defaults are the safe ones."""

    collections_dir: Path = field(default_factory=config.collections_dir)
    #: One more collection file to serve (and the page's default), named after its stem.
    db: Path | str | None = None  # a file, or a store URL (postgresql://...#name)
    #: Folders inside which server-side paths may be indexed; none: no server-side paths.
    roots: list[Path] = field(default_factory=list)
    #: Required as ``Authorization: Bearer <token>`` for every write when set.
    token: str | None = None
    max_upload_bytes: int = config.MAX_UPLOAD_BYTES
    max_upload_pixels: int = config.MAX_UPLOAD_PIXELS
    #: Images in one upload request when adding (each within ``max_upload_bytes``) ...
    max_files_per_request: int = config.MAX_FILES_PER_REQUEST
    #: ... and all of them together, since they are checked in memory before anything is kept.
    max_request_bytes: int = config.MAX_REQUEST_BYTES
    #: Host headers accepted (DNS rebinding); None accepts any.
    allowed_hosts: list[str] | None = None
    #: Threads embedding queries, each with one core; default: one per core.
    search_workers: int = 0
    #: Most queries embedded in one model run.
    max_batch: int = config.SEARCH_MAX_BATCH
    #: Thumbnails kept in memory.
    thumbnail_cache: int = config.THUMBNAIL_CACHE
    #: Load the default model and open every collection at start (off in some tests).
    warm_up: bool = True
    #: Upload requests being checked and indexed at once (more wait, holding no thread).
    max_concurrent_uploads: int = field(default_factory=lambda: 2 * (os.cpu_count() or 1))
    #: A query image with more pixels than this (read from its header) waits for the one
    #: decode slot of large images, so that a few huge images cannot hold up ordinary searches.
    large_image_pixels: int = config.LARGE_QUERY_PIXELS
    #: Let DELETE .../images/{id}?delete_file=true delete the indexed file on disk too (the
    #: review of duplicates); off: a removed image is only forgotten by the collection.
    allow_file_deletion: bool = False
