"""The seams: the four replaceable parts of lookalike, as small typed protocols.

A query flows one way through them::

    image --ImageEncoder--> raw vector --VectorCodec--> index vector --VectorIndex--> ids
                                                                   --MetadataStore--> records

- :class:`ImageEncoder`: decoded images -> unit vectors (today :class:`lookalike.models.Embedder`,
  ONNX Runtime; next int8 and text encoders).
- :class:`VectorCodec`: raw vectors -> the vectors the index holds (today
  :class:`lookalike.compression.Pca` or :class:`IdentityCodec`; next float16/int8 storage).
- :class:`VectorIndex`: top-k by inner product with filters and exclusions (today
  :class:`lookalike.vector_index.ExactIndex`; next FAISS approximate indexes).
- :class:`MetadataStore`: files, vectors, labels, fitted models and a monotonic change
  sequence (today :class:`lookalike.store.Store`, SQLite; next PostgreSQL).

Each is a ``typing.Protocol``: an implementation needs no base class, only the methods.
This module imports nothing heavy (NumPy and the standard library), so any part can import it.
See /work/notes/interfaces.md (and README "Layout") for how a new implementation plugs in.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from lookalike.types import Description, IndexCapabilities

if TYPE_CHECKING:
    from PIL import Image

    from lookalike.store import (
        EmbeddedImage,
        FileState,
        ImageRecord,
        SkippedFile,
        VectorChanges,
    )

#: Ids the index may return for a query (sorted ascending, int64); None: every id.
IdFilter = np.ndarray


@runtime_checkable
class ImageEncoder(Protocol):
    """Decoded RGB images -> L2-normalised float32 vectors of one fixed size.

    Must be thread-safe (several query workers share one instance). ``decode_side`` tells the
    decoder the shortest side worth decoding (JPEG draft mode can decode at 1/2..1/8 scale).
    """

    @property
    def decode_side(self) -> int: ...

    def describe(self, images: list[Image.Image]) -> Description:
        """Vectors (N, D) float32 unit rows, and the object box of each image (or None)."""
        ...

    def embed_images(self, images: list[Image.Image]) -> np.ndarray:
        """Only the vectors of :meth:`describe`."""
        ...


@runtime_checkable
class VectorCodec(Protocol):
    """Raw encoder vectors -> index vectors (fitted on the collection, stored with it).

    ``transform`` must be deterministic: the collection's vectors and every query go through
    the same codec object, held together with the index in one search snapshot, so they
    always agree. The store keeps the raw vectors; a codec can be refitted at any time.
    """

    @property
    def dims(self) -> int:
        """Dimensions of the transformed vectors (0: same as the input)."""
        ...

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        """(N, D) raw unit vectors -> (N, d) vectors for the index (unit length for cosine)."""
        ...

    def to_bytes(self) -> bytes: ...


class IdentityCodec:
    """The codec of an uncompressed collection: vectors pass through unchanged."""

    dims = 0

    def transform(self, vectors: np.ndarray) -> np.ndarray:
        return np.atleast_2d(np.asarray(vectors, dtype=np.float32))

    def to_bytes(self) -> bytes:
        return b""


@runtime_checkable
class VectorIndex(Protocol):
    """Nearest neighbours by inner product (cosine on unit vectors), FAISS-style.

    ``add``/``remove`` return the updated index. With ``capabilities.snapshot`` the index they
    were called on stays as it was (searches running on it are not disturbed); otherwise it
    may change in place and returns itself, and must stay safe to search meanwhile.
    """

    @property
    def capabilities(self) -> IndexCapabilities: ...

    @property
    def ids(self) -> np.ndarray:
        """Every id in the index, int64 ascending."""
        ...

    def __len__(self) -> int: ...

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> VectorIndex:
        """Insert rows, replacing rows of the same id."""
        ...

    def remove(self, ids: np.ndarray) -> VectorIndex:
        """Drop rows by id (unknown ids are ignored)."""
        ...

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filter: IdFilter | None = None,
        exclude: Sequence[int | None] | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)``, each (n_queries, k), best first.

        ``filter``: only these ids (sorted int64) may be returned. ``exclude[i]``: an id left
        out of query ``i``'s results (the query image itself in "more like this"). Rows
        shorter than ``k`` are padded with score -inf and id -1.
        """
        ...

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """Stored index vectors of these ids (needs ``capabilities.reconstruct``)."""
        ...

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (needs ``capabilities.persist``)."""
        ...


@runtime_checkable
class MetadataStore(Protocol):
    """The collection's durable state: files, raw vectors, labels, clusters, fitted models.

    Every write is atomic (one transaction). ``vectors_since`` is the change feed that
    indexes follow: its cursor is opaque (pass back ``VectorChanges.latest``; None reads
    everything) and comes from a monotonic sequence, never the wall clock. ``generation``
    changes whenever the set of vectors changes (a cheap "anything new?" check).
    Reads may run on any thread concurrently with one writer.
    """

    # metadata, fitted models
    def get_meta(self, key: str) -> str | None: ...
    def set_meta(self, key: str, value: str) -> None: ...
    def get_artifact(self, name: str) -> bytes | None: ...
    def put_artifact(self, name: str, data: bytes | None) -> None: ...
    def generation(self) -> int: ...

    # files and vectors
    def file_states(self, under: str | None = None) -> dict[str, FileState]: ...
    def write_batch(
        self,
        embedded: Iterable[EmbeddedImage],
        skipped: Iterable[SkippedFile],
        forget: Iterable[str] = (),
    ) -> None: ...
    def remove(self, paths: Iterable[str]) -> int: ...
    def skipped_files(self) -> list[SkippedFile]: ...
    def count(self) -> int: ...
    def load_vectors(self) -> tuple[np.ndarray, np.ndarray]: ...
    def vectors_since(self, cursor: int | None, /) -> VectorChanges: ...
    def lookup(self, path: str) -> tuple[int, np.ndarray] | None: ...
    def paths(self, ids: Iterable[int]) -> dict[int, str]: ...
    def records(self, ids: Iterable[int]) -> dict[int, ImageRecord]: ...

    # labels and clusters
    def set_labels(self, labels: dict[str, str]) -> int: ...
    def labels_generation(self) -> int: ...
    def labelled_ids(self) -> tuple[np.ndarray, list[str]]: ...
    def category_counts(self) -> dict[str, int]: ...
    def set_clusters(self, clusters: dict[int, int]) -> None: ...
    def cluster_counts(self) -> dict[int, int]: ...

    def close(self) -> None: ...
