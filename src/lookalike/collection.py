"""The library API: a collection of indexed images in one SQLite file.

>>> from lookalike import Collection
>>> with Collection.open("photos.db") as photos:
...     photos.add(["~/Pictures"])
...     for hit in photos.search("query.jpg", k=5):
...         print(hit.score, hit.path)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from lookalike import config, indexer
from lookalike.decode import load_image
from lookalike.indexer import IndexReport, Plan
from lookalike.models import Embedder, ModelSpec, builtin_spec
from lookalike.search import SearchResult, top_k
from lookalike.store import Store
from lookalike.vector_index import ExactIndex

#: What can be searched with: a file path (an indexed file searches "more like this" with
#: its stored vector), encoded image bytes, a decoded image, or a vector.
Query = str | os.PathLike[str] | bytes | Image.Image | np.ndarray


class Collection:
    """Images indexed with one model, stored in one SQLite file."""

    def __init__(self, store: Store, spec: ModelSpec) -> None:
        self.store = store
        self.spec = spec
        self._embedder: Embedder | None = None
        self._index_embedder: Embedder | None = None
        self._index: ExactIndex | None = None
        self._index_generation = -1

    @classmethod
    def open(
        cls, path: str | os.PathLike[str] | None = None, *, model: str | ModelSpec | None = None
    ) -> Collection:
        """Open or create the collection at ``path`` (default: :func:`config.default_db`).

        A new collection uses ``model`` (default: EfficientNet-Lite0); an existing one keeps
        the model it was built with, and asking for another one is an error, since vectors of
        different models cannot be compared.
        """
        path = Path(path).expanduser() if path is not None else config.default_db()
        store = Store(path)
        wanted = builtin_spec(model) if isinstance(model, str) else model
        stored = store.get_meta("model")
        if stored is None:
            spec = wanted or builtin_spec(config.DEFAULT_MODEL)
            store.set_meta("model", spec.to_json())
        else:
            spec = ModelSpec.from_json(stored)
            if wanted is not None and wanted != spec:
                store.close()
                raise ValueError(
                    f"{path} was built with {spec.name}, not {wanted.name}; "
                    "use another --db for another model"
                )
        return cls(store, spec)

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Collection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self.store.count()

    @property
    def embedder(self) -> Embedder:
        """The model for queries, using every core for one image at a time; loaded on first
        use (opening a collection to list it stays instant)."""
        if self._embedder is None:
            self._embedder = Embedder(self.spec)
        return self._embedder

    @property
    def index_embedder(self) -> Embedder:
        """The model for indexing: one core per run, several runs at once (see indexer.run)."""
        if self._index_embedder is None:
            self._index_embedder = Embedder(self.spec, threads=1)
        return self._index_embedder

    # --- indexing --------------------------------------------------------------------------

    def plan(self, paths: Iterable[str | os.PathLike[str]], *, all_files: bool = False) -> Plan:
        """What ``add`` would do: new or changed files to embed, vanished ones to drop."""
        candidates, folders = indexer.candidates_for(paths, all_files=all_files)
        return indexer.plan(self.store, candidates, folders)

    def add(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        all_files: bool = False,
        batch_size: int = config.BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
        work: Plan | None = None,
    ) -> IndexReport:
        """Index files and folders (recursively). Incremental: unchanged files are skipped,
        changed ones re-embedded, and files gone from a given folder are removed."""
        work = work or self.plan(paths, all_files=all_files)
        if not work.todo and not work.vanished:
            return IndexReport(unchanged=work.unchanged)
        return indexer.run(
            self.store, self.index_embedder, work, batch_size=batch_size, progress=progress
        )

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove files, or every file below folders, from the index; returns the count."""
        doomed: list[str] = []
        for raw in paths:
            path = os.path.abspath(raw)
            doomed.append(path)
            doomed.extend(self.store.file_states(path))
        return self.store.remove(doomed)

    # --- searching -------------------------------------------------------------------------

    def index(self) -> ExactIndex:
        """The vector index, reloaded from the store when the store has changed."""
        generation = self.store.generation()
        if self._index is None or generation != self._index_generation:
            ids, vectors = self.store.load_vectors()
            self._index = ExactIndex(ids, vectors)
            self._index_generation = generation
        return self._index

    def query_vectors(self, queries: Sequence[Query]) -> tuple[np.ndarray, list[int | None]]:
        """Vectors of the queries, and for each the id of the indexed image it is, if any."""
        vectors: list[np.ndarray | None] = [None] * len(queries)
        own_ids: list[int | None] = [None] * len(queries)
        to_embed: list[tuple[int, Image.Image]] = []
        for i, query in enumerate(queries):
            if isinstance(query, np.ndarray):
                vectors[i] = np.asarray(query, dtype=np.float32).ravel()
                continue
            if isinstance(query, (str, os.PathLike)):
                found = self.store.lookup(os.path.abspath(query))
                if found is not None:
                    own_ids[i], vectors[i] = found
                    continue
            image = query if isinstance(query, Image.Image) else self._decode(query)
            to_embed.append((i, image.convert("RGB")))
        if to_embed:
            embedded = self.embedder.embed_images([image for _, image in to_embed])
            for (i, _), vector in zip(to_embed, embedded, strict=True):
                vectors[i] = vector
        return np.stack([v for v in vectors if v is not None]), own_ids

    def _decode(self, query: str | os.PathLike[str] | bytes) -> Image.Image:
        source = query if isinstance(query, bytes) else os.fspath(query)
        return load_image(source, min_side=self.spec.input_size)

    def search_many(
        self, queries: Sequence[Query], *, k: int = config.DEFAULT_K, min_score: float | None = None
    ) -> list[list[SearchResult]]:
        """Top-``k`` most similar indexed images for each query, best first.

        Raises :class:`lookalike.decode.DecodeError` if a query is not a usable image.
        A query that is itself an indexed file is left out of its own results.
        """
        if not queries:
            return []
        vectors, own_ids = self.query_vectors(queries)
        return top_k(self.store, self.index(), vectors, k=k, min_score=min_score, exclude=own_ids)

    def search(
        self, query: Query, *, k: int = config.DEFAULT_K, min_score: float | None = None
    ) -> list[SearchResult]:
        """Top-``k`` most similar indexed images, best first (see :meth:`search_many`)."""
        return self.search_many([query], k=k, min_score=min_score)[0]
