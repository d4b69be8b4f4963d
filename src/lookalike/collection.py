"""The library API: a collection of indexed images in one SQLite file.

>>> from lookalike import Collection
>>> with Collection.open("photos.db") as photos:
...     photos.add(["~/Pictures"])
...     for hit in photos.search("query.jpg", k=5):
...         print(hit.score, hit.path)
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np
from PIL import Image

from lookalike import clustering, compression, config, duplicates, indexer
from lookalike.categories import (
    DEFAULT_COVERAGE,
    DEFAULT_MAX_CATEGORIES,
    CategoryModel,
    choose_categories,
    fit_classifier,
)
from lookalike.compression import Pca
from lookalike.decode import load_image
from lookalike.errors import EmptyCollectionError, NoCollectionError, NotInCollectionError
from lookalike.features import Localize
from lookalike.indexer import IndexReport, Plan
from lookalike.models import DESCRIPTOR_VERSION, Embedder, ModelSpec, builtin_spec
from lookalike.paths import existing_paths, expand_paths
from lookalike.search import QueryOutcome, SearchResult, results_for
from lookalike.store import Box, Store, VectorChanges
from lookalike.vector_index import ExactIndex

log = logging.getLogger(__name__)

#: What can be searched with: a file path (an indexed file searches "more like this" with
#: its stored vector), encoded image bytes, a decoded image, or a vector.
Query = str | os.PathLike[str] | bytes | Image.Image | np.ndarray


class Collection:
    """Images indexed with one model, stored in one SQLite file."""

    def __init__(self, store: Store, spec: ModelSpec) -> None:
        self.store = store
        self.spec = spec
        self._embedder: Embedder | None = None
        self._query_embedders: dict[str, Embedder] = {}
        self._index_embedder: Embedder | None = None
        self._index: ExactIndex | None = None
        self._index_key: tuple[object, ...] = (None, None)
        self._loaded_until = -np.inf  # indexed_at of the newest row in the loaded index
        self._pca: Pca | None = None
        self._partition: _Partition | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        model: str | ModelSpec | None = None,
        create: bool = True,
    ) -> Collection:
        """Open or create the collection at ``path`` (default: :func:`config.default_db`).

        With ``create=False`` a missing collection raises
        :class:`~lookalike.errors.NoCollectionError` and nothing is created on disk.

        A new collection uses ``model`` (default: EfficientNet-Lite0); an existing one keeps
        the model it was built with, and asking for another one is an error, since vectors of
        different models cannot be compared.
        """
        path = Path(path).expanduser() if path is not None else config.default_db()
        if not create and not path.is_file():
            raise NoCollectionError(path)
        store = Store(path)
        wanted = builtin_spec(model) if isinstance(model, str) else model
        stored = store.get_meta("model")
        if stored is None:
            spec = wanted or builtin_spec(config.DEFAULT_MODEL)
            store.set_meta("model", spec.to_json())
        else:
            spec = ModelSpec.from_json(stored)
            if spec.descriptor_version != DESCRIPTOR_VERSION:
                log.warning(
                    "%s was indexed by another version of lookalike's image descriptors "
                    "(%s, now %s): its vectors may not match new queries; index it again "
                    "into a new --db",
                    path,
                    spec.descriptor_version,
                    DESCRIPTOR_VERSION,
                )
                spec = dataclasses.replace(spec, descriptor_version=DESCRIPTOR_VERSION)
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
        """What ``add`` would do: new or changed files to embed, vanished ones to drop.

        ``~`` is expanded; a path that does not exist raises
        :class:`~lookalike.errors.MissingPathError` (a ``FileNotFoundError``) naming it.
        """
        left_out: Counter[str] = Counter()
        candidates, folders = indexer.candidates_for(
            existing_paths(paths), all_files=all_files, left_out=left_out
        )
        work = indexer.plan(self.store, candidates, folders)
        return dataclasses.replace(work, left_out=dict(sorted(left_out.items())))

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
            report = IndexReport(
                unchanged=work.unchanged, skipped_before=work.skipped_before, left_out=work.left_out
            )
        else:
            report = indexer.run(
                self.store, self.index_embedder, work, batch_size=batch_size, progress=progress
            )
        self.refresh_models()
        return report

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove files, or every file below folders, from the index; returns the count.

        Paths of which the collection knows nothing (neither indexed nor holding indexed
        files) raise :class:`~lookalike.errors.NotInCollectionError`, and nothing is removed.
        """
        doomed: list[str] = []
        unknown: list[str] = []
        for path in expand_paths(paths):
            below = self.store.file_states(path)
            if not below and path not in self.store.file_states(os.path.dirname(path)):
                unknown.append(path)
            doomed.append(path)
            doomed.extend(below)
        if unknown:
            raise NotInCollectionError(unknown)
        removed = self.store.remove(doomed)
        self.refresh_models()
        return removed

    # --- categories and compression: models fitted on the collection -----------------------

    def set_labels(self, labels: dict[str, str]) -> int:
        """Give files (absolute paths, indexed or not yet) a category; retrains the
        category classifier if anything changed. Returns how many labels changed."""
        changed = self.store.set_labels({os.path.abspath(p): c for p, c in labels.items()})
        self.refresh_models()
        return changed

    def categories(self) -> dict[str, int]:
        """Category -> number of indexed images with that label."""
        return self.store.category_counts()

    def classifier(self) -> CategoryModel | None:
        data = self.store.get_artifact("classifier")
        return CategoryModel.from_bytes(data) if data else None

    def set_compression(self, dims: int | None, *, whiten: bool = False) -> None:
        """Compress the search index with PCA to ``dims`` (None: no compression)."""
        self.store.set_meta("pca", json.dumps({"dims": dims, "whiten": whiten} if dims else {}))
        self.store.put_artifact("pca", None)
        self._bump_pca_generation()
        self.refresh_models()

    def _bump_pca_generation(self) -> None:
        """Tell loaded indexes (this process's and others') that the PCA changed."""
        self.store.set_meta(
            "pca_generation", str(int(self.store.get_meta("pca_generation") or 0) + 1)
        )

    def pca(self) -> Pca | None:
        data = self.store.get_artifact("pca")
        return Pca.from_bytes(data) if data else None

    def refresh_models(self) -> None:
        """Refit what the collection's changes made stale: the PCA (when the collection grew
        or shrank by over 10%) and the category classifier (when labels or images changed)."""
        loaded: list[tuple[np.ndarray, np.ndarray]] = []

        def vectors() -> tuple[np.ndarray, np.ndarray]:
            """All stored vectors, read once however many models need them."""
            if not loaded:
                loaded.append(self.store.load_vectors())
            return loaded[0]

        self._refresh_pca(vectors)
        self._refresh_classifier(vectors)

    def _refresh_pca(self, vectors: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        settings = json.loads(self.store.get_meta("pca") or "{}")
        if not settings:
            return
        current = self.pca()
        count = len(self)
        if current is not None and not compression.is_stale(current, count):
            return
        if count < 2:
            return
        fitted = compression.fit(vectors()[1], settings["dims"], whiten=settings["whiten"])
        self.store.put_artifact("pca", fitted.to_bytes())
        self._bump_pca_generation()

    def _refresh_classifier(self, vectors: Callable[[], tuple[np.ndarray, np.ndarray]]) -> None:
        key = f"{self.store.labels_generation()}:{self.store.generation()}"
        if self.store.get_meta("classifier_key") == key:
            return
        ids, labels = self.store.labelled_ids()
        model = None
        if len(set(labels)) >= 2:
            all_ids, stored = vectors()
            model = fit_classifier(stored[np.searchsorted(all_ids, ids)], labels)
        self.store.put_artifact("classifier", model.to_bytes() if model else None)
        self.store.set_meta("classifier_key", key)

    # --- searching -------------------------------------------------------------------------

    def index(self) -> ExactIndex:
        """The vector index (PCA-compressed if enabled), kept up to date with the store.

        When only images changed (added, re-embedded, removed: the store's generation moved,
        the fitted models did not), only the rows written since the last load are read and
        merged in, so that searches running while a folder is being indexed do not reload
        every vector after each batch. A refitted PCA or classifier reloads everything.
        """
        generation = self.store.generation()
        models_key = (self.store.get_meta("classifier_key"), self.store.get_meta("pca_generation"))
        if self._index is not None and (generation, models_key) == self._index_key:
            return self._index
        incremental = (
            self._index is not None and models_key == self._index_key[1] and self._partition is None
        )
        if not incremental:
            self._index, self._loaded_until = None, -np.inf
            self._pca = self.pca()
        changes = self.store.vectors_since(self._loaded_until)
        self._index = _merge(self._index, changes, self._pca)
        self._loaded_until = changes.latest
        if not incremental:
            classifier = self.classifier()
            self._partition = None
            if classifier is not None and len(changes.ids) and changes.vectors is not None:
                self._partition = _Partition.build(
                    self.store, classifier, changes.ids, changes.vectors
                )
        self._index_key = (generation, models_key)
        return self._index

    def query_vectors(
        self, queries: Sequence[Query], *, localize: Localize | None = None
    ) -> tuple[np.ndarray, list[int | None]]:
        """Vectors of the queries, and for each the id of the indexed image it is, if any."""
        vectors, own_ids, _ = self._describe_queries(queries, localize)
        return vectors, own_ids

    def query_embedder(self, localize: Localize | None = None) -> Embedder:
        """The query model; ``localize`` other than the collection's localizes the queries
        only (the collection's vectors stay as they are: same model, same pooling)."""
        if localize is None or localize == self.spec.localize:
            return self.embedder
        if localize not in self._query_embedders:
            self._query_embedders[localize] = Embedder(self.spec.with_options(localize=localize))
        return self._query_embedders[localize]

    def _describe_queries(
        self, queries: Sequence[Query], localize: Localize | None
    ) -> tuple[np.ndarray, list[int | None], list[Box | None]]:
        vectors: list[np.ndarray | None] = [None] * len(queries)
        own_ids: list[int | None] = [None] * len(queries)
        boxes: list[Box | None] = [None] * len(queries)
        to_embed: list[tuple[int, Image.Image]] = []
        embedder = self.query_embedder(localize)
        for i, query in enumerate(queries):
            if isinstance(query, np.ndarray):
                vectors[i] = np.asarray(query, dtype=np.float32).ravel()
                continue
            if isinstance(query, (str, os.PathLike)):
                query = expand_paths([query])[0]
                found = self.store.lookup(query)
                if found is not None:
                    own_ids[i], vectors[i] = found
                    continue
            image = query if isinstance(query, Image.Image) else self._decode(query, embedder)
            to_embed.append((i, image.convert("RGB")))
        if to_embed:
            described = embedder.describe([image for _, image in to_embed])
            for (i, _), vector, box in zip(
                to_embed, described.vectors, described.boxes, strict=True
            ):
                vectors[i], boxes[i] = vector, box
        return np.stack([v for v in vectors if v is not None]), own_ids, boxes

    def _decode(
        self, query: str | os.PathLike[str] | bytes, embedder: Embedder | None = None
    ) -> Image.Image:
        source = query if isinstance(query, bytes) else os.fspath(query)
        return load_image(source, min_side=(embedder or self.embedder).decode_side)

    def search_many(
        self,
        queries: Sequence[Query],
        *,
        k: int = config.DEFAULT_K,
        min_score: float | None = None,
        by_category: bool = False,
        expand: int = 0,
        localize: Localize | None = None,
    ) -> list[list[SearchResult]]:
        """Top-``k`` most similar indexed images for each query, best first.

        ``by_category`` predicts each query's categories and searches only them (see
        :meth:`search_detailed`); ``expand`` > 0 turns on query expansion: the query is
        averaged with its top ``expand`` results and searched again.
        Raises :class:`lookalike.decode.DecodeError` if a query is not a usable image.
        ``localize`` ("mask" or "crop") finds the object in each query photo before describing
        it, whatever the collection does: for photos of an object in a scene searched against
        clean catalogue images (see docs/EVALUATION.md).
        A query that is itself an indexed file is left out of its own results.
        """
        outcomes = self.search_detailed(
            queries,
            k=k,
            min_score=min_score,
            by_category=by_category,
            expand=expand,
            localize=localize,
        )
        return [outcome.results for outcome in outcomes]

    def search_detailed(
        self,
        queries: Sequence[Query],
        *,
        k: int = config.DEFAULT_K,
        min_score: float | None = None,
        by_category: bool = False,
        expand: int = 0,
        coverage: float = DEFAULT_COVERAGE,
        max_categories: int = DEFAULT_MAX_CATEGORIES,
        localize: Localize | None = None,
    ) -> list[QueryOutcome]:
        """Like :meth:`search_many`, also saying which categories were searched.

        With ``by_category``, the classifier's top categories whose probabilities add up to
        ``coverage`` are searched, unless that takes more than ``max_categories``: then
        the prediction is unsure and the whole collection is searched (``searched`` None).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not queries:
            return []
        if len(self) == 0:
            raise EmptyCollectionError(self.store.path)
        raw, own_ids, query_boxes = self._describe_queries(queries, localize)
        index = self.index()
        vectors = self._pca.transform(raw) if self._pca is not None else raw
        partition = self._partition if by_category else None
        if by_category and partition is None:
            log.info("no category classifier in %s: searching everything", self.store.path)
        if partition is None and expand == 0:
            # The common case, all queries in one matrix product and one metadata lookup.
            ids, scores = index.search(vectors, k, own_ids)
            rows = results_for(self.store, ids, scores, min_score)
            return [
                QueryOutcome(r, None, [], box) for r, box in zip(rows, query_boxes, strict=True)
            ]
        outcomes = []
        for i in range(len(vectors)):
            query, exclude = vectors[i : i + 1], [own_ids[i]]
            searched, predictions = None, []
            if partition is not None:
                probabilities = partition.classifier.predict_proba(raw[i : i + 1])[0]
                top = np.argsort(-probabilities)[:5]
                predictions = [
                    (partition.classifier.classes[j], float(probabilities[j])) for j in top
                ]
                chosen = choose_categories(
                    probabilities, coverage=coverage, max_categories=max_categories
                )
                if chosen is not None:
                    searched = [partition.classifier.classes[j] for j in chosen]
            ids, scores = self._top_k(index, query, k, exclude, searched)
            if expand > 0:
                ids, scores = self._top_k(
                    index, _expand(index, query, ids[0][:expand]), k, exclude, searched
                )
            results = results_for(self.store, ids, scores, min_score)[0]
            outcomes.append(QueryOutcome(results, searched, predictions, query_boxes[i]))
        return outcomes

    def _top_k(
        self,
        index: ExactIndex,
        query: np.ndarray,
        k: int,
        exclude: list[int | None],
        searched: list[str] | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        if searched is None or self._partition is None:
            return index.search(query, k, exclude)
        parts = [
            self._partition.subindex(index, name).search(query, k, exclude) for name in searched
        ]
        ids = np.concatenate([p[0] for p in parts], axis=1)
        scores = np.concatenate([p[1] for p in parts], axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(ids, order, axis=1), np.take_along_axis(scores, order, axis=1)

    def scanned_fraction(self, searched: list[str] | None) -> float:
        """Share of the collection a search of these categories scans (None: all of it)."""
        self.index()
        if searched is None or self._partition is None:
            return 1.0
        return self._partition.fraction(searched)

    def classify(self, query: Query, *, top: int = 5) -> list[tuple[str, float]]:
        """Most likely categories of an image: from the collection's classifier when it has
        labelled categories, else from the model's ImageNet head (1000 classes)."""
        classifier = self.classifier()
        if classifier is not None:
            raw, _ = self.query_vectors([query])
            probabilities = classifier.predict_proba(raw)[0]
            names: Sequence[str] = classifier.classes
        else:
            image = query if isinstance(query, Image.Image) else self._decode(query)  # type: ignore[arg-type]
            probabilities = self.embedder.imagenet_probabilities([image.convert("RGB")])[0]
            names = imagenet_class_names()
        order = np.argsort(-probabilities)[:top]
        return [(names[i], float(probabilities[i])) for i in order]

    def search(
        self, query: Query, *, k: int = config.DEFAULT_K, min_score: float | None = None
    ) -> list[SearchResult]:
        """Top-``k`` most similar indexed images, best first (see :meth:`search_many`)."""
        return self.search_many([query], k=k, min_score=min_score)[0]

    # --- clusters and near-duplicates ------------------------------------------------------

    def cluster(
        self,
        k: int | None = None,
        *,
        auto: bool = False,
        random_state: int = 0,
        pca_dims: int | None = None,
        min_cluster_size: int = clustering.MIN_CLUSTER_SIZE,
    ) -> clustering.ClusterReport:
        """Group the images, k-means into ``k`` clusters or, with ``auto``, HDBSCAN (which
        finds the number itself and leaves outliers as noise, -1), and store each image's
        cluster, replacing the previous clustering. Scored against the images' categories
        when some are labelled."""
        if not auto and k is None:
            raise ValueError("give the number of clusters k, or auto=True")
        ids, vectors = self.store.load_vectors()
        labels, report = clustering.cluster_images(
            ids,
            vectors,
            self.store.labelled_ids(),
            k=k,
            method="hdbscan" if auto else "kmeans",
            random_state=random_state,
            pca_dims=pca_dims,
            min_cluster_size=min_cluster_size,
        )
        self.store.set_clusters(dict(zip(ids.tolist(), labels.tolist(), strict=True)))
        return report

    def clusters(self) -> dict[int, int]:
        """Cluster -> number of images in it (-1: noise), from the last :meth:`cluster`."""
        return self.store.cluster_counts()

    def duplicates(
        self,
        threshold: float = duplicates.DEFAULT_THRESHOLD,
        *,
        max_neighbours: int = duplicates.MAX_NEIGHBOURS,
    ) -> list[duplicates.DuplicateGroup]:
        """Groups of near-duplicate images (cosine >= ``threshold``), tightest group first.

        In each group the image with the most pixels comes first (the one to keep), then
        the others by their best score. Memory stays near that of the vectors themselves.
        """
        ids, vectors = self.store.load_vectors()
        groups = duplicates.find_duplicates(
            ids, vectors, threshold=threshold, max_neighbours=max_neighbours
        )
        return duplicates.with_records(groups, self.store.records(i for g in groups for i in g.ids))


class _Partition:
    """Which category each indexed image belongs to, for category-first search.

    An image's category is its label when it has one, else the classifier's prediction.
    Per-category sub-indexes are cut from the main index on first use.
    """

    def __init__(self, classifier: CategoryModel, codes: np.ndarray) -> None:
        self.classifier = classifier
        self.codes = codes  # (N,) index into classifier.classes, aligned with the index rows
        self._subindexes: dict[str, ExactIndex] = {}

    @classmethod
    def build(
        cls, store: Store, classifier: CategoryModel, ids: np.ndarray, vectors: np.ndarray
    ) -> _Partition:
        codes = classifier.predict_proba(vectors).argmax(axis=1)
        position = {name: i for i, name in enumerate(classifier.classes)}
        labelled_ids, labels = store.labelled_ids()
        rows = np.searchsorted(ids, labelled_ids)
        for row, label in zip(rows, labels, strict=True):
            if label in position:
                codes[row] = position[label]
        return cls(classifier, codes)

    def subindex(self, index: ExactIndex, name: str) -> ExactIndex:
        if name not in self._subindexes:
            rows = self.codes == self.classifier.classes.index(name)
            self._subindexes[name] = ExactIndex(index.ids[rows], index.vectors[rows])
        return self._subindexes[name]

    def fraction(self, names: list[str]) -> float:
        """Share of the collection that searching these categories scans."""
        wanted = [self.classifier.classes.index(n) for n in names]
        return float(np.isin(self.codes, wanted).mean()) if len(self.codes) else 0.0


def _merge(index: ExactIndex | None, changes: VectorChanges, pca: Pca | None) -> ExactIndex:
    """The index with the changed rows put in (replacing their old versions) and the rows of
    images no longer indexed taken out; ids stay ascending."""
    new_vectors = changes.vectors
    if new_vectors is not None and pca is not None:
        new_vectors = pca.transform(new_vectors)
    if index is None or len(index) == 0:
        if new_vectors is None:
            return ExactIndex(changes.ids, np.empty((0, 0), dtype=np.float32))
        return ExactIndex(changes.ids, new_vectors)
    keep = np.isin(index.ids, changes.all_ids) & ~np.isin(index.ids, changes.ids)
    if keep.all() and new_vectors is not None and changes.ids[0] > index.ids[-1]:
        return index.appended(changes.ids, new_vectors)  # only new images: no copy
    ids, vectors = index.ids[keep], index.vectors[keep]
    if new_vectors is not None:
        ids = np.concatenate([ids, changes.ids])
        vectors = np.concatenate([vectors, new_vectors])
        if len(ids) > 1 and (np.diff(ids) < 0).any():  # an update of an older row
            order = np.argsort(ids, kind="stable")
            ids, vectors = ids[order], vectors[order]
    return ExactIndex(ids, vectors)


def _expand(index: ExactIndex, query: np.ndarray, top_ids: np.ndarray) -> np.ndarray:
    """Average query expansion: the query plus its top results' vectors, renormalised."""
    found = top_ids[top_ids >= 0]
    rows = np.searchsorted(index.ids, found)
    expanded = query[0] + index.vectors[rows].sum(axis=0)
    return (expanded / max(float(np.linalg.norm(expanded)), 1e-12))[None, :].astype(np.float32)


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in model output order (WordNet lemmas; list from
    timm, Apache-2.0)."""
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text()
    return tuple(line.split("\t", 1)[1] for line in text.splitlines() if line.strip())
