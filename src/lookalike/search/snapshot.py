"""What a search reads: an immutable snapshot of the index, the codec and the categories.

A :class:`SearchSnapshot` holds a vector index, the codec its vectors went through (and that
queries must go through), and the category partition of those same rows, built together
and never changed afterwards. :class:`SnapshotCache` keeps the newest one for a store: when
the store changed, it builds the next snapshot (reading only the rows written since the last
one while the fitted models are unchanged) and swaps it in with one assignment. A search
takes one snapshot at its start and uses nothing else, so it can never pair a new PCA or
category partition with an old index, whatever the writer does meanwhile.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field

import numpy as np

from lookalike import config
from lookalike.index import codec as codecs
from lookalike.index import persistent as persistent_index
from lookalike.index import registry as indexes
from lookalike.index.base import IdentityCodec, VectorCodec, VectorIndex
from lookalike.index.persistent import FollowedIndex, Target
from lookalike.index.refine import RefinedIndex
from lookalike.search import rerank
from lookalike.search.categories import CategoryModel, CategoryProjection
from lookalike.store.base import MetadataStore

log = logging.getLogger(__name__)

#: Meta keys whose values change when the fitted models change (see lookalike.search.fitting).
CLASSIFIER_KEY = "classifier_key"
CODEC_GENERATION = "pca_generation"


@dataclass(frozen=True)
class CategoryPartition:
    """The category of every row of a snapshot's index: an image's label when it has one,
    else the classifier's prediction. ``codes`` index ``classes`` and are aligned with the
    index's ids."""

    classes: tuple[str, ...]
    ids: np.ndarray
    codes: np.ndarray
    _members: dict[frozenset[str], np.ndarray] = field(
        default_factory=dict, compare=False, repr=False
    )

    def ids_of(self, names: list[str]) -> np.ndarray:
        """Sorted ids of the rows in these categories (a search filter), cached."""
        key = frozenset(names)
        found = self._members.get(key)
        if found is None:
            wanted = [self.classes.index(n) for n in names if n in self.classes]
            found = self.ids[np.isin(self.codes, wanted)]
            self._members[key] = found  # a benign race: both threads compute the same
        return found

    def fraction(self, names: list[str]) -> float:
        """Share of the collection that searching these categories scans."""
        return len(self.ids_of(names)) / len(self.ids) if len(self.ids) else 0.0


class _Augmentations:
    """The re-ranking vectors of a snapshot's indexes, built on first use: one thread
    builds, the others wait for it; a search sees them whole or not at all."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._built: dict[int, tuple[VectorIndex, rerank.AugmentedVectors]] = {}
        #: Augmented vectors of an earlier snapshot's index, which the main index's are
        #: followed from (only the rows a change touches are recomputed).
        self.seed: rerank.AugmentedVectors | None = None

    def of(self, index: VectorIndex, *, main: bool) -> rerank.AugmentedVectors:
        found = self._built.get(id(index))
        if found is None:
            with self._lock:
                found = self._built.get(id(index))
                if found is None:
                    seed = self.seed if main else None
                    if seed is not None and seed.exact == index.capabilities.exact:
                        built = seed.follow(index)
                    else:
                        built = rerank.AugmentedVectors.build(index)
                    found = (index, built)
                    self._built[id(index)] = found  # the index is kept: its id stays unique
                    if main:
                        self.seed = None
        return found[1]

    def to_follow(self, index: VectorIndex) -> rerank.AugmentedVectors | None:
        """What a later snapshot's main index may follow: these, once built, else the seed."""
        found = self._built.get(id(index))
        return found[1] if found is not None else self.seed


@dataclass(frozen=True)
class SearchSnapshot:
    index: VectorIndex
    codec: VectorCodec
    classifier: CategoryModel | None
    partition: CategoryPartition | None
    #: (store generation, classifier key, codec generation, index version) it was built at.
    key: tuple[object, ...]
    #: The store's change cursor it has read up to (opaque).
    cursor: object
    #: The projection learned from the labels (LDA) and the index of the rows in its space,
    #: which category-aware search ranks in (None without labels, or with an approximate
    #: index kept beside the store).
    projection: CategoryProjection | None = None
    projected: VectorIndex | None = None
    _augmentations: _Augmentations = field(
        default_factory=_Augmentations, init=False, compare=False, repr=False
    )

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """Raw query vectors -> this snapshot's index space."""
        return self.codec.transform(raw)

    def augmented(self, index: VectorIndex | None = None) -> rerank.AugmentedVectors | None:
        """The re-ranking vectors of ``index`` (the snapshot's own index, or its projected
        one), built on the first call for this snapshot; None when the collection is too
        small to re-rank (fewer than :data:`lookalike.config.RERANK_MIN_IMAGES` images)."""
        index = self.index if index is None else index
        if len(index) < config.RERANK_MIN_IMAGES:
            return None
        return self._augmentations.of(index, main=index is self.index)


def models_key(store: MetadataStore) -> tuple[object, object]:
    return (store.get_meta(CLASSIFIER_KEY), store.get_meta(CODEC_GENERATION))


class SnapshotCache:
    """The newest snapshot of one store, rebuilt when the store changes."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        self._snapshot: SearchSnapshot | None = None
        self._building = threading.Lock()
        # The approximate index of a large collection, kept beside the store (changes in
        # place: FAISS indexes are not copied per snapshot).
        self._followed: FollowedIndex | None = None

    def index_kind(self) -> str:
        """ "exact", or the approximate kind this collection is searched with (by its size and
        its ``index`` setting; a store that keeps no index file searches in its database,
        see :meth:`MetadataStore.database_index`)."""
        if self.store.index_file() is None:
            return "exact"
        setting = persistent_index.setting(self.store)
        return persistent_index.kind_for(setting, self.store.count())

    def save_index(self) -> None:
        """Follow the store with the approximate index, if the collection has one, and save
        it beside the store now and then and when closing (writers call this after their
        changes, so that the next process loads it and catches up, not rebuilds it)."""
        if self.index_kind() == "exact":
            return
        self.current()
        if self._followed is not None:
            self._followed.save_after_change()
            self._followed.maintain()

    def finish_rebuilds(self) -> None:
        """Closing: wait for a background rebuild of the index, and save what is unsaved."""
        if self._followed is not None:
            self._followed.wait_for_rebuild()

    def followed(self) -> FollowedIndex | None:
        return self._followed

    def peek(self) -> SearchSnapshot | None:
        """The snapshot last built, without checking the store."""
        return self._snapshot

    def current(self) -> SearchSnapshot:
        """The snapshot of the store as it is now (built if the store changed).

        Readers never wait for a build while a snapshot exists: if another thread is
        building the next one (the writer does, right after each change and before
        acknowledging it), they take the previous one."""
        key = self._key()
        snapshot = self._snapshot
        if snapshot is not None and snapshot.key == key:
            return snapshot
        if not self._building.acquire(blocking=snapshot is None):
            assert snapshot is not None
            return snapshot
        try:
            return self._refresh_locked()
        finally:
            self._building.release()

    def refresh(self) -> None:
        """Bring the snapshot up to date now, if one was ever built (the writer calls this
        after each change, so that searches find the next snapshot ready)."""
        if self._snapshot is None:
            return
        with self._building:
            self._refresh_locked()

    def _refresh_locked(self) -> SearchSnapshot:
        snapshot = self._snapshot
        key = self._key()
        if snapshot is None or snapshot.key != key:
            snapshot = self._build(snapshot, key)
            self._snapshot = snapshot  # one assignment: readers see the old or the new
        return snapshot

    def _key(self) -> tuple[object, ...]:
        """(store generation, classifier key, codec generation, index version): a snapshot
        is current while these are unchanged (the last counts background rebuilds)."""
        followed = self._followed
        version = followed.version if followed is not None else 0
        return (self.store.generation(), *models_key(self.store), version)

    def _build(self, previous: SearchSnapshot | None, key: tuple[object, ...]) -> SearchSnapshot:
        kind = self.index_kind()
        if kind != "exact":
            return self._build_approximate(previous, key, kind)
        if self._followed is not None:
            self._followed.cancel()
        self._followed = None
        if (
            previous is not None
            and previous.key[1:3] == key[1:3]
            and previous.index.capabilities.exact
        ):
            return self._follow(previous, key)
        settings = json.loads(self.store.get_meta("pca") or "{}")
        codec = codecs.load_codec(settings, self.store.get_artifact("pca"))
        data = self.store.get_artifact("classifier")
        classifier = CategoryModel.from_bytes(data) if data else None
        in_database = self.store.database_index()
        index: VectorIndex
        if in_database is not None:
            # The store searches in its database (PostgreSQL): no vectors held here; they
            # are read only to predict the categories of the partition.
            changes = self.store.vectors_since(
                None if classifier is not None else self.store.generation()
            )
            index, codec = in_database, in_database.codec  # the codec of the vectors searched
        else:
            changes = self.store.vectors_since(None)
            if changes.vectors is None:
                vectors = np.empty((0, 0), dtype=np.float32)
            else:
                vectors = codec.transform(changes.vectors)
            # held in memory, exact: the collection's "index" setting (auto, or an
            # approximate kind) names the index kept beside the store (_build_approximate)
            index = indexes.build_index(config.DEFAULT_INDEX, changes.ids, vectors)
        partition = None
        projection, projected = None, None
        if classifier is not None and changes.vectors is not None:
            codes = self._codes(classifier, changes.ids, changes.vectors)
            partition = CategoryPartition(classifier.classes, changes.ids, codes)
            # Held here in either store (the database searches the common space only), so
            # that category-aware search ranks in the same space on SQLite and PostgreSQL.
            data = self.store.get_artifact("category_projection")
            if data:
                projection = CategoryProjection.from_bytes(data)
                projected = indexes.build_index(
                    config.DEFAULT_INDEX, changes.ids, projection.transform(changes.vectors)
                )
        return SearchSnapshot(
            index, codec, classifier, partition, key, changes.latest, projection, projected
        )

    def _follow(self, previous: SearchSnapshot, key: tuple[object, ...]) -> SearchSnapshot:
        """The previous snapshot with the rows written since put in and the rows of images
        no longer indexed taken out; the same codec and classifier."""
        changes = self.store.vectors_since(previous.cursor)  # type: ignore[arg-type]
        old = previous.index
        nothing = np.empty(0, dtype=np.int64)  # no image removed since the cursor
        gone = (
            old.ids[~np.isin(old.ids, changes.all_ids)] if changes.all_ids is not None else nothing
        )
        index = old.remove(gone) if len(gone) else old
        if changes.vectors is not None:
            index = index.add(changes.ids, previous.codec.transform(changes.vectors))
        projected = previous.projected
        if projected is not None and previous.projection is not None:
            gone_projected = (
                projected.ids[~np.isin(projected.ids, changes.all_ids)]
                if changes.all_ids is not None
                else nothing
            )
            if len(gone_projected):
                projected = projected.remove(gone_projected)
            if changes.vectors is not None:
                projected = projected.add(
                    changes.ids, previous.projection.transform(changes.vectors)
                )
        partition, classifier = previous.partition, previous.classifier
        if partition is not None and classifier is not None:
            codes = np.zeros(len(index.ids), dtype=np.int64)
            if len(partition.ids):
                positions = np.searchsorted(partition.ids, index.ids)
                positions = np.minimum(positions, len(partition.ids) - 1)
                kept = partition.ids[positions] == index.ids
                codes[kept] = partition.codes[positions[kept]]
            if changes.vectors is not None:
                rows = np.searchsorted(index.ids, changes.ids)
                codes[rows] = self._codes(classifier, changes.ids, changes.vectors)
            partition = CategoryPartition(partition.classes, index.ids, codes)
        snapshot = SearchSnapshot(
            index,
            previous.codec,
            previous.classifier,
            partition,
            key,
            changes.latest,
            previous.projection,
            projected,
        )
        snapshot._augmentations.seed = previous._augmentations.to_follow(previous.index)
        return snapshot

    def _build_approximate(
        self, previous: SearchSnapshot | None, key: tuple[object, ...], kind: str
    ) -> SearchSnapshot:
        """A snapshot over the approximate index kept beside the store
        (:class:`lookalike.index.persistent.FollowedIndex`: loaded, followed or rebuilt in
        batches; never every vector in memory at once)."""
        settings = json.loads(self.store.get_meta("pca") or "{}")
        codec = codecs.load_codec(settings, self.store.get_artifact("pca"))
        wanted = Target(
            kind,
            codec if settings else None,
            f"{kind}:pca{key[2] or 0}",
            settings.get("kind", "pca") if settings else None,
        )
        if self._followed is None:
            self._followed = FollowedIndex(self.store, wanted)
        else:
            self._followed.retarget(wanted)
        index = self._followed.current()
        data = self.store.get_artifact("classifier")
        classifier = CategoryModel.from_bytes(data) if data else None
        partition = None
        if classifier is not None:
            partition = self._partition_batched(
                classifier,
                index.ids,
                previous.partition if previous is not None and previous.key[1] == key[1] else None,
            )
        # Queries go through the codec of the index held, which is the wanted one except while
        # a rebuild for a refitted codec runs in the background.
        serving = self._followed.codec or IdentityCodec()
        # Candidates re-scored with the store's full vectors through that codec: the scores
        # are the exact scan's (lookalike.index.refine).
        refined = RefinedIndex(index, self.store, serving)
        snapshot = SearchSnapshot(
            refined, serving, classifier, partition, key, self._followed.cursor
        )
        if previous is not None:  # a changed codec changes every vector: all recomputed
            snapshot._augmentations.seed = previous._augmentations.to_follow(previous.index)
        return snapshot

    def _partition_batched(
        self, classifier: CategoryModel, ids: np.ndarray, previous: CategoryPartition | None
    ) -> CategoryPartition:
        """Categories of every image, predicted a batch at a time; with a previous partition
        of the same classifier, only the images it lacks are predicted."""
        store = self.store
        codes = np.zeros(len(ids), dtype=np.int64)
        todo = ids
        if previous is not None and len(previous.ids):
            positions = np.minimum(np.searchsorted(previous.ids, ids), len(previous.ids) - 1)
            kept = previous.ids[positions] == ids
            codes[kept] = previous.codes[positions[kept]]
            todo = ids[~kept]
        for start in range(0, len(todo), config.SCAN_BATCH):
            chunk = todo[start : start + config.SCAN_BATCH]
            raw = store.vectors_of(chunk)
            codes[np.searchsorted(ids, chunk)] = classifier.predict_proba(raw).argmax(axis=1)
        position = {name: i for i, name in enumerate(classifier.classes)}
        labelled_ids, labels = store.labelled_ids()
        rows = np.searchsorted(ids, labelled_ids)
        for row, image_id, label in zip(rows, labelled_ids, labels, strict=True):
            if row < len(ids) and ids[row] == image_id and label in position:
                codes[row] = position[label]
        return CategoryPartition(classifier.classes, ids, codes)

    def _codes(self, classifier: CategoryModel, ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
        """Category code of each row: the label if it has one, else the prediction."""
        codes = classifier.predict_proba(raw).argmax(axis=1)
        position = {name: i for i, name in enumerate(classifier.classes)}
        labelled_ids, labels = self.store.labelled_ids()
        rows = np.searchsorted(ids, labelled_ids)
        for row, image_id, label in zip(rows, labelled_ids, labels, strict=True):
            if row < len(ids) and ids[row] == image_id and label in position:
                codes[row] = position[label]
        return codes
