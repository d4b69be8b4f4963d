"""The records every store reads and writes (shared by the SQLite and PostgreSQL stores and
by the parts above them), and the store's own error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lookalike.errors import LookalikeError
from lookalike.types import Box


@dataclass(frozen=True)
class FileState:
    """What the store knows of a file: its size and mtime when seen, and whether it was bad."""

    size: int
    mtime_ns: int
    skipped: bool


@dataclass(frozen=True)
class VectorChanges:
    """What :meth:`Store.vectors_since` found: the ids now indexed (None when no image was
    removed after the cursor: the ids held plus the rows are all there is), the rows (ids
    ascending, vectors; None if no row) written after the given cursor, and ``latest``, the
    cursor to pass next time (the store's change sequence number at the time of the read)."""

    all_ids: np.ndarray | None
    ids: np.ndarray
    vectors: np.ndarray | None
    latest: int


@dataclass(frozen=True)
class EmbeddedImage:
    path: str
    size: int
    mtime_ns: int
    width: int
    height: int
    vector: np.ndarray
    box: Box | None = None  # where the object was found, when localization is on


@dataclass(frozen=True)
class ImageRecord:
    """What search results show of an indexed image."""

    id: int
    path: str
    width: int
    height: int
    category: str | None
    cluster: int | None
    box: Box | None


@dataclass(frozen=True)
class SkippedFile:
    path: str
    size: int
    mtime_ns: int
    reason: str


class StoreError(LookalikeError, RuntimeError):
    """The collection file cannot be used: not a database, a folder, damaged, too new."""


class NotACollection(StoreError):
    """A file or schema that is not a lookalike collection (another application's): it is
    left as it is."""
