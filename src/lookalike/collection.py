"""The library API: a collection of indexed images in one store.

>>> from lookalike import Collection
>>> with Collection.open("photos.db") as photos:
...     photos.add(["~/Pictures"])
...     for hit in photos.search("query.jpg", k=5):
...         print(hit.score, hit.path)

A door, not the engine: each method hands over to a part. A
:class:`~lookalike.store.base.MetadataStore` (opened from a ``--db`` string by
:mod:`lookalike.store.registry`); the collection's model and the query model
(:mod:`lookalike.encode.choice`, loaded by :mod:`lookalike.encode.encoders`); the one write
path every change goes through (:mod:`lookalike.pipeline.write_path`: the writer thread,
indexing here or on Ray, refitting the models of :mod:`lookalike.search.fitting`, keeping the
approximate index saved); index administration (:mod:`lookalike.index.admin`); search
snapshots (:mod:`lookalike.search.snapshot`) and the one search path
(:mod:`lookalike.search.engine`); clustering and near-duplicates (:mod:`lookalike.analysis`).
Safe to share between threads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TypeVar, cast

import numpy as np

from lookalike import config
from lookalike.analysis import clustering, duplicates
from lookalike.encode import choice, imagenet
from lookalike.encode.base import ImageEncoder
from lookalike.encode.encoders import EncoderPool
from lookalike.encode.features import Localize
from lookalike.encode.imagenet import imagenet_class_names
from lookalike.encode.models import Embedder, ModelSpec
from lookalike.errors import (
    EmptyCollectionError,
    InvalidInput,
)
from lookalike.image.files import expand_paths
from lookalike.index import admin as index_admin
from lookalike.index.base import VectorIndex
from lookalike.index.pca import Pca
from lookalike.index.persistent import FollowedIndex, StoreScan
from lookalike.pipeline import indexer
from lookalike.pipeline.indexer import IndexReport, Plan
from lookalike.pipeline.write_path import WritePath
from lookalike.search import calibration as calibrations
from lookalike.search import engine as search
from lookalike.search import explain as explaining
from lookalike.search import fitting
from lookalike.search.calibration import Calibration
from lookalike.search.categories import CategoryModel, CategoryProjection
from lookalike.search.engine import (
    CategoryRanking,
    ImageSource,
    Query,
    QueryOutcome,
    Region,
    SearchResult,
)
from lookalike.search.explain import Explanation
from lookalike.search.snapshot import SearchSnapshot, SnapshotCache
from lookalike.search.words import Concept, Vocabulary
from lookalike.store.base import MetadataStore
from lookalike.store.registry import is_url, open_store

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["Collection", "Query", "imagenet_class_names"]


class Collection:
    """Images indexed with one model, in one store."""

    def __init__(
        self,
        store: MetadataStore,
        spec: ModelSpec,
        *,
        encoders: EncoderPool | None = None,
        name: str = "collection",
        location: str | None = None,
    ) -> None:
        self.store = store
        self.spec = spec
        self.name = name
        #: Where the collection lives, for messages: the --db path or store URL.
        self.location = location or name
        self.encoders = encoders or EncoderPool()
        self.snapshots = SnapshotCache(store)
        #: The one way changes reach the collection (:mod:`lookalike.pipeline.write_path`).
        self.writes = WritePath(store, self.snapshots, name)
        #: The vocabulary of search by words, and the labels it was made with.
        self._vocabulary: tuple[tuple[str, ...], Vocabulary] | None = None

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str] | None = None,
        *,
        model: str | ModelSpec | None = None,
        encoders: EncoderPool | None = None,
        create: bool = True,
    ) -> Collection:
        """Open or create the collection at ``path`` (default: :func:`config.default_db`):
        a SQLite file, or a store URL (see :mod:`lookalike.store.registry`).

        With ``create=False`` a missing collection raises
        :class:`~lookalike.errors.NoCollectionError` and nothing is created on disk.

        A new collection uses ``model`` (default: EfficientNet-Lite0); an existing one keeps
        the model it was built with, and asking for another one is an error, since vectors of
        different models cannot be compared.
        """
        if path is None and is_url(os.environ.get("LOOKALIKE_DB", "")):
            path = os.environ["LOOKALIKE_DB"]  # a store URL (config.default_db is a file)
        target: str | os.PathLike[str] = config.default_db() if path is None else path
        if not is_url(target):
            target = Path(target).expanduser()
        store = open_store(target, create=create)
        try:
            stored = store.get_meta("model")
            spec = choice.collection_model(stored, model, target)
            if stored is None:  # a new collection: its model recorded, the default codec
                store.set_meta("model", spec.to_json())
                fitting.start(store)
        except BaseException:
            store.close()
            raise
        name = Path(target).stem if not is_url(target) else str(target).rsplit("/", 1)[-1]
        return cls(store, spec, encoders=encoders, name=name, location=str(target))

    def close(self) -> None:
        """Finish the writes already queued and a background rebuild of the index, if one
        runs (it is saved, not lost), then close the store."""
        self.writes.close(self.store.close)

    def __enter__(self) -> Collection:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __len__(self) -> int:
        return self.store.count()

    # --- models ----------------------------------------------------------------------------

    @property
    def embedder(self) -> ImageEncoder:
        """The model for queries, using every core for one image at a time; loaded on first
        use (opening a collection to list it stays instant)."""
        return self.encoders.get(self.spec)

    @property
    def index_embedder(self) -> ImageEncoder:
        """The model for indexing: one core per run, several runs at once (see indexer.run)."""
        return self.encoders.get(self.spec, threads=1)

    def query_localization(self, localize: Localize | None) -> Localize:
        """What a query gets (see :func:`lookalike.encode.choice.query_localization`)."""
        return choice.query_localization(self.spec, localize)

    def query_embedder(self, localize: Localize | None = None) -> ImageEncoder:
        """The query model (see :func:`lookalike.encode.choice.query_spec`)."""
        return self.encoders.get(choice.query_spec(self.spec, localize))

    # --- writing: every change goes through the writer -------------------------------------

    def write(self, change: Callable[[], T]) -> T:
        """Run ``change`` on the collection's writer thread, after the changes queued before;
        the search snapshot is brought up to date before it returns (searches do not wait).
        See :meth:`lookalike.pipeline.write_path.WritePath.change`."""
        return self.writes.change(change)

    def plan(self, paths: Iterable[str | os.PathLike[str]], *, all_files: bool = False) -> Plan:
        """What ``add`` would do: new or changed files to embed, vanished ones to drop.

        ``~`` is expanded; a path that does not exist raises
        :class:`~lookalike.errors.MissingPathError` (a ``FileNotFoundError``) naming it.
        """
        return indexer.plan_paths(self.store, paths, all_files=all_files)

    def add(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        all_files: bool = False,
        batch_size: int = config.BATCH_SIZE,
        progress: Callable[[int], None] | None = None,
        work: Plan | None = None,
        ray: str | None = None,
    ) -> IndexReport:
        """Index files and folders (recursively). Incremental: unchanged files are skipped,
        changed ones re-embedded, and files gone from a given folder are removed.

        ``ray``: decode and embed on the Ray cluster at that address ("": a local Ray), see
        :mod:`lookalike.pipeline.ray_runner`; None: on this machine's cores.

        Decoding and the model run on this thread (and the indexer's workers); each batch's
        write goes through the writer."""
        work = work or self.plan(paths, all_files=all_files)
        return self.writes.index(
            work,
            self.spec,
            lambda: cast(Embedder, self.index_embedder),
            ray=ray,
            batch_size=batch_size,
            progress=progress,
        )

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove files, or every file below folders, from the index; returns the count.

        ``~`` is expanded. Paths of which the collection knows nothing (neither indexed nor
        holding indexed files) raise :class:`~lookalike.errors.NotInCollectionError`, and
        nothing is removed.
        """
        return self.writes.remove_files(expand_paths(paths))

    def set_labels(self, labels: dict[str, str]) -> int:
        """Give files (absolute paths, indexed or not yet) a category; retrains the
        category classifier if anything changed. Returns how many labels changed."""
        return self.writes.set_labels({os.path.abspath(p): c for p, c in labels.items()})

    def set_compression(self, dims: int | None, *, whiten: bool = False) -> None:
        """Compress the search index with PCA to ``dims`` (None: the default codec,
        mean-centring without reduction)."""
        self.writes.commit(lambda: fitting.set_compression(self.store, dims, whiten=whiten))

    def refresh_models(self) -> None:
        """Refit what the collection's changes made stale (see :mod:`lookalike.search.fitting`)
        and bring the approximate index up to date: what every change of the write path ends
        with (:meth:`lookalike.pipeline.write_path.WritePath.settle`), for writes made to the
        store directly."""
        self.writes.settle()

    # --- the search index: exact, or approximate for large collections ---------------------

    def index_kind(self) -> str:
        """The index searches use: "exact", or an approximate kind (see persistent_index)."""
        return self.snapshots.index_kind()

    def set_index(self, kind: str) -> None:
        """Choose the search index: "auto" (by size, the default), "exact", "ivf" or "hnsw"."""
        self.writes.commit(lambda: index_admin.choose(self.store, kind))

    def sync_index(self) -> None:
        """Bring the approximate index (if the collection uses one) up to date with the store
        and save it beside the store (now and then: see
        :meth:`lookalike.index.persistent.FollowedIndex.save_after_change`)."""
        self.write(self.snapshots.save_index)

    def index_info(self) -> dict[str, object]:
        """Which index searches use and what it holds (``lookalike info``)."""
        pca = self.pca()

        def followed() -> FollowedIndex:
            self.snapshot()  # the index held, caught up with the store
            found = self.snapshots.followed()
            assert found is not None
            return found

        return index_admin.describe(
            self.store,
            self.index_kind(),
            pca.dims if pca is not None else None,
            self.index,
            followed,
        )

    # --- fitted models ---------------------------------------------------------------------

    def categories(self) -> dict[str, int]:
        """Category -> number of indexed images with that label."""
        return self.store.category_counts()

    def classifier(self) -> CategoryModel | None:
        return fitting.classifier(self.store)

    def category_projection(self) -> CategoryProjection | None:
        """The LDA projection learned from the labels, used by category-aware search."""
        return fitting.category_projection(self.store)

    def pca(self) -> Pca | None:
        return fitting.pca(self.store)

    def vocabulary(self) -> Vocabulary:
        """What search by words knows (:mod:`lookalike.search.words`): the labels the
        collection's classifier was trained on (two or more labels are needed), then the
        model's 1000 ImageNet concepts (built-in models only)."""
        classifier = self.snapshot().classifier
        labels = classifier.classes if classifier is not None else ()
        kept = self._vocabulary
        if kept is None or kept[0] != labels:
            head = imagenet.head_weights(self.spec)
            kept = (labels, Vocabulary.of(labels, imagenet_class_names(), head))
            self._vocabulary = kept  # a benign race: both threads build the same
        return kept[1]

    def concepts(self) -> list[Concept]:
        """Every concept words can name in this collection (``lookalike concepts``)."""
        return list(self.vocabulary().concepts)

    # --- searching -------------------------------------------------------------------------

    def snapshot(self) -> SearchSnapshot:
        """What searches read now: index, codec and categories of one moment, together."""
        return self.snapshots.current()

    def index(self) -> VectorIndex:
        """The vector index of the current snapshot (PCA-compressed if enabled)."""
        return self.snapshot().index

    def describe(
        self, queries: Sequence[Query], *, localize: Localize | None = None
    ) -> search.DescribedQueries:
        """Raw vectors of the queries (see :func:`lookalike.search.engine.describe_queries`); ``~``
        in a path is expanded."""
        queries = [_expanded(q) for q in queries]
        localize = self.query_localization(localize)
        return search.describe_queries(
            queries,
            lambda: self.query_embedder(localize),
            self.store,
            object_views=localize == "border" and self.spec.localize == "none",
            vocabulary=self.vocabulary,
        )

    def query_vectors(
        self, queries: Sequence[Query], *, localize: Localize | None = None
    ) -> tuple[np.ndarray, list[int | None]]:
        """Vectors of the queries, and for each the id of the indexed image it is, if any."""
        described = self.describe(queries, localize=localize)
        return described.vectors, described.own_ids

    def search_many(
        self,
        queries: Sequence[Query],
        *,
        k: int = config.DEFAULT_K,
        min_score: float | None = None,
        by_category: bool = False,
        expand: int = 0,
        rerank: bool = False,
        localize: Localize | None = None,
        exact: bool = False,
    ) -> list[list[SearchResult]]:
        """Top-``k`` most similar indexed images for each query, best first.

        ``by_category`` predicts each query's categories and searches only them (see
        :meth:`search_detailed`); ``expand`` > 0 turns on query expansion: the query is
        averaged with its top ``expand`` results and searched again. ``rerank`` re-ranks
        by database-side augmentation and alpha query expansion after the best match,
        which stays first: for collections of categories (:mod:`lookalike.search.rerank`).
        Raises :class:`lookalike.image.decode.DecodeError` if a query is not a usable image.
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
            rerank=rerank,
            localize=localize,
            exact=exact,
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
        rerank: bool = False,
        coverage: float = config.CATEGORY_COVERAGE,
        max_categories: int = config.MAX_CATEGORIES,
        category_ranking: CategoryRanking = config.CATEGORY_RANKING,
        localize: Localize | None = None,
        exact: bool = False,
    ) -> list[QueryOutcome]:
        """Like :meth:`search_many`, also saying which categories were searched.

        With ``by_category``, results are ranked in the space learned from the labels and by
        the classifier's predicted categories. ``category_ranking`` "soft" (the default)
        ranks every image, each weighted by the predicted probability of its category
        (``searched``: the categories searched before no other could reach the top ``k``,
        None if that took all of them); "filter" (also what a collection with an approximate index
        does) searches only the top categories whose probabilities add up to ``coverage``,
        unless that takes more than ``max_categories``: then the prediction is unsure and
        the whole collection is searched (``searched`` None).
        ``exact`` scans every stored vector even when the collection has an approximate
        index (for checking its recall; slow on large collections).
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        if not queries:
            return []
        if len(self) == 0:
            raise EmptyCollectionError(self.location)
        described = self.describe(queries, localize=localize)
        snapshot = self.snapshot()
        if exact and not snapshot.index.capabilities.exact:
            scan = StoreScan(self.store, snapshot.codec)
            snapshot = dataclasses.replace(snapshot, index=scan)
        options = search.SearchOptions(
            k=k,
            min_score=min_score,
            by_category=by_category,
            expand=expand,
            rerank=rerank,
            coverage=coverage,
            max_categories=max_categories,
            category_ranking=category_ranking,
        )
        calibration = self.calibration()
        return search.search(snapshot, self.store, described, options, calibration=calibration)

    def calibration(self) -> Calibration | None:
        """The confidences of this collection's model (None: not fitted for it)."""
        return calibrations.for_model(self.spec.label)

    def search(
        self,
        query: Query,
        *,
        k: int = config.DEFAULT_K,
        min_score: float | None = None,
        rerank: bool = False,
    ) -> list[SearchResult]:
        """Top-``k`` most similar indexed images, best first (see :meth:`search_many`)."""
        return self.search_many([query], k=k, min_score=min_score, rerank=rerank)[0]

    def scanned_fraction(self, searched: list[str] | None) -> float:
        """Share of the collection a search of these categories scans (None: all of it)."""
        partition = self.snapshot().partition
        if searched is None or partition is None:
            return 1.0
        return partition.fraction(searched)

    def classify(self, query: Query, *, top: int = 5) -> list[tuple[str, float]]:
        """Most likely categories of an image: from the collection's classifier when it has
        labelled categories, else from the model's ImageNet head (1000 classes)."""
        classifier = self.classifier()
        if classifier is not None:
            raw, _ = self.query_vectors([query])
            return imagenet.top_classes(classifier.predict_proba(raw)[0], classifier.classes, top)
        encoder = self.embedder
        head = imagenet.head_of(encoder, self.spec.name)
        if isinstance(query, np.ndarray):
            raise InvalidInput("a vector cannot be classified without a category classifier")
        if isinstance(query, search.Text):
            raise InvalidInput("words cannot be classified: search with them instead")
        image = search.query_image(query, lambda: encoder)
        return imagenet.top_classes(head([image])[0], imagenet.imagenet_class_names(), top)

    def explain(
        self, query: ImageSource | Region, result_id: int, *, stacked: bool = False
    ) -> Explanation:
        """Why the indexed image ``result_id`` is like ``query``: each feature-map cell's part
        of their cosine in the collection's common space (arrays), and both images with the
        heat drawn over them (``.image``, ``.png()``; ``stacked``: one above the other); see
        :mod:`lookalike.search.explain`."""
        if isinstance(query, str | os.PathLike | search.Region):
            query = cast(ImageSource | Region, _expanded(query))
        localize = self.query_localization(None)
        return explaining.explain(
            self.embedder,
            self.snapshot().codec,
            self.store,
            query,
            result_id,
            object_view=localize == "border" and self.spec.localize == "none",
            stacked=stacked,
        )

    # --- clusters and near-duplicates ------------------------------------------------------

    def cluster(
        self,
        k: int | None = None,
        *,
        auto: bool = False,
        random_state: int = 0,
        pca_dims: int | None = None,
        min_cluster_size: int = config.MIN_CLUSTER_SIZE,
    ) -> clustering.ClusterReport:
        """Group the images, k-means into ``k`` clusters or, with ``auto``, HDBSCAN (which
        finds the number itself and leaves outliers as noise, -1), and store each image's
        cluster, replacing the previous clustering. Scored against the images' categories
        when some are labelled."""
        assigned, report = clustering.cluster_store(
            self.store,
            k,
            auto=auto,
            random_state=random_state,
            pca_dims=pca_dims,
            min_cluster_size=min_cluster_size,
        )
        self.write(lambda: self.store.set_clusters(assigned))
        return report

    def clusters(self) -> dict[int, int]:
        """Cluster -> number of images in it (-1: noise), from the last :meth:`cluster`."""
        return self.store.cluster_counts()

    def duplicates(
        self,
        threshold: float = config.DUPLICATE_THRESHOLD,
        *,
        max_neighbours: int = config.DUPLICATE_MAX_NEIGHBOURS,
    ) -> list[duplicates.DuplicateGroup]:
        """Groups of near-duplicate images (cosine >= ``threshold``), each sorted into tiers:
        exact copies (same bytes or pixels), near-duplicates (the same picture edited) and
        merely similar shots (:mod:`lookalike.analysis.duplicate_tiers`). Exact groups come
        first, then near, then similar, tightest first within a tier.

        ``group.members`` lists each picture's copy to keep first (``keep`` True, ``why`` says
        why: most pixels, least compressed, original format, earliest), then its copies,
        suggested for removal. Every grouped file is read once. Memory stays near that of the
        vectors themselves; a collection with an approximate index takes each image's nearest
        neighbours from it as candidates (a batch of vectors in memory at a time).
        """
        approximate = self.snapshot() if self.index_kind() != "exact" else None
        return duplicates.find_in_store(
            self.store, approximate, threshold=threshold, max_neighbours=max_neighbours
        )


def _expanded(query: Query) -> Query:
    """A query with ``~`` in its path (or its region's, or its photo's) expanded."""
    if isinstance(query, search.Text) and query.like is not None:
        like = _expanded(query.like)
        assert not isinstance(like, search.Text | np.ndarray)
        return dataclasses.replace(query, like=like)
    if isinstance(query, str | os.PathLike):
        return expand_paths([query])[0]
    if isinstance(query, search.Region) and isinstance(query.source, str | os.PathLike):
        return search.Region(expand_paths([query.source])[0], query.box)
    return query
