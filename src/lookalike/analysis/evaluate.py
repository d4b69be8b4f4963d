"""Retrieval quality: the leave-one-out category protocol.

Every labelled image is a query against all other indexed images (itself left out); an
image is relevant when it has the query's category. Images of "distractor" categories
(Caltech-101's BACKGROUND_Google, say) stay in the database but are never queries.
Reported: mAP (average precision over the full ranking), precision@10 and top-1 accuracy.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from lookalike.collection import Collection
    from lookalike.encode.models import ModelSpec
    from lookalike.search.engine import QueryOutcome

from lookalike.config import (
    CATEGORY_COVERAGE,
    DEFAULT_INDEX,
    DEFAULT_POOLING,
    MAX_CATEGORIES,
    RERANK_KEEP_TOP,
)
from lookalike.image.region import parse_box
from lookalike.index import codec as codecs
from lookalike.index import registry as indexes
from lookalike.index.base import IdentityCodec, VectorCodec
from lookalike.search import engine as search
from lookalike.search.categories import fit_classifier
from lookalike.search.rerank import keep_plain_top
from lookalike.search.snapshot import CategoryPartition, SearchSnapshot
from lookalike.types import Box


@dataclass(frozen=True)
class RetrievalScores:
    mean_average_precision: float
    precision_at_10: float
    top1_accuracy: float
    queries: int
    database: int
    precision_at_recall: tuple[float, ...] = ()  # interpolated, at RECALL_LEVELS

    def as_dict(self) -> dict[str, float | int]:
        return {
            "mAP": round(self.mean_average_precision, 4),
            "precision@10": round(self.precision_at_10, 4),
            "top1": round(self.top1_accuracy, 4),
            "queries": self.queries,
            "database": self.database,
        }


def read_labels(root: Path, labels_csv: Path | None = None) -> dict[str, str]:
    """Absolute path -> category.

    From a CSV with ``path`` and ``class_name`` columns (paths relative to the CSV's folder),
    or else from class sub-folders: the first folder level below ``root`` names the category.
    """
    labels: dict[str, str] = {}
    if labels_csv is not None:
        base = labels_csv.parent
        with labels_csv.open(newline="") as handle:
            reader = csv.DictReader(handle)
            missing = {"path", "class_name"} - set(reader.fieldnames or ())
            if missing:
                raise ValueError(
                    f"{labels_csv}: needs a header with the columns path,class_name; "
                    f"it has {','.join(reader.fieldnames or ()) or 'none'}"
                )
            for row in reader:
                labels[os.path.abspath(base / row["path"])] = row["class_name"]
        return labels
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for dirpath, _, files in os.walk(folder):
            for name in files:
                labels[os.path.abspath(os.path.join(dirpath, name))] = folder.name
    return labels


def average_precisions(relevant: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """AP per row of a boolean relevance matrix in rank order (N_queries x N_ranked).

    ``positives`` is the number of relevant items per query, so that a ranking cut short
    still counts relevant items it missed.
    """
    hits = np.cumsum(relevant, axis=1, dtype=np.float64)
    ranks = np.arange(1, relevant.shape[1] + 1, dtype=np.float64)
    precision_at_hits = np.where(relevant, hits / ranks, 0.0).sum(axis=1)
    return np.divide(
        precision_at_hits,
        positives,
        out=np.zeros(len(positives), dtype=np.float64),
        where=positives > 0,
    )


#: Recall levels of the interpolated precision-recall curve.
RECALL_LEVELS = np.linspace(0.0, 1.0, 21)


def leave_one_out(
    vectors: np.ndarray,
    labels: list[str],
    *,
    distractors: frozenset[str] = frozenset(),
    expand: int = 0,
    searched: list[frozenset[str] | None] | None = None,
    codec: VectorCodec | None = None,
    chunk: int = 256,
) -> RetrievalScores:
    """Score raw unit ``vectors`` (one per image, labelled ``labels``) with the protocol above,
    searched through the library's own search path (:func:`lookalike.search.engine.rank`): the
    ``codec`` (PCA) applied to the index and the queries, query expansion (``expand`` > 0:
    query + its top ``expand`` results, searched again) and category-first search
    (``searched``, one entry per image: the categories its search may return, None for all;
    images left out count as not retrieved) are the ones users get.
    """
    names, codes = np.unique(np.asarray(labels), return_inverse=True)
    is_distractor = np.isin(names, list(distractors))[codes]
    queries = np.flatnonzero(~is_distractor)
    counts = np.bincount(codes, minlength=len(names))
    snapshot = evaluation_snapshot(vectors, names, codes, codec)
    n = len(vectors)
    scores = _ScoreSums(curves=True)
    for start in range(0, len(queries), chunk):
        rows = queries[start : start + chunk]
        allowed = None
        if searched is not None:
            allowed = [None if searched[r] is None else sorted(searched[r]) for r in rows]  # type: ignore[arg-type]
        _, ranked = search.rank(
            snapshot,
            snapshot.encode(vectors[rows]),
            n,
            exclude=rows.tolist(),
            searched=allowed,
            expand=expand,
        )
        retrieved = ranked >= 0
        relevant = (codes[np.maximum(ranked, 0)] == codes[rows][:, None]) & retrieved
        scores.add(relevant, counts[codes[rows]] - 1)
    return scores.result(database=len(vectors))


class _ScoreSums:
    """Per-query measures gathered a block of queries at a time (a block's relevance
    matrix is queries x database: never all of them at once), averaged at the end."""

    def __init__(self, *, curves: bool = False) -> None:
        self.aps: list[np.ndarray] = []
        self.p10: list[np.ndarray] = []
        self.top1: list[np.ndarray] = []
        self.curves: list[np.ndarray] | None = [] if curves else None

    def add(self, relevant: np.ndarray, positives: np.ndarray) -> None:
        """``relevant``: queries x ranks, whether each result is of the query's category;
        ``positives``: how many such images each query could find."""
        self.aps.append(average_precisions(relevant, positives))
        self.p10.append(relevant[:, :10].sum(axis=1) / 10)
        self.top1.append(relevant[:, 0])
        if self.curves is not None:
            self.curves.append(_interpolated_precision(relevant, positives))

    def result(self, *, database: int) -> RetrievalScores:
        if not self.aps:
            raise ValueError("no queries: every labelled image is a distractor")
        aps = np.concatenate(self.aps)
        return RetrievalScores(
            mean_average_precision=float(aps.mean()),
            precision_at_10=float(np.concatenate(self.p10).mean()),
            top1_accuracy=float(np.concatenate(self.top1).mean()),
            queries=len(aps),
            database=database,
            precision_at_recall=()
            if self.curves is None
            else tuple(float(v) for v in np.concatenate(self.curves).mean(axis=0)),
        )


def evaluation_snapshot(
    vectors: np.ndarray, names: np.ndarray, codes: np.ndarray, codec: VectorCodec | None
) -> SearchSnapshot:
    """A search snapshot of the evaluated images, ids 0..N-1: the codec's index of them, and
    each image's category its label (as in a collection, where labels override predictions)."""
    codec = codec or IdentityCodec()
    ids = np.arange(len(vectors), dtype=np.int64)
    index = indexes.build_index(DEFAULT_INDEX, ids, codec.transform(vectors))
    classes = tuple(str(name) for name in names)
    partition = CategoryPartition(classes, ids, np.asarray(codes, dtype=np.int64))
    return SearchSnapshot(index, codec, None, partition, key=(), cursor=None)


def held_out(
    vectors: np.ndarray,
    labels: list[str],
    *,
    distractors: frozenset[str] = frozenset(),
    rerank_db: bool = False,
    folds: int = 5,
) -> RetrievalScores:
    """Held-out protocol: the images are split into ``folds`` (seeded); each fold's images
    (distractors excepted) are queries against the other folds only. With ``rerank_db`` the
    database is augmented (DBA, from its own neighbours) and each query expanded (alpha-QE)
    against it, so that no query ever contributes to the database it is searched against
    (leave-one-out would flatter re-ranking); the plain search's best match stays first, as
    the search path's re-ranking keeps it (:func:`lookalike.search.rerank.keep_plain_top`)."""
    names, codes = np.unique(np.asarray(labels), return_inverse=True)
    is_distractor = np.isin(names, list(distractors))[codes]
    fold_of = np.random.default_rng(0).permutation(len(vectors)) % folds
    scores = _ScoreSums()
    for fold in range(folds):
        db_rows = np.flatnonzero(fold_of != fold)
        q_rows = np.flatnonzero((fold_of == fold) & ~is_distractor)
        if not len(q_rows):
            continue
        database, queries = vectors[db_rows], vectors[q_rows]
        if rerank_db:  # the search path's re-ranking, on a snapshot of this fold's database
            snapshot = evaluation_snapshot(database, names, codes[db_rows], None)
            _, order = search.rank(snapshot, queries, len(db_rows), augmented=snapshot.augmented())
            plain = search.rank(snapshot, queries, RERANK_KEEP_TOP)
            order = keep_plain_top(plain, order)
        else:
            order = np.argsort(-(queries @ database.T), axis=1, kind="stable")
        relevant = codes[db_rows][order] == codes[q_rows][:, None]
        scores.add(relevant, np.bincount(codes[db_rows], minlength=len(names))[codes[q_rows]])
    return scores.result(database=len(vectors))


def _scores(query_vectors: np.ndarray, vectors: np.ndarray, rows: np.ndarray) -> np.ndarray:
    scores = query_vectors @ vectors.T
    scores[np.arange(len(rows)), rows] = -np.inf  # the query itself
    return scores


def _interpolated_precision(relevant: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """Per query, the best precision at recall >= each of RECALL_LEVELS (0 if never reached)."""
    hits = np.cumsum(relevant, axis=1)
    precision = hits / np.arange(1, relevant.shape[1] + 1)
    recall = hits / np.maximum(positives, 1)[:, None]
    best_after = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]
    out = np.zeros((len(relevant), len(RECALL_LEVELS)))
    for j, level in enumerate(RECALL_LEVELS):
        reached = recall >= level - 1e-9
        first = reached.argmax(axis=1)
        out[:, j] = np.where(reached.any(axis=1), best_after[np.arange(len(relevant)), first], 0)
    return out


def cross_fitted_categories(
    vectors: np.ndarray,
    labels: list[str],
    *,
    folds: int = 5,
    coverage: float = CATEGORY_COVERAGE,
    max_categories: int = MAX_CATEGORIES,
) -> tuple[list[frozenset[str] | None], float]:
    """Categories a category-first search would scan for each image, predicted by a
    classifier that never saw that image (k-fold cross-fitting), and the accuracy of the
    top prediction."""
    rng = np.random.default_rng(0)
    fold_of = rng.permutation(len(vectors)) % folds
    searched: list[frozenset[str] | None] = [None] * len(vectors)
    correct = 0
    label_array = np.asarray(labels)
    for fold in range(folds):
        test = np.flatnonzero(fold_of == fold)
        train = np.flatnonzero(fold_of != fold)
        model = fit_classifier(vectors[train], list(label_array[train]))
        choices = search.choose_categories_for(
            model, vectors[test], coverage=coverage, max_categories=max_categories
        )
        for row, choice in zip(test, choices, strict=True):
            correct += choice.predictions[0][0] == labels[row]
            searched[row] = None if choice.searched is None else frozenset(choice.searched)
    return searched, correct / len(vectors)


@dataclass(frozen=True)
class EvalConfig:
    """One configuration to compare, written ``key=value,...``, e.g.
    ``model=lite2,pool=gem,loc=mask,scales=320,pca=256,whiten=1,qe=2,bycat=1``.
    ``heldout=1`` (implied by ``rerank=1``) scores with :func:`held_out` instead of
    leave-one-out.

    ``pca``: the vector codec fitted on the collection: 0 (the default) subtracts the
    collection's mean, N projects to N dimensions, ``off`` searches the raw vectors (the
    default before issue 11: ``model=lite0,pool=avg,pca=off``). ``rerank=1``: database-side
    augmentation and alpha query expansion (:mod:`lookalike.search.rerank`). ``model=lite0+lite2``:
    the quality tier. ``qloc``: the query localization of the instance benchmarks
    (:func:`compare_instances`; ``none``, ``border``, ``crop``...; default: what a search of
    the collection does, ``border`` for a collection indexed without localization)."""

    model: str = "lite0"
    pooling: str = DEFAULT_POOLING
    scales: tuple[int, ...] = ()
    localize: str = "none"
    pca: int | None = 0
    whiten: bool = False
    expand: int = 0
    by_category: bool = False
    precision: str | None = None  # None: the model's default
    rerank: bool = False
    held_out: bool = False
    query_localize: str | None = None  # instance benchmarks; None: the collection's default

    @classmethod
    def parse(cls, text: str) -> EvalConfig:
        keys = {
            "model": "model",
            "pool": "pooling",
            "pooling": "pooling",
            "loc": "localize",
            "localize": "localize",
            "scales": "scales",
            "pca": "pca",
            "whiten": "whiten",
            "qe": "expand",
            "expand": "expand",
            "bycat": "by_category",
            "prec": "precision",
            "precision": "precision",
            "rerank": "rerank",
            "heldout": "held_out",
            "qloc": "query_localize",
        }
        values: dict[str, object] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, _, value = part.partition("=")
            if key not in keys:
                raise ValueError(f"unknown setting {key!r} in {text!r}; known: {sorted(keys)}")
            field = keys[key]
            if field == "scales":
                values[field] = tuple(int(v) for v in value.split("+") if v)
            elif field == "pca":
                values[field] = None if value.lower() in ("off", "none") else int(value)
            elif field == "expand":
                values[field] = int(value)
            elif field in ("whiten", "by_category", "rerank", "held_out"):
                values[field] = value.lower() in ("1", "true", "yes", "on")
            else:
                values[field] = value
        return cls(**values)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        parts = [f"model={self.model}", f"pool={self.pooling}"]
        if self.model_spec().precision != "fp32":
            parts.append(f"prec={self.model_spec().precision}")
        if self.scales:
            parts.append("scales=" + "+".join(map(str, self.scales)))
        if self.localize != "none":
            parts.append(f"loc={self.localize}")
        if self.pca is None:
            parts.append("pca=off")
        elif self.pca:
            parts.append(f"pca={self.pca}" + (",whiten=1" if self.whiten else ""))
        if self.expand:
            parts.append(f"qe={self.expand}")
        if self.by_category:
            parts.append("bycat=1")
        if self.rerank:
            parts.append("rerank=1")
        elif self.held_out:
            parts.append("heldout=1")
        if self.query_localize is not None:
            parts.append(f"qloc={self.query_localize}")
        return ",".join(parts)

    def model_spec(self) -> ModelSpec:
        from lookalike.encode.models import builtin_spec

        return builtin_spec(self.model, self.precision).with_options(  # type: ignore[arg-type]
            pooling=self.pooling,  # type: ignore[arg-type]
            scales=self.scales,
            localize=self.localize,  # type: ignore[arg-type]
        )


@dataclass(frozen=True)
class ComparedConfig:
    config: EvalConfig
    scores: RetrievalScores
    images_per_second: float | None
    bytes_per_image: int
    classifier_accuracy: float | None = None
    scanned_fraction: float | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"config": self.config.name, **self.scores.as_dict()}
        out["images_per_second"] = (
            round(self.images_per_second, 1) if self.images_per_second else None
        )
        out["bytes_per_image"] = self.bytes_per_image
        if self.config.by_category:
            out["classifier_accuracy"] = round(self.classifier_accuracy or 0.0, 4)
            out["scanned_fraction"] = round(self.scanned_fraction or 0.0, 4)
        return out


def compare(
    root: Path,
    labels: dict[str, str],
    configs: list[EvalConfig],
    *,
    cache_dir: Path,
    distractors: frozenset[str] = frozenset(),
    index_folder: Callable[[Any, Path], Any] | None = None,
) -> list[ComparedConfig]:
    """Evaluate configurations side by side; each distinct model spec is indexed once
    (into ``cache_dir``, so a second run reuses it) and the other settings (PCA, query
    expansion, category-first) are applied to its vectors."""
    import time

    from lookalike.collection import Collection

    results: list[ComparedConfig] = []
    by_spec: dict[ModelSpec, list[EvalConfig]] = {}
    for config in configs:
        by_spec.setdefault(config.model_spec(), []).append(config)
    for spec, group in by_spec.items():
        key = hashlib.sha256(f"{root.resolve()}:{spec.to_json()}".encode()).hexdigest()[:16]
        with Collection.open(cache_dir / f"{key}.db", model=spec) as collection:
            started = time.perf_counter()
            report = (index_folder or (lambda c, r: c.add([r])))(collection, root)
            elapsed = time.perf_counter() - started
            embedded = getattr(report, "embedded", 0)
            rate = embedded / elapsed if embedded else None
            ids, vectors = collection.store.load_vectors()
            paths = collection.store.paths(ids)
        keep = [i for i, image_id in enumerate(ids) if paths[int(image_id)] in labels]
        kept_vectors = vectors[keep]
        kept_labels = [labels[paths[int(ids[i])]] for i in keep]
        searched_cache: tuple[list[frozenset[str] | None], float] | None = None
        for config in group:
            codec: VectorCodec = IdentityCodec()
            if config.pca is not None:  # fitted as the collection fits it, on all of it
                codec = codecs.fit_codec({"dims": config.pca, "whiten": config.whiten}, vectors)
            searched, accuracy, scanned = None, None, None
            if config.by_category:
                if searched_cache is None:
                    searched_cache = cross_fitted_categories(kept_vectors, kept_labels)
                searched, accuracy = searched_cache
                scanned = _scanned_fraction(searched, kept_labels)
            if config.rerank or config.held_out:
                scores = held_out(
                    codec.transform(kept_vectors),
                    kept_labels,
                    distractors=distractors,
                    rerank_db=config.rerank,
                )
            else:
                scores = leave_one_out(
                    kept_vectors,
                    kept_labels,
                    distractors=distractors,
                    expand=config.expand,
                    searched=searched,
                    codec=codec,
                )
            dims = codec.dims or int(kept_vectors.shape[1])
            results.append(ComparedConfig(config, scores, rate, dims * 4, accuracy, scanned))
    return results


def _scanned_fraction(searched: list[frozenset[str] | None], labels: list[str]) -> float:
    names, counts = np.unique(np.asarray(labels), return_counts=True)
    size = dict(zip(names.tolist(), counts.tolist(), strict=True))
    total = len(labels)
    return float(
        np.mean([1.0 if s is None else sum(size.get(c, 0) for c in s) / total for s in searched])
    )


def plot_precision_recall(results: list[ComparedConfig], out: Path, title: str) -> None:
    """Interpolated precision-recall curves of the compared configurations (needs the
    ``plots`` extra)."""
    from lookalike.extras import require

    require("plots", "plot_precision_recall")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 6), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]  # the ten default colours
    for i, result in enumerate(results):
        ax.plot(
            RECALL_LEVELS,
            result.scores.precision_at_recall,
            marker=".",
            color=colours[i % len(colours)],
            linestyle=("-", "--", ":")[i // len(colours) % 3],  # distinct past ten curves
            label=f"{result.config.name} (mAP {result.scores.mean_average_precision:.3f})",
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)


@dataclass(frozen=True)
class InstanceQuery:
    """A query photo of an instance benchmark and the database image it must find (``box``:
    only that region of the photo is searched)."""

    path: str
    source: str
    kind: str = "all"
    category: str | None = None
    box: Box | None = None


#: Called with each query's outcome (``eval --per-query``).
QueryReport = Callable[[EvalConfig, InstanceQuery, "QueryOutcome"], None]


@dataclass(frozen=True)
class InstanceScores:
    """Instance retrieval of one configuration: top-1 (the source image ranked first) and
    mAP (1 / its rank: one relevant image per query), per query kind and over all; category
    mAP / precision@10 when the database is labelled."""

    config: EvalConfig
    by_kind: dict[str, tuple[float, float, int]]  # kind -> (top-1, mAP, queries)
    category: tuple[float, float] | None  # (mAP, precision@10)
    database: int

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"config": self.config.name, "database": self.database}
        for kind, (top1, mean_ap, count) in self.by_kind.items():
            out[f"{kind} top1"], out[f"{kind} mAP"] = round(top1, 4), round(mean_ap, 4)
            out[f"{kind} queries"] = count
        if self.category is not None:
            out["category mAP"], out["category P@10"] = (round(v, 4) for v in self.category)
        return out


def read_instance_queries(queries_csv: Path) -> list[InstanceQuery]:
    """Queries from a CSV with ``query_path`` and ``source_path`` (relative to the CSV's
    folder or absolute), optional ``kind`` and ``class_name`` (what
    benchmarks/make_scene_queries.py and make_instance_queries.py write) and ``box``
    (``x0,y0,x1,y1``: search only that region of the query photo)."""
    base = queries_csv.parent
    with queries_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and not {"query_path", "source_path"} <= set(rows[0]):
        raise ValueError(f"{queries_csv} needs query_path and source_path columns")
    return [
        InstanceQuery(
            os.path.abspath(base / row["query_path"]),
            os.path.abspath(base / row["source_path"]),
            row.get("kind") or "all",
            row.get("class_name") or None,
            parse_box(row["box"]) if row.get("box") else None,
        )
        for row in rows
    ]


def database_paths(root: Path) -> list[Path]:
    """What an instance benchmark indexes: a folder, or a text file listing image paths
    (one a line, relative to the file's folder or absolute)."""
    if root.is_dir():
        return [root]
    return [root.parent / line for line in root.read_text().split()]


def compare_instances(
    root: Path,
    queries: list[InstanceQuery],
    configs: list[EvalConfig],
    *,
    cache_dir: Path,
    labels: dict[str, str] | None = None,
    index_paths: Callable[[Any, list[Path]], Any] | None = None,
    batch: int = 16,
    on_query: QueryReport | None = None,
) -> list[InstanceScores]:
    """Instance benchmarks (a photo of an image on a wall, in a scene, an edited copy: each
    query must find its one source image) through the library's own search path: each
    distinct model indexes ``root`` once into ``cache_dir``; each configuration sets the
    collection's codec and searches every query photo with ``Collection.search_detailed``
    (query localization and its fusion with the whole photo included, re-ranking with
    ``rerank=1``), ranking the whole collection. ``on_query`` is given each query's results."""
    from lookalike.collection import Collection
    from lookalike.search import fitting

    for config in configs:
        if config.held_out or config.by_category:  # the queries are never in the database
            raise ValueError(f"{config.name}: heldout and bycat are not instance settings")
    results: list[InstanceScores] = []
    by_spec: dict[ModelSpec, list[EvalConfig]] = {}
    for config in configs:
        by_spec.setdefault(config.model_spec(), []).append(config)
    paths = database_paths(root)
    for spec, group in by_spec.items():
        key = hashlib.sha256(f"{root.resolve()}:{spec.to_json()}".encode()).hexdigest()[:16]
        with Collection.open(cache_dir / f"{key}.db", model=spec) as collection:
            (index_paths or (lambda c, p: c.add(p)))(collection, paths)
            for config in group:
                if config.pca is None:  # raw cosine: no codec at all
                    collection.write(lambda: _no_codec(fitting, collection.store))
                else:
                    collection.set_compression(config.pca or None, whiten=config.whiten)
                results.append(
                    _search_instances(collection, queries, config, labels, batch, on_query)
                )
    return results


#: What ``evaluate_collection`` may vary: the settings of a search, not of the collection.
SEARCH_SETTINGS = ("expand", "by_category", "rerank", "query_localize")


def check_search_settings_only(configs: list[EvalConfig]) -> None:
    """ValueError unless the configurations vary only :data:`SEARCH_SETTINGS` (the model
    key is left to the collection)."""
    plain = EvalConfig()
    for config in configs:
        unsearched = dataclasses.replace(
            config, **{name: getattr(plain, name) for name in SEARCH_SETTINGS}, model=plain.model
        )
        if unsearched != plain:
            raise ValueError(
                f"{config.name}: an existing collection is searched as it is; only "
                "qe, bycat, rerank and qloc can be compared"
            )


def evaluate_collection(
    collection: Collection,
    queries: list[InstanceQuery],
    configs: list[EvalConfig],
    *,
    labels: dict[str, str] | None = None,
    batch: int = 16,
    on_query: QueryReport | None = None,
) -> list[InstanceScores]:
    """Instance queries against an existing collection as it is (``eval --db``: SQLite or
    PostgreSQL; read only): each configuration sets only search settings (query expansion,
    category-first search with the collection's classifier, re-ranking, query localization);
    a query may be a region of its photo (:attr:`InstanceQuery.box`)."""
    check_search_settings_only(configs)
    return [
        _search_instances(collection, queries, config, labels, batch, on_query)
        for config in configs
    ]


def _search_instances(
    collection: Collection,
    queries: list[InstanceQuery],
    config: EvalConfig,
    labels: dict[str, str] | None,
    batch: int,
    on_query: QueryReport | None,
) -> InstanceScores:
    """Every query searched with ``config``'s search settings, ranking the whole collection."""
    from lookalike.search.engine import Region

    ids = collection.index().ids
    indexed = collection.store.paths(ids)
    in_collection = set(indexed.values())
    missing = [q.source for q in queries if q.source not in in_collection]
    if missing:
        raise ValueError(f"{len(missing)} source images are not indexed, e.g. {missing[0]}")
    ranks = np.empty(len(queries))
    category_ranking: list[np.ndarray] = []
    for start in range(0, len(queries), batch):
        chunk = queries[start : start + batch]
        found = collection.search_detailed(
            [q.path if q.box is None else Region(q.path, q.box) for q in chunk],
            k=len(indexed),
            expand=config.expand,
            by_category=config.by_category,
            rerank=config.rerank,
            localize=config.query_localize,  # type: ignore[arg-type]
        )
        for offset, (query, outcome) in enumerate(zip(chunk, found, strict=True)):
            if on_query is not None:
                on_query(config, query, outcome)
            order = [r.path for r in outcome.results]
            ranks[start + offset] = (
                order.index(query.source) + 1 if query.source in order else np.inf
            )
            if labels is not None:
                category_ranking.append(np.array([labels.get(p) == query.category for p in order]))
    return InstanceScores(
        config,
        _instance_by_kind(queries, ranks),
        _category_scores(queries, category_ranking, labels, indexed.values())
        if labels is not None
        else None,
        len(indexed),
    )


def _no_codec(fitting: Any, store: Any) -> None:
    fitting.set_codec(store, {})
    fitting.refresh(store)


def _instance_by_kind(
    queries: list[InstanceQuery], ranks: np.ndarray
) -> dict[str, tuple[float, float, int]]:
    kinds = np.array([q.kind for q in queries])
    out: dict[str, tuple[float, float, int]] = {}
    for kind in [*sorted(set(kinds.tolist())), "all"]:
        chosen = ranks if kind == "all" else ranks[kinds == kind]
        out[kind] = (float((chosen == 1).mean()), float((1.0 / chosen).mean()), len(chosen))
    return out


def _category_scores(
    queries: list[InstanceQuery],
    rankings: list[np.ndarray],
    labels: dict[str, str],
    indexed: Any,
) -> tuple[float, float]:
    counts: dict[str, int] = {}
    for path in indexed:
        if path in labels:
            counts[labels[path]] = counts.get(labels[path], 0) + 1
    width = max(len(r) for r in rankings)
    relevant = np.zeros((len(rankings), width), dtype=bool)
    for row, ranking in enumerate(rankings):
        relevant[row, : len(ranking)] = ranking
    positives = np.array([counts.get(q.category or "", 0) for q in queries])
    return (
        float(average_precisions(relevant, positives).mean()),
        float(relevant[:, :10].mean()),
    )
