"""The library API: a collection of indexed images in one store.

>>> from lookalike import Collection
>>> with Collection.open("photos.db") as photos:
...     photos.add(["~/Pictures"])
...     for hit in photos.search("query.jpg", k=5):
...         print(hit.score, hit.path)

A thin front of the parts: a :class:`~lookalike.store.base.MetadataStore` (opened from a
``--db`` string by :mod:`lookalike.store.registry`), encoders
(:mod:`lookalike.encode.encoders`), a writer thread through which every change goes
(:mod:`lookalike.pipeline.writer`), the models fitted on the collection
(:mod:`lookalike.search.fitting`), search snapshots (:mod:`lookalike.search.snapshot`) and the
one search path (:mod:`lookalike.search.engine`). Safe to share between threads.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast

import numpy as np

from lookalike import config
from lookalike.analysis import clustering, duplicates
from lookalike.encode.base import ImageEncoder
from lookalike.encode.encoders import EncoderPool
from lookalike.encode.features import Localize
from lookalike.encode.models import DESCRIPTOR_VERSION, Embedder, ModelSpec, builtin_spec
from lookalike.errors import (
    EmptyCollectionError,
    InvalidInput,
    NoCollectionError,
    NotInCollectionError,
    Unavailable,
)
from lookalike.image.files import candidates_for, existing_paths, expand_paths
from lookalike.index import persistent as persistent_index
from lookalike.index.base import VectorIndex
from lookalike.index.pca import Pca
from lookalike.index.persistent import StoreScan
from lookalike.pipeline import indexer
from lookalike.pipeline.indexer import IndexReport, Plan
from lookalike.pipeline.writer import Writer
from lookalike.search import engine as search
from lookalike.search import fitting
from lookalike.search.categories import CategoryModel, CategoryProjection
from lookalike.search.engine import Query, QueryOutcome, SearchResult
from lookalike.search.snapshot import SearchSnapshot, SnapshotCache
from lookalike.store.base import MetadataStore
from lookalike.store.registry import is_url, open_store
from lookalike.store.sqlite import Store

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
        self.writer = Writer(name)
        self.snapshots = SnapshotCache(store)

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
            if not create and not target.is_file():
                raise NoCollectionError(target)
        store = open_store(target)
        try:
            spec = _model_of(store, target, model)
        except BaseException:
            store.close()
            raise
        name = Path(target).stem if not is_url(target) else str(target).rsplit("/", 1)[-1]
        return cls(store, spec, encoders=encoders, name=name, location=str(target))

    def close(self) -> None:
        """Finish the writes already queued and a background rebuild of the index, if one
        runs (it is saved, not lost), then close the store."""

        def last() -> None:
            self.snapshots.finish_rebuilds()
            self.store.close()

        self.writer.close(last)

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
        """What a query gets: ``localize`` if given, else the collection's own localization,
        or :data:`config.QUERY_LOCALIZE` for a collection indexed without one."""
        if localize is not None:
            return localize
        return config.QUERY_LOCALIZE if self.spec.localize == "none" else self.spec.localize

    def query_embedder(self, localize: Localize | None = None) -> ImageEncoder:
        """The query model; ``localize`` other than the collection's localizes the queries
        only (the collection's vectors stay as they are: same model, same pooling).
        ``border`` describes the whole photo here; the object's view is added by
        :func:`lookalike.search.engine.describe_queries`."""
        if localize is None or localize in (self.spec.localize, "border"):
            return self.embedder
        return self.encoders.get(self.spec.with_options(localize=localize))

    # --- writing: every change goes through the writer -------------------------------------

    def write(self, change: Callable[[], T]) -> T:
        """Run ``change`` on the collection's writer thread, after the changes queued before;
        the search snapshot is brought up to date before it returns (searches do not wait)."""
        if self.writer.on_writer_thread():
            return change()

        def change_and_publish() -> T:
            result = change()
            self.snapshots.refresh()
            return result

        return self.writer.run(change_and_publish)

    def plan(self, paths: Iterable[str | os.PathLike[str]], *, all_files: bool = False) -> Plan:
        """What ``add`` would do: new or changed files to embed, vanished ones to drop.

        ``~`` is expanded; a path that does not exist raises
        :class:`~lookalike.errors.MissingPathError` (a ``FileNotFoundError``) naming it.
        """
        left_out: Counter[str] = Counter()
        candidates, folders = candidates_for(
            existing_paths(paths), all_files=all_files, left_out=left_out
        )
        work = indexer.plan(cast(Store, self.store), candidates, folders)
        return dataclasses.replace(work, left_out=dict(sorted(left_out.items())))

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
        if not work.todo and not work.vanished:
            report = work.report()
        else:
            writes = cast(Store, _WritesThroughWriter(self.store, self.write))
            if ray is not None:
                report = _ray_runner().run(
                    writes,
                    self.spec,
                    work,
                    address=ray or None,
                    batch_size=batch_size,
                    progress=progress,
                )
            else:
                embedder = cast(Embedder, self.index_embedder)
                report = indexer.run(
                    writes, embedder, work, batch_size=batch_size, progress=progress
                )
        self.refresh_models()
        self.sync_index()
        return report

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Remove files, or every file below folders, from the index; returns the count.

        ``~`` is expanded. Paths of which the collection knows nothing (neither indexed nor
        holding indexed files) raise :class:`~lookalike.errors.NotInCollectionError`, and
        nothing is removed.
        """
        absolute = expand_paths(paths)

        def change() -> int:
            doomed: list[str] = []
            unknown: list[str] = []
            for path in absolute:
                below = self.store.file_states(path)
                if not below and path not in self.store.file_states(os.path.dirname(path)):
                    unknown.append(path)
                doomed.append(path)
                doomed.extend(below)
            if unknown:
                raise NotInCollectionError(unknown)
            removed = self.store.remove(doomed)
            fitting.refresh(self.store)
            return removed

        removed = self.write(change)
        self.sync_index()
        return removed

    def set_labels(self, labels: dict[str, str]) -> int:
        """Give files (absolute paths, indexed or not yet) a category; retrains the
        category classifier if anything changed. Returns how many labels changed."""
        absolute = {os.path.abspath(p): c for p, c in labels.items()}

        def change() -> int:
            changed = self.store.set_labels(absolute)
            fitting.refresh(self.store)
            return changed

        return self.write(change)

    def set_compression(self, dims: int | None, *, whiten: bool = False) -> None:
        """Compress the search index with PCA to ``dims`` (None: the default codec,
        mean-centring without reduction)."""
        settings: dict[str, object] = (
            {"dims": dims, "whiten": whiten} if dims else dict(config.DEFAULT_CODEC)
        )

        def change() -> None:
            fitting.set_codec(self.store, settings)
            fitting.refresh(self.store)

        self.write(change)

    def refresh_models(self) -> None:
        """Refit what the collection's changes made stale (see :mod:`lookalike.search.fitting`)."""
        self.write(lambda: fitting.refresh(self.store))

    # --- the search index: exact, or approximate for large collections ---------------------

    def index_kind(self) -> str:
        """The index searches use: "exact", or an approximate kind (see persistent_index)."""
        return self.snapshots.index_kind()

    def set_index(self, kind: str) -> None:
        """Choose the search index: "auto" (by size, the default), "exact", "ivf" or "hnsw"."""

        def change() -> None:
            persistent_index.set_setting(self.store, kind)  # type: ignore[arg-type]
            if kind == "exact" and hasattr(self.store, "path"):
                ann_files = persistent_index.path_for(self.store)  # type: ignore[arg-type]
                persistent_index.remove_index_files(ann_files)
            fitting.refresh(self.store)

        self.write(change)
        self.sync_index()

    def sync_index(self) -> None:
        """Bring the approximate index (if the collection uses one) up to date with the store
        and save it beside the store; writers call this after their changes."""
        self.write(self.snapshots.save_index)

    def index_info(self) -> dict[str, object]:
        """Which index searches use and what it holds (``lookalike info``)."""
        kind = self.index_kind()
        pca = self.pca()
        info: dict[str, object] = {
            "setting": persistent_index.setting(self.store),  # type: ignore[arg-type]
            "kind": kind,
            "approximate": kind != "exact",
            "dims": pca.dims if pca is not None else None,
        }
        if kind == "exact":
            dims = pca.dims if pca is not None else len(self.index().ids) and _raw_dims(self)
            info["bytes_per_image"] = 4 * int(dims or 0)
        else:
            self.snapshot()
            followed = self.snapshots.followed()
            assert followed is not None
            info.update(followed.describe())
        return info

    # --- fitted models ---------------------------------------------------------------------

    def categories(self) -> dict[str, int]:
        """Category -> number of indexed images with that label."""
        return self.store.category_counts()

    def classifier(self) -> CategoryModel | None:
        data = self.store.get_artifact("classifier")
        return CategoryModel.from_bytes(data) if data else None

    def category_projection(self) -> CategoryProjection | None:
        """The LDA projection learned from the labels, used by category-aware search."""
        data = self.store.get_artifact("category_projection")
        return CategoryProjection.from_bytes(data) if data else None

    def pca(self) -> Pca | None:
        data = self.store.get_artifact("pca")
        return Pca.from_bytes(data) if data else None

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
        by database-side augmentation and alpha query expansion: for collections of
        categories, not for finding one exact item (:mod:`lookalike.search.rerank`).
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
        localize: Localize | None = None,
        exact: bool = False,
    ) -> list[QueryOutcome]:
        """Like :meth:`search_many`, also saying which categories were searched.

        With ``by_category``, the classifier's top categories whose probabilities add up to
        ``coverage`` are searched, unless that takes more than ``max_categories``: then
        the prediction is unsure and the whole collection is searched (``searched`` None).
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
            scan = StoreScan(self.store, snapshot.codec)  # type: ignore[arg-type]
            snapshot = dataclasses.replace(snapshot, index=scan)
        return search.search(
            snapshot,
            self.store,
            described,
            k=k,
            min_score=min_score,
            by_category=by_category,
            expand=expand,
            rerank=rerank,
            coverage=coverage,
            max_categories=max_categories,
        )

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
            probabilities = classifier.predict_proba(raw)[0]
            names: Sequence[str] = classifier.classes
        else:
            embedder = self.embedder
            head = getattr(embedder, "imagenet_probabilities", None)
            if head is None:
                raise InvalidInput(f"{self.spec.name} has no ImageNet head to classify with")
            if isinstance(query, np.ndarray):
                raise InvalidInput("a vector cannot be classified without a category classifier")
            image = search.query_image(query, lambda: embedder)
            probabilities = head([image])[0]
            names = imagenet_class_names()
        order = np.argsort(-probabilities)[:top]
        return [(names[i], float(probabilities[i])) for i in order]

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
        if not auto and k is None:
            raise ValueError("give the number of clusters k, or auto=True")
        if len(self) > config.CLUSTER_SAMPLE and hasattr(self.store, "vector_batches"):
            return self._cluster_from_sample(
                k,
                auto=auto,
                random_state=random_state,
                pca_dims=pca_dims,
                min_cluster_size=min_cluster_size,
            )
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
        clusters = dict(zip(ids.tolist(), labels.tolist(), strict=True))
        self.write(lambda: self.store.set_clusters(clusters))
        return report

    def _cluster_from_sample(
        self,
        k: int | None,
        *,
        auto: bool,
        random_state: int,
        pca_dims: int | None,
        min_cluster_size: int,
    ) -> clustering.ClusterReport:
        """Cluster a random sample of :data:`config.CLUSTER_SAMPLE` images, then give every
        image (a batch at a time) the cluster of the nearest sample centroid; with HDBSCAN,
        an image less like its centroid than 95% of the sample's members is noise."""
        started = time.perf_counter()
        store = cast(Store, self.store)
        all_ids = store.ids()
        rng = np.random.default_rng(random_state)
        sample_ids = np.sort(rng.choice(all_ids, config.CLUSTER_SAMPLE, replace=False))
        sample = store.vectors_of(sample_ids)
        sample_labels, report = clustering.cluster_images(
            sample_ids,
            sample,
            None,
            k=k,
            method="hdbscan" if auto else "kmeans",
            random_state=random_state,
            pca_dims=pca_dims,
            min_cluster_size=min_cluster_size,
        )
        names = np.array(sorted(set(sample_labels.tolist()) - {clustering.NOISE}), dtype=np.int64)
        centroids = np.stack([sample[sample_labels == c].mean(axis=0) for c in names])
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        floors = np.array(
            [
                np.percentile(sample[sample_labels == c] @ centroids[i], 5)
                for i, c in enumerate(names)
            ]
        )
        assigned: dict[int, int] = {}
        for ids, vectors in store.vector_batches():
            similarities = vectors @ centroids.T
            best = similarities.argmax(axis=1)
            labels = names[best]
            if auto:
                labels[similarities[np.arange(len(best)), best] < floors[best]] = clustering.NOISE
            assigned.update(zip(ids.tolist(), labels.tolist(), strict=True))
        del sample
        self.write(lambda: self.store.set_clusters(assigned))
        every = np.fromiter(assigned.values(), dtype=np.int64, count=len(assigned))
        values, counts = np.unique(every, return_counts=True)
        labelled_ids, categories = self.store.labelled_ids()
        quality = None
        if len(labelled_ids):
            quality = clustering.cluster_quality(
                np.array([assigned[int(i)] for i in labelled_ids]), categories
            )
        return dataclasses.replace(
            report,
            images=len(every),
            noise=int((every == clustering.NOISE).sum()),
            sizes={int(v): int(c) for v, c in zip(values, counts, strict=True)},
            quality=quality,
            seconds=time.perf_counter() - started,
        )

    def clusters(self) -> dict[int, int]:
        """Cluster -> number of images in it (-1: noise), from the last :meth:`cluster`."""
        return self.store.cluster_counts()

    def duplicates(
        self,
        threshold: float = config.DUPLICATE_THRESHOLD,
        *,
        max_neighbours: int = duplicates.MAX_NEIGHBOURS,
    ) -> list[duplicates.DuplicateGroup]:
        """Groups of near-duplicate images (cosine >= ``threshold``), tightest group first.

        In each group the image with the most pixels comes first (the one to keep), then
        the others by their best score. Memory stays near that of the vectors themselves;
        a collection with an approximate index takes each image's nearest neighbours from it
        as candidates (a batch of vectors in memory at a time).
        """
        if self.index_kind() != "exact":
            snapshot = self.snapshot()
            store = cast(Store, self.store)
            groups = duplicates.find_duplicates_by_neighbours(
                store.vector_batches(),
                store.ids(),
                snapshot.index,
                snapshot.encode,
                store.vectors_of,
                threshold=threshold,
                max_neighbours=max_neighbours,
            )
        else:
            ids, vectors = self.store.load_vectors()
            groups = duplicates.find_duplicates(
                ids, vectors, threshold=threshold, max_neighbours=max_neighbours
            )
        return duplicates.with_records(groups, self.store.records(i for g in groups for i in g.ids))


class _WritesThroughWriter:
    """The store, with the writes the indexer makes sent through the collection's writer
    (reads go straight to the store)."""

    def __init__(self, store: MetadataStore, write: Callable[[Callable[[], Any]], Any]) -> None:
        self._store = store
        self._write = write

    def write_batch(
        self, embedded: Iterable[object], skipped: Iterable[object], forget: Iterable[str] = ()
    ) -> None:
        rows, bad, gone = list(embedded), list(skipped), list(forget)
        self._write(lambda: self._store.write_batch(rows, bad, gone))  # type: ignore[arg-type]

    def remove(self, paths: Iterable[str]) -> int:
        doomed = list(paths)
        removed: int = self._write(lambda: self._store.remove(doomed))
        return removed

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def _expanded(query: Query) -> Query:
    """A query with ``~`` in its path (or its region's) expanded."""
    if isinstance(query, str | os.PathLike):
        return expand_paths([query])[0]
    if isinstance(query, search.Region) and isinstance(query.source, str | os.PathLike):
        return search.Region(expand_paths([query.source])[0], query.box)
    return query


def _ray_runner():  # type: ignore[no-untyped-def]
    """lookalike.pipeline.ray_runner, or a clear error naming the extra it needs."""
    try:
        from lookalike.pipeline import ray_runner
    except ImportError as exc:
        raise Unavailable(
            f"--ray needs the ray extra: pip install 'lookalike[ray]' ({exc})"
        ) from exc
    return ray_runner


def _model_of(
    store: MetadataStore, target: str | os.PathLike[str], model: str | ModelSpec | None
) -> ModelSpec:
    """The collection's model: recorded in a new store, checked against an existing one."""
    wanted = builtin_spec(model) if isinstance(model, str) else model
    stored = store.get_meta("model")
    if stored is None:
        spec = wanted or builtin_spec(config.DEFAULT_MODEL)
        store.set_meta("model", spec.to_json())
        if store.get_meta("pca") is None:  # a new collection gets the default codec
            store.set_meta("pca", json.dumps(config.DEFAULT_CODEC))
        return spec
    spec = ModelSpec.from_json(stored)
    if spec.descriptor_version != DESCRIPTOR_VERSION:
        log.warning(
            "%s was indexed by another version of lookalike's image descriptors "
            "(%s, now %s): its vectors may not match new queries; index it again "
            "into a new --db",
            target,
            spec.descriptor_version,
            DESCRIPTOR_VERSION,
        )
        spec = dataclasses.replace(spec, descriptor_version=DESCRIPTOR_VERSION)
    if isinstance(model, str) and wanted is not None:
        # A model named without a precision: the collection keeps the one it was built with.
        wanted = dataclasses.replace(wanted, precision=spec.precision, calibration=spec.calibration)
    if wanted is not None and wanted != spec:
        raise InvalidInput(
            f"{target} was built with {spec.label}, not {wanted.label}; vectors of different "
            "models or precisions are never mixed: use another --db"
        )
    return spec


@functools.cache
def _raw_dims(collection: Collection) -> int:
    ids = collection.index().ids[:1]
    return int(collection.store.vectors_of(ids).shape[1]) if len(ids) else 0  # type: ignore[attr-defined]


@functools.cache
def imagenet_class_names() -> tuple[str, ...]:
    """The 1000 ImageNet-1k class names in model output order (WordNet lemmas; list from
    timm, Apache-2.0)."""
    text = (Path(__file__).parent / "imagenet_classes.txt").read_text()
    return tuple(line.split("\t", 1)[1] for line in text.splitlines() if line.strip())
