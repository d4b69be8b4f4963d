"""Grouping a collection: k-means when the number of groups is known, HDBSCAN when it is not.

Both run on the collection's unit vectors after an optional PCA to ``pca_dims`` dimensions
(re-normalised, so that Euclidean distance still ranks like cosine). The reduction is for
speed: on Caltech-101 it changes purity and NMI by about a point either way while k-means runs
several times faster (see docs/EVALUATION.md).

Labels are renumbered by cluster size, largest first (0, 1, ...); HDBSCAN's noise stays -1.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from lookalike import config
from lookalike.store.base import MetadataStore

log = logging.getLogger(__name__)

Method = Literal["kmeans", "hdbscan"]

#: Label of images that belong to no cluster (HDBSCAN's noise).
NOISE = -1


@dataclass(frozen=True)
class ClusterQuality:
    """How well clusters match known categories.

    ``purity``: share of clustered images whose category is their cluster's commonest one.
    ``nmi``: normalised mutual information between clusters and categories. Both are over
    the clustered images only; ``noise_fraction`` says how many were left out as noise.
    """

    purity: float
    nmi: float
    scored: int
    noise_fraction: float

    def as_dict(self) -> dict[str, float | int]:
        return {
            "purity": round(self.purity, 4),
            "nmi": round(self.nmi, 4),
            "scored": self.scored,
            "noise_fraction": round(self.noise_fraction, 4),
        }


@dataclass(frozen=True)
class ClusterReport:
    """What :meth:`lookalike.Collection.cluster` did."""

    method: str
    clusters: int  # clusters found, noise not counted
    images: int
    noise: int  # images labelled -1
    seconds: float
    sizes: dict[int, int] = field(default_factory=dict)  # cluster -> images, noise included
    quality: ClusterQuality | None = None  # against the collection's categories, if any

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {
            "method": self.method,
            "clusters": self.clusters,
            "images": self.images,
            "noise": self.noise,
            "seconds": round(self.seconds, 3),
            "sizes": {str(c): n for c, n in self.sizes.items()},
        }
        if self.quality is not None:
            out["quality"] = self.quality.as_dict()
        return out


def reduce_dims(vectors: np.ndarray, dims: int, *, random_state: int = 0) -> np.ndarray:
    """PCA to ``dims`` dimensions, then back to unit length; unchanged if already small."""
    vectors = np.asarray(vectors, dtype=np.float32)
    if dims <= 0 or dims >= min(vectors.shape):
        return vectors
    from sklearn.decomposition import PCA

    started = time.perf_counter()
    reduced = PCA(n_components=dims, random_state=random_state).fit_transform(vectors)
    norms = np.linalg.norm(reduced, axis=1, keepdims=True)
    reduced = reduced / np.maximum(norms, 1e-12)
    log.info("PCA %d -> %d dims in %.2f s", vectors.shape[1], dims, time.perf_counter() - started)
    return reduced.astype(np.float32, copy=False)


def cluster_vectors(
    vectors: np.ndarray,
    *,
    k: int | None,
    method: Method = "kmeans",
    random_state: int = 0,
    pca_dims: int | None = None,
    min_cluster_size: int = config.MIN_CLUSTER_SIZE,
) -> np.ndarray:
    """A cluster label per row of ``vectors`` (int64; -1 = noise, HDBSCAN only).

    ``kmeans`` needs ``k``; ``hdbscan`` finds the number of clusters itself and ignores it.
    ``pca_dims``: reduce to this many dimensions first (default:
    :data:`lookalike.config.CLUSTER_PCA_DIMS`).
    Clusters are numbered by size, largest first.
    """
    if method not in config.CLUSTER_PCA_DIMS:
        raise ValueError(f"unknown clustering method {method!r}")
    n = len(vectors)
    if n == 0:
        return np.empty(0, dtype=np.int64)
    dims = config.CLUSTER_PCA_DIMS[method] if pca_dims is None else pca_dims
    reduced = reduce_dims(vectors, dims, random_state=random_state)
    started = time.perf_counter()
    if method == "kmeans":
        labels = _kmeans(reduced, k, random_state)
    else:
        labels = _hdbscan(reduced, min_cluster_size)
    log.info("%s on %d x %d in %.2f s", method, n, reduced.shape[1], time.perf_counter() - started)
    return relabel_by_size(labels)


def _kmeans(vectors: np.ndarray, k: int | None, random_state: int) -> np.ndarray:
    if k is None or k < 1:
        raise ValueError("k-means needs k >= 1 clusters (or use the automatic method)")
    if k > len(vectors):
        raise ValueError(f"cannot make {k} clusters of {len(vectors)} images")
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(vectors) > config.CLUSTER_MINIBATCH_ABOVE:
        model: KMeans | MiniBatchKMeans = MiniBatchKMeans(
            n_clusters=k, random_state=random_state, batch_size=4096, n_init=3
        )
    else:
        model = KMeans(n_clusters=k, random_state=random_state, n_init=3)
    return np.asarray(model.fit_predict(vectors), dtype=np.int64)


def _hdbscan(vectors: np.ndarray, min_cluster_size: int) -> np.ndarray:
    if len(vectors) < 2:
        return np.full(len(vectors), NOISE, dtype=np.int64)
    from sklearn.cluster import HDBSCAN

    size = max(2, min(min_cluster_size, len(vectors)))
    model = HDBSCAN(min_cluster_size=size, copy=True)
    return np.asarray(model.fit_predict(vectors), dtype=np.int64)


def relabel_by_size(labels: np.ndarray) -> np.ndarray:
    """Renumber clusters 0, 1, ... from the largest (ties: the one seen first); keep -1."""
    labels = np.asarray(labels, dtype=np.int64)
    out = np.full(len(labels), NOISE, dtype=np.int64)
    kept = labels != NOISE
    if not kept.any():
        return out
    values, first, counts = np.unique(labels[kept], return_index=True, return_counts=True)
    order = np.lexsort((first, -counts))  # by count descending, then first appearance
    mapping = np.empty(len(values), dtype=np.int64)
    mapping[order] = np.arange(len(values))
    out[kept] = mapping[np.searchsorted(values, labels[kept])]
    return out


def cluster_quality(labels: np.ndarray, truth: list[str] | np.ndarray) -> ClusterQuality:
    """Purity and NMI of cluster ``labels`` against true categories (noise left out)."""
    from sklearn.metrics import normalized_mutual_info_score

    labels = np.asarray(labels, dtype=np.int64)
    truth_codes = np.unique(np.asarray(truth), return_inverse=True)[1]
    if len(labels) != len(truth_codes):
        raise ValueError("labels and categories differ in length")
    if len(labels) == 0:
        return ClusterQuality(0.0, 0.0, 0, 0.0)
    kept = labels != NOISE
    scored = int(kept.sum())
    noise_fraction = 1.0 - scored / len(labels)
    if scored == 0:
        return ClusterQuality(0.0, 0.0, 0, noise_fraction)
    pred, true = labels[kept], truth_codes[kept]
    # contingency table without an N x N anything: clusters x categories
    table = np.zeros((pred.max() + 1, true.max() + 1), dtype=np.int64)
    np.add.at(table, (pred, true), 1)
    purity = float(table.max(axis=1).sum() / scored)
    nmi = float(normalized_mutual_info_score(true, pred))
    return ClusterQuality(purity, nmi, scored, noise_fraction)


def centroid_order(vectors: np.ndarray, labels: np.ndarray, cluster: int) -> np.ndarray:
    """Row positions of ``cluster``'s members, most typical first (nearest to its mean)."""
    members = np.flatnonzero(labels == cluster)
    if len(members) == 0:
        return members
    centre = vectors[members].mean(axis=0)
    scores = vectors[members] @ centre
    return members[np.argsort(-scores, kind="stable")]


def cluster_images(
    ids: np.ndarray,
    vectors: np.ndarray,
    labelled: tuple[np.ndarray, list[str]] | None = None,
    *,
    k: int | None,
    method: Method = "kmeans",
    random_state: int = 0,
    pca_dims: int | None = None,
    min_cluster_size: int = config.MIN_CLUSTER_SIZE,
) -> tuple[np.ndarray, ClusterReport]:
    """Cluster labels of images (``ids`` ascending, one vector each) and a report, scored
    against ``labelled`` = (ids, categories) of the images that have a category."""
    started = time.perf_counter()
    labels = cluster_vectors(
        vectors,
        k=k,
        method=method,
        random_state=random_state,
        pca_dims=pca_dims,
        min_cluster_size=min_cluster_size,
    )
    quality = None
    if labelled is not None and len(labelled[0]):
        positions = np.searchsorted(ids, labelled[0])
        quality = cluster_quality(labels[positions], labelled[1])
    values, counts = np.unique(labels, return_counts=True)
    report = ClusterReport(
        method=method,
        clusters=int((values != NOISE).sum()),
        images=len(ids),
        noise=int((labels == NOISE).sum()),
        seconds=time.perf_counter() - started,
        sizes={int(v): int(c) for v, c in zip(values, counts, strict=True)},
        quality=quality,
    )
    return labels, report


def cluster_store(
    store: MetadataStore,
    k: int | None,
    *,
    auto: bool = False,
    random_state: int = 0,
    pca_dims: int | None = None,
    min_cluster_size: int = config.MIN_CLUSTER_SIZE,
) -> tuple[dict[int, int], ClusterReport]:
    """The cluster of every image of a store (id -> cluster) and a report: k-means into ``k``
    clusters or, with ``auto``, HDBSCAN (which finds the number itself and leaves outliers as
    noise, -1). Scored against the images' categories when some are labelled. A store of
    more than :data:`config.CLUSTER_SAMPLE` images is clustered from a sample
    (:func:`_cluster_from_sample`)."""
    if not auto and k is None:
        raise ValueError("give the number of clusters k, or auto=True")
    if store.count() > config.CLUSTER_SAMPLE:
        return _cluster_from_sample(
            store,
            k,
            auto=auto,
            random_state=random_state,
            pca_dims=pca_dims,
            min_cluster_size=min_cluster_size,
        )
    ids, vectors = store.load_vectors()
    labels, report = cluster_images(
        ids,
        vectors,
        store.labelled_ids(),
        k=k,
        method="hdbscan" if auto else "kmeans",
        random_state=random_state,
        pca_dims=pca_dims,
        min_cluster_size=min_cluster_size,
    )
    return dict(zip(ids.tolist(), labels.tolist(), strict=True)), report


def _cluster_from_sample(
    store: MetadataStore,
    k: int | None,
    *,
    auto: bool,
    random_state: int,
    pca_dims: int | None,
    min_cluster_size: int,
) -> tuple[dict[int, int], ClusterReport]:
    """Cluster a random sample of :data:`config.CLUSTER_SAMPLE` images, then give every
    image (a batch at a time) the cluster of the nearest sample centroid; with HDBSCAN,
    an image less like its centroid than 95% of the sample's members is noise."""
    started = time.perf_counter()
    all_ids = store.ids()
    rng = np.random.default_rng(random_state)
    sample_ids = np.sort(rng.choice(all_ids, config.CLUSTER_SAMPLE, replace=False))
    sample = store.vectors_of(sample_ids)
    sample_labels, report = cluster_images(
        sample_ids,
        sample,
        None,
        k=k,
        method="hdbscan" if auto else "kmeans",
        random_state=random_state,
        pca_dims=pca_dims,
        min_cluster_size=min_cluster_size,
    )
    names = np.array(sorted(set(sample_labels.tolist()) - {NOISE}), dtype=np.int64)
    centroids = np.stack([sample[sample_labels == c].mean(axis=0) for c in names])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    floors = np.array(
        [np.percentile(sample[sample_labels == c] @ centroids[i], 5) for i, c in enumerate(names)]
    )
    assigned: dict[int, int] = {}
    for ids, vectors in store.vector_batches():
        similarities = vectors @ centroids.T
        best = similarities.argmax(axis=1)
        labels = names[best]
        if auto:
            labels[similarities[np.arange(len(best)), best] < floors[best]] = NOISE
        assigned.update(zip(ids.tolist(), labels.tolist(), strict=True))
    del sample
    every = np.fromiter(assigned.values(), dtype=np.int64, count=len(assigned))
    values, counts = np.unique(every, return_counts=True)
    labelled_ids, categories = store.labelled_ids()
    quality = None
    if len(labelled_ids):
        quality = cluster_quality(np.array([assigned[int(i)] for i in labelled_ids]), categories)
    return assigned, dataclasses.replace(
        report,
        images=len(every),
        noise=int((every == NOISE).sum()),
        sizes={int(v): int(c) for v, c in zip(values, counts, strict=True)},
        quality=quality,
        seconds=time.perf_counter() - started,
    )
