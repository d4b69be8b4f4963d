"""Models fitted on a collection's own vectors: the vector codec (PCA) and the category
classifier, refitted when the collection's changes made them stale.

Run on the collection's writer thread (they write to the store). Each refit changes a meta
key that search snapshots compare (:mod:`lookalike.search.snapshot`), so the next search builds a
snapshot with the new model and an index made with it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time

from lookalike import config
from lookalike.index import codec as codecs
from lookalike.index import persistent as persistent_index
from lookalike.index.pca import Pca
from lookalike.search.categories import (
    CategoryModel,
    CategoryProjection,
    fit_classifier,
    fit_projection,
)
from lookalike.search.snapshot import CLASSIFIER_KEY, CODEC_GENERATION
from lookalike.store.base import MetadataStore

log = logging.getLogger(__name__)


def start(store: MetadataStore) -> None:
    """A new collection gets the default codec (:data:`config.DEFAULT_CODEC`) unless it
    was given one."""
    if store.get_meta("pca") is None:
        store.set_meta("pca", json.dumps(config.DEFAULT_CODEC))


def set_compression(store: MetadataStore, dims: int | None, *, whiten: bool = False) -> None:
    """Compress the search index with PCA to ``dims`` (None: the default codec,
    mean-centring without reduction); fitted by the next :func:`refresh`."""
    settings: dict[str, object] = (
        {"dims": dims, "whiten": whiten} if dims else dict(config.DEFAULT_CODEC)
    )
    set_codec(store, settings)


def set_codec(store: MetadataStore, settings: dict[str, object]) -> None:
    """Choose the collection's codec (``{}``: none); fitted by the next :func:`refresh`."""
    store.set_meta("pca", json.dumps(settings))
    store.put_artifact("pca", None)
    bump_codec_generation(store)


def bump_codec_generation(store: MetadataStore) -> None:
    """Tell loaded snapshots (this process's and others') that the codec changed. A store
    that searches in its database (PostgreSQL) recomputes the reduced vectors it searches."""
    store.set_meta(CODEC_GENERATION, str(int(store.get_meta(CODEC_GENERATION) or 0) + 1))
    store.reduce()


def refresh(store: MetadataStore) -> None:
    """Refit what is stale: the codec (when the collection grew or shrank by over 10%) and the
    classifier (when labels, or the set of labelled images, changed).

    The codec is fitted on a random sample of :data:`config.PCA_SAMPLE` vectors and the
    classifier on the labelled images' vectors only: a large collection is never loaded
    whole."""
    _default_codec_for_approximate_search(store)
    _refresh_codec(store)
    _refresh_classifier(store)


def _default_codec_for_approximate_search(store: MetadataStore) -> None:
    """A collection that reaches the size of approximate search and never chose a codec gets
    PCA-256 (docs/EVALUATION.md: the same or better retrieval figures, a fifth of the size;
    the approximate index holds 8-bit codes of these vectors). The default codec of a new
    collection (centring, no reduction) counts as not chosen: PCA centres too."""
    chosen = store.get_meta("pca")
    if chosen is not None and json.loads(chosen) != config.DEFAULT_CODEC:
        return
    kind = persistent_index.kind_for(persistent_index.setting(store), store.count())
    if kind != "exact":
        set_codec(store, {"dims": config.PCA_DIMS, "whiten": False})


def _refresh_codec(store: MetadataStore) -> None:
    settings = json.loads(store.get_meta("pca") or "{}")
    if not settings:
        return
    count = store.count()
    data = store.get_artifact("pca")
    if count < config.CODEC_MIN_IMAGES:  # too few images: raw cosine until there are more
        if data:
            store.put_artifact("pca", None)
            bump_codec_generation(store)
        return
    if data:
        current = codecs.load_codec(settings, data)
        fitted_on = current.fitted_on
        if fitted_on is None or abs(count - fitted_on) <= config.PCA_REFIT_FRACTION * max(
            fitted_on, 1
        ):
            return
    if count < 2:
        return
    fitted = codecs.fit_codec(settings, store.sample_vectors(config.PCA_SAMPLE))
    # staleness counts the collection, not the sample
    store.put_artifact("pca", fitted.counted(count).to_bytes())
    bump_codec_generation(store)


def _refresh_classifier(store: MetadataStore) -> None:
    """The classifier is trained on the labelled images only: adding unlabelled images (an
    upload) leaves it, and so the search snapshot's partition, as it is."""
    ids, labels = store.labelled_ids()
    digest = hashlib.sha256(ids.tobytes()).hexdigest()[:16]
    key = f"{store.labels_generation()}:{digest}"
    if store.get_meta(CLASSIFIER_KEY) == key:
        return
    model, projection = None, None
    if len(set(labels)) >= 2:
        started = time.perf_counter()
        log.info(
            "training the category classifier on %d labelled images (%d categories)",
            len(ids),
            len(set(labels)),
        )
        labelled = store.vectors_of(ids)
        model = fit_classifier(labelled, labels)
        projection = fit_projection(labelled, labels)
        log.info("category classifier trained in %.1f s", time.perf_counter() - started)
    store.put_artifact("classifier", model.to_bytes() if model else None)
    store.put_artifact("category_projection", projection.to_bytes() if projection else None)
    store.set_meta(CLASSIFIER_KEY, key)


# --- the fitted models, as stored -------------------------------------------------------------


def classifier(store: MetadataStore) -> CategoryModel | None:
    """The category classifier fitted on the labelled images (None: fewer than two labels)."""
    data = store.get_artifact("classifier")
    return CategoryModel.from_bytes(data) if data else None


def category_projection(store: MetadataStore) -> CategoryProjection | None:
    """The LDA projection learned from the labels, used by category-aware search."""
    data = store.get_artifact("category_projection")
    return CategoryProjection.from_bytes(data) if data else None


def pca(store: MetadataStore) -> Pca | None:
    """The fitted PCA codec (None: no codec, or too few images to fit one yet)."""
    data = store.get_artifact("pca")
    return Pca.from_bytes(data) if data else None
