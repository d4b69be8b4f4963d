"""The one search path: query -> encoder -> codec -> index -> records.

The CLI, the Python API (:class:`lookalike.Collection`), the service and ``eval`` all search
through these functions, so what is measured is what users get:

1. :func:`describe_queries`: files, bytes, images, regions of them (:class:`Region`) or vectors
   -> raw unit vectors (an indexed, unchanged file uses its stored vector and is left out of
   its own results; a photo on a plain background is described twice, whole and the object
   cut from it);
2. :func:`choose_categories_for`: with category-first search, which categories each query
   searches (from a classifier: the collection's, or in ``eval`` a cross-fitted one);
3. :func:`rank`: codec -> index top-k (filtered to those categories), with optional query
   expansion or re-ranking (:mod:`lookalike.search.rerank`), all on one
   :class:`~lookalike.search.snapshot.SearchSnapshot` (a large collection's index is the
   approximate one with its candidates re-scored on the stored vectors,
   :class:`lookalike.index.refine.RefinedIndex`: the same scores as an exact scan);
4. :func:`common_scores`: whatever ordered the results, each one's score is the cosine of
   the query (its better view) and the result in the collection's common space, the codec's
   (see :func:`search`);
5. :func:`results_for`: ids -> records of the store.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from PIL import Image

from lookalike import config
from lookalike.encode.base import ImageEncoder
from lookalike.errors import InvalidInput, Unavailable
from lookalike.image.decode import load_image
from lookalike.image.localization import crop_to, find_object, fuse
from lookalike.image.region import crop
from lookalike.index.base import VectorIndex
from lookalike.search.calibration import Calibration
from lookalike.search.categories import CategoryModel, category_weights, choose_categories
from lookalike.search.rerank import AugmentedVectors, keep_plain_top
from lookalike.search.snapshot import CategoryPartition, SearchSnapshot
from lookalike.search.words import Match, Vocabulary, WordQuery, query_directions
from lookalike.store.base import MetadataStore
from lookalike.types import Box

log = logging.getLogger(__name__)


#: How category-aware search uses the predicted categories (see :func:`search_photos`).
CategoryRanking = Literal["soft", "filter"]


@dataclass(frozen=True)
class SearchOptions:
    """How a search ranks and cuts its results, whatever its queries: one value from every
    door (:class:`lookalike.Collection`, the service's query batcher) to :func:`search`
    (see :func:`search_photos` for what each does)."""

    k: int = config.DEFAULT_K
    min_score: float | None = None
    by_category: bool = False
    expand: int = 0
    rerank: bool = False
    coverage: float = config.CATEGORY_COVERAGE
    max_categories: int = config.MAX_CATEGORIES
    category_ranking: CategoryRanking = config.CATEGORY_RANKING


#: A query image: a file path, encoded image bytes, or a decoded image.
ImageSource = str | os.PathLike[str] | bytes | Image.Image


@dataclass(frozen=True)
class Region:
    """The ``box`` part of a query image (x0, y0, x1, y1 as fractions, see
    :mod:`lookalike.image.region`): only that part is described. A file or bytes are decoded
    at :data:`config.REGION_DECODE_SCALE` times the model's decode side first (a small
    region keeps its detail); a decoded image is taken as it is (decode it with
    :func:`decode_side` ``region=True`` to get what a file gives). A region of an indexed
    file is left out of its own results, as the file is."""

    source: ImageSource
    box: Box


@dataclass(frozen=True)
class Text:
    """A query of words (:mod:`lookalike.search.words`: concepts of a fixed vocabulary, not
    free text): the images showing what they name; with ``like`` (a photo, or a region of
    one), the images most like that photo among those the words find ("more like this
    photo, but a dress"). ``match``: how several terms (split at commas) combine."""

    words: str
    match: Match = "all"
    like: ImageSource | Region | None = None


#: What can be searched with: a file path (an indexed file searches "more like this" with
#: its stored vector), encoded image bytes, a decoded image, a region of one, words
#: (:class:`Text`) or a vector.
Query = ImageSource | Region | Text | np.ndarray


@dataclass(frozen=True)
class SearchResult:
    """One result. ``score``: the cosine of the query and this image in the collection's
    common space (see :func:`common_scores`), whatever ordered the results."""

    id: int
    path: str
    score: float
    category: str | None = None
    cluster: int | None = None
    box: Box | None = None  # object box (x0, y0, x1, y1, fractions), if localization is on
    #: Calibrated probabilities that this is the same item as the query (a copy of it) and
    #: the same kind (category), from the score (:mod:`lookalike.search.calibration`); None
    #: for a model without a fitted calibration.
    same_item: float | None = None
    same_kind: float | None = None

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"id": self.id, "path": self.path, "score": round(self.score, 6)}
        if self.same_item is not None and self.same_kind is not None:
            out["same_item"] = round(self.same_item, 4)
            out["same_kind"] = round(self.same_kind, 4)
        if self.category is not None:
            out["category"] = self.category
        if self.cluster is not None:
            out["cluster"] = self.cluster
        if self.box is not None:
            out["box"] = [round(v, 4) for v in self.box]
        return out


@dataclass(frozen=True)
class QueryOutcome:
    """One query's results, and with category-first search, what was searched."""

    results: list[SearchResult]
    searched: list[str] | None = None  # categories searched; None: the whole collection
    predictions: list[tuple[str, float]] | None = None  # top predicted categories
    query_box: Box | None = None  # where the object was found in the query, if localized
    reranked: bool = False  # re-ranked (asked for, and the collection was large enough)
    #: Results scored below this are weak matches: the cosine of a photo query
    #: (:data:`config.WEAK_MATCH`) or of a words-only query (:data:`config.WEAK_WORDS`).
    weak_below: float = config.WEAK_MATCH
    #: The concepts the words of a :class:`Text` query named, as ``source:name``.
    concepts: list[str] | None = None

    def is_weak(self, result: SearchResult) -> bool:
        return result.score < self.weak_below


@dataclass(frozen=True)
class DescribedQueries:
    """Raw query vectors, the indexed image each query is (if any), and the object boxes."""

    vectors: np.ndarray
    own_ids: list[int | None]
    boxes: list[Box | None]
    #: Raw vectors of the objects that border localization cut from query photos, by query.
    views: dict[int, np.ndarray] = field(default_factory=dict)
    #: The words of :class:`Text` queries, matched, by query.
    words: dict[int, WordQuery] = field(default_factory=dict)
    #: The queries of words alone (their row of ``vectors`` is zeros: no photo).
    word_only: frozenset[int] = frozenset()

    def take(self, rows: Sequence[int]) -> DescribedQueries:
        """These queries only, in this order."""
        position = {row: i for i, row in enumerate(rows)}
        return DescribedQueries(
            self.vectors[list(rows)],
            [self.own_ids[row] for row in rows],
            [self.boxes[row] for row in rows],
            {position[row]: view for row, view in self.views.items() if row in position},
            {position[row]: w for row, w in self.words.items() if row in position},
            frozenset(position[row] for row in self.word_only if row in position),
        )


def decode_side(encoder: ImageEncoder, *, region: bool = False) -> int:
    """The shortest side a query image is decoded at: the model's, larger for a region."""
    return encoder.decode_side * (config.REGION_DECODE_SCALE if region else 1)


def decode_query(
    query: str | os.PathLike[str] | bytes, encoder: ImageEncoder, *, region: bool = False
) -> Image.Image:
    source = query if isinstance(query, bytes) else os.fspath(query)
    return load_image(source, min_side=decode_side(encoder, region=region))


def query_image(query: ImageSource | Region, encoder: Callable[[], ImageEncoder]) -> Image.Image:
    """The RGB image a query describes (a region: cut from the photo)."""
    if isinstance(query, Region):
        source = query.source
        if not isinstance(source, Image.Image):
            source = decode_query(source, encoder(), region=True)
        return crop(source.convert("RGB"), query.box)
    image = query if isinstance(query, Image.Image) else decode_query(query, encoder())
    return image.convert("RGB")


def describe_queries(
    queries: Sequence[Query],
    encoder: Callable[[], ImageEncoder],
    store: MetadataStore | None,
    *,
    object_views: bool = False,
    vocabulary: Callable[[], Vocabulary] | None = None,
) -> DescribedQueries:
    """Raw vectors of the queries; ``encoder`` is called only if some query needs the model.

    ``object_views``: where :func:`lookalike.image.localization.find_object` finds an object on a
    plain background in a query photo, the object cut from it is described too (a second
    view, searched alongside the whole photo) and its box returned. ``vocabulary``: what the
    words of :class:`Text` queries are matched to (called only if there are some);
    :class:`lookalike.search.words.UnknownWords` if a word names nothing."""
    vectors: list[np.ndarray | None] = [None] * len(queries)
    own_ids: list[int | None] = [None] * len(queries)
    boxes: list[Box | None] = [None] * len(queries)
    words: dict[int, WordQuery] = {}
    to_embed: list[tuple[int, Image.Image]] = []
    for i, asked in enumerate(queries):
        query: Query | None = asked
        if isinstance(asked, Text):
            if vocabulary is None:
                raise InvalidInput("this search cannot match words: no vocabulary given")
            words[i] = vocabulary().match(asked.words, asked.match)
            query = asked.like
        if query is None:
            continue
        assert not isinstance(query, Text)
        if isinstance(query, np.ndarray):
            vectors[i] = np.asarray(query, dtype=np.float32).ravel()
            continue
        source = query.source if isinstance(query, Region) else query
        if isinstance(source, (str, os.PathLike)) and store is not None:
            found = store.lookup(os.path.abspath(source))
            if found is not None:
                own_ids[i] = found[0]
                if not isinstance(query, Region):  # the whole file: its stored vector
                    vectors[i] = found[1]
                    continue
        to_embed.append((i, query_image(query, encoder)))
    views: dict[int, np.ndarray] = {}
    if to_embed:
        photos = [image for _, image in to_embed]
        objects = [find_object(image) for image in photos] if object_views else []
        crops = [(j, box) for j, box in enumerate(objects) if box is not None]
        # One network run for the photos and the objects cut from them (ONNX Runtime gives
        # each image the same vector in a batch as alone).
        described = encoder().describe(photos + [crop_to(photos[j], box) for j, box in crops])
        n = len(photos)
        whole = zip(to_embed, described.vectors[:n], described.boxes[:n], strict=True)
        for (i, _), vector, box in whole:
            vectors[i], boxes[i] = vector, box
        for (j, box), vector in zip(crops, described.vectors[n:], strict=True):
            i = to_embed[j][0]
            views[i], boxes[i] = vector, box
    photos_described = [v for v in vectors if v is not None]
    dims = len(photos_described[0]) if photos_described else 0
    stacked = np.stack([np.zeros(dims, np.float32) if v is None else v for v in vectors])
    word_only = frozenset(i for i, v in enumerate(vectors) if v is None)
    return DescribedQueries(stacked, own_ids, boxes, views, words, word_only)


@dataclass(frozen=True)
class CategoryChoice:
    """The categories a query searches (None: all) and its top predictions."""

    searched: list[str] | None
    predictions: list[tuple[str, float]]


def choose_categories_for(
    classifier: CategoryModel,
    raw: np.ndarray,
    *,
    coverage: float = config.CATEGORY_COVERAGE,
    max_categories: int = config.MAX_CATEGORIES,
) -> list[CategoryChoice]:
    """Per query, the top categories whose probabilities add up to ``coverage``, unless that
    takes more than ``max_categories``: then the prediction is unsure and everything is
    searched."""
    choices = []
    for probabilities in classifier.predict_proba(raw):
        chosen = choose_categories(probabilities, coverage=coverage, max_categories=max_categories)
        searched = None if chosen is None else [classifier.classes[j] for j in chosen]
        choices.append(CategoryChoice(searched, top_predictions(classifier, probabilities)))
    return choices


def top_predictions(
    classifier: CategoryModel, probabilities: np.ndarray
) -> list[tuple[str, float]]:
    """The five most probable categories of one query, with their probabilities."""
    top = np.argsort(-probabilities)[:5]
    return [(classifier.classes[j], float(probabilities[j])) for j in top]


def expand_queries(index: VectorIndex, queries: np.ndarray, top_ids: np.ndarray) -> np.ndarray:
    """Average query expansion: each query plus its top results' vectors, renormalised."""
    if not index.capabilities.reconstruct:
        raise Unavailable("query expansion needs an index that returns stored vectors")
    expanded = queries.astype(np.float32, copy=True)
    for row, ids in enumerate(top_ids):
        found = ids[ids >= 0]
        if len(found):
            expanded[row] += index.vectors_of(found).sum(axis=0)
    norms = np.linalg.norm(expanded, axis=1, keepdims=True)
    return (expanded / np.maximum(norms, 1e-12)).astype(np.float32)


def rank(
    snapshot: SearchSnapshot,
    vectors: np.ndarray,
    k: int,
    *,
    exclude: Sequence[int | None] | None = None,
    searched: Sequence[list[str] | None] | None = None,
    expand: int = 0,
    index: VectorIndex | None = None,
    augmented: AugmentedVectors | None = None,
    within: Sequence[np.ndarray | None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` of the top ``k`` for index-space query ``vectors`` (of ``index``,
    by default the snapshot's).

    ``searched[i]``: the categories query ``i`` may return (None: all); ``within[i]``: the
    sorted ids it may return (None: all; the words of a :class:`Text` query with a photo
    found them). ``expand`` > 0: each
    query is averaged with its top ``expand`` results and searched again. ``augmented``
    (``snapshot.augmented(index)``): re-ranked instead, by alpha query expansion against
    the database-side augmented vectors (:mod:`lookalike.search.rerank`); scores are those of the
    re-ranked vectors.
    """
    index = snapshot.index if index is None else index
    n = len(vectors)
    exclude = list(exclude) if exclude is not None else [None] * n
    filters = _filters(snapshot, n, searched, within)
    if augmented is not None:
        return augmented.search(index, vectors, k, filters=filters, exclude=exclude)
    if all(f is None for f in filters):
        scores, ids = index.search(vectors, k, exclude=exclude)
        if expand > 0:
            vectors = expand_queries(index, vectors, ids[:, :expand])
            scores, ids = index.search(vectors, k, exclude=exclude)
        return scores, ids
    out_scores = np.full((n, k), -np.inf, dtype=np.float32)
    out_ids = np.full((n, k), -1, dtype=np.int64)
    # Queries with the same filter (the partition's array of their categories) are searched
    # together: one scan of a store for all of them.
    groups: dict[int | None, list[int]] = {}
    for i, allowed in enumerate(filters):
        groups.setdefault(None if allowed is None else id(allowed), []).append(i)
    for rows in groups.values():
        allowed = filters[rows[0]]
        query, mine = vectors[rows], [exclude[i] for i in rows]
        scores, ids = index.search(query, k, filter=allowed, exclude=mine)
        if expand > 0:
            query = expand_queries(index, query, ids[:, :expand])
            scores, ids = index.search(query, k, filter=allowed, exclude=mine)
        out_scores[rows], out_ids[rows] = scores, ids
    return out_scores, out_ids


def rank_by_category(
    snapshot: SearchSnapshot,
    vectors: np.ndarray,
    k: int,
    weights: np.ndarray,
    *,
    exclude: Sequence[int | None] | None = None,
    expand: int = 0,
    index: VectorIndex | None = None,
    augmented: AugmentedVectors | None = None,
    within: Sequence[np.ndarray | None] | None = None,
    settle: int | None = None,
) -> tuple[np.ndarray, np.ndarray, list[list[str] | None]]:
    """``(scores, ids, searched)`` of the top ``k`` by soft category-aware ranking: an
    image's score for query ``i`` is its :func:`rank` score plus ``weights[i, c]`` (<= 0),
    ``c`` its category in the snapshot's partition (see
    :func:`lookalike.search.categories.category_weights`).

    A query's categories are searched heaviest first, one at a time, until no image of the
    next one can make its top ``settle`` (default ``k``; a cosine is at most 1): exact, and
    one search for a query the classifier is sure of (the results after the first
    ``settle``, spares for images deleted meanwhile, come from the categories searched).
    After :data:`config.CATEGORY_ROUNDS` categories, the rest are searched together: their
    top ``k`` by cosine, then weighted. ``searched[i]``: the categories query ``i``
    searched, all its results are in them; None when it went on to the rest (the whole
    collection)."""
    partition = snapshot.partition
    if partition is None:
        raise ValueError("soft category ranking needs the snapshot's category partition")
    n = len(vectors)
    exclude = list(exclude) if exclude is not None else [None] * n
    order = np.argsort(-weights, axis=1, kind="stable")
    best_scores = np.full((n, k), -np.inf, dtype=np.float32)
    best_ids = np.full((n, k), -1, dtype=np.int64)
    rounds = min(config.CATEGORY_ROUNDS, len(partition.classes))
    last = min(k if settle is None else settle, k) - 1
    rows = np.arange(n)
    steps = np.zeros(n, dtype=np.int64)  # categories searched one at a time, per query
    for step in range(rounds + 1):
        steps[rows] = step + 1
        picked: list[list[str] | None] | None = None
        allowed: list[np.ndarray | None] | None = None
        if step == rounds:  # the categories not searched yet, at once
            allowed = [_rest(partition, order[i, :step], within, i) for i in rows.tolist()]
        else:
            picked = [[partition.classes[c]] for c in order[rows, step]]
            allowed = None if within is None else [within[i] for i in rows.tolist()]
        scores, ids = rank(
            snapshot,
            vectors[rows],
            k,
            exclude=[exclude[i] for i in rows.tolist()],
            searched=picked,
            expand=expand,
            index=index,
            augmented=augmented,
            within=allowed,
        )
        codes = partition.codes[np.searchsorted(partition.ids, np.maximum(ids, 0))]
        scores = scores + np.take_along_axis(weights[rows], codes, axis=1)
        _keep_best(best_scores, best_ids, rows, scores, ids)
        if step == rounds:
            break
        # the next category alone, or after the last round the rest together (none: -inf)
        later = order[rows, step + 1 : step + 2] if step + 1 < rounds else order[rows, rounds:]
        heaviest = np.take_along_axis(weights[rows], later, axis=1).max(axis=1, initial=-np.inf)
        rows = rows[1.0 + heaviest > best_scores[rows, last]]
        if not len(rows):
            break
    searched: list[list[str] | None] = [
        None if taken > rounds else [partition.classes[c] for c in order[i, :taken]]
        for i, taken in enumerate(steps.tolist())
    ]
    return best_scores, best_ids, searched


def _rest(
    partition: CategoryPartition,
    searched: np.ndarray,
    within: Sequence[np.ndarray | None] | None,
    row: int,
) -> np.ndarray:
    """Sorted ids of the rows outside the ``searched`` categories (codes), within
    ``within[row]`` if given."""
    rest = partition.ids[~np.isin(partition.codes, searched)]
    only = None if within is None else within[row]
    return rest if only is None else np.intersect1d(rest, only)


def _together(searched: list[list[str] | None]) -> list[str] | None:
    """The categories some searches searched together, in order (None: any searched all)."""
    names: list[str] = []
    for found in searched:
        if found is None:
            return None
        names += [name for name in found if name not in names]
    return names


def _keep_best(
    best_scores: np.ndarray,
    best_ids: np.ndarray,
    rows: np.ndarray,
    scores: np.ndarray,
    ids: np.ndarray,
) -> None:
    """Merge (``scores``, ``ids``) into the kept top of ``rows`` (disjoint ids), in place."""
    both_scores = np.concatenate([best_scores[rows], scores], axis=1)
    both_ids = np.concatenate([best_ids[rows], ids], axis=1)
    top = np.argsort(-both_scores, axis=1, kind="stable")[:, : best_scores.shape[1]]
    best_scores[rows] = np.take_along_axis(both_scores, top, axis=1)
    best_ids[rows] = np.take_along_axis(both_ids, top, axis=1)


def _filters(
    snapshot: SearchSnapshot,
    n: int,
    searched: Sequence[list[str] | None] | None,
    within: Sequence[np.ndarray | None] | None,
) -> list[np.ndarray | None]:
    """Per query, the sorted ids it may return (None: any): its categories' images
    (``searched``, with the snapshot's partition), within ``within``."""
    partition = snapshot.partition
    out: list[np.ndarray | None] = []
    for i in range(n):
        categories = None if searched is None else searched[i]
        allowed = None if partition is None or categories is None else partition.ids_of(categories)
        only = None if within is None else within[i]
        if only is not None:
            allowed = only if allowed is None else np.intersect1d(allowed, only)
        out.append(allowed)
    return out


def search(
    snapshot: SearchSnapshot,
    store: MetadataStore,
    queries: DescribedQueries,
    options: SearchOptions = SearchOptions(),
    *,
    calibration: Calibration | None = None,
) -> list[QueryOutcome]:
    """Described queries -> outcomes, on one snapshot (see the module's steps).

    A query of words alone (:class:`Text` without a photo) is ranked by its concepts'
    directions in the common space (:func:`search_words`; by-category search, query
    expansion and re-ranking are for photos and leave it as it is). A photo query with
    words is searched as any photo query, among the images its words find
    (:func:`word_candidates`); its score is the photo's cosine. See :func:`search_photos`
    for the rest."""
    n = len(queries.own_ids)
    outcomes: dict[int, QueryOutcome] = {
        i: search_words(snapshot, store, queries.words[i], k=options.k, min_score=options.min_score)
        for i in sorted(queries.word_only)
    }
    rows = [i for i in range(n) if i not in queries.word_only]
    if rows:
        photos = queries.take(rows)
        within = [
            word_candidates(snapshot, photos.words[j]) if j in photos.words else None
            for j in range(len(rows))
        ]
        found = search_photos(
            snapshot,
            store,
            photos,
            options,
            within=within if photos.words else None,
            calibration=calibration,
        )
        for j, (i, outcome) in enumerate(zip(rows, found, strict=True)):
            if j in photos.words:
                outcome = dataclasses.replace(outcome, concepts=concept_names(photos.words[j]))
            outcomes[i] = outcome
    return [outcomes[i] for i in range(n)]


def concept_names(query: WordQuery) -> list[str]:
    return [f"{c.source}:{c.name}" for c in query.concepts]


def word_ranking(
    snapshot: SearchSnapshot, query: WordQuery, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(scores, ids)`` (1, ``k``) of the images the words find, best first: each the cosine
    of the image and the words' direction in the common space (the best of the concepts'
    with ``any``), see :mod:`lookalike.search.words`."""
    directions = query_directions(query, snapshot.classifier, snapshot.codec.direction)
    scores, ids = snapshot.index.search(directions, k)
    best = (ids[:1], scores[:1])
    for row in range(1, len(directions)):
        fused_ids, fused_scores = fuse(best, (ids[row : row + 1], scores[row : row + 1]), k)
        best = (fused_ids, fused_scores)
    return best[1], best[0]


def word_candidates(snapshot: SearchSnapshot, query: WordQuery) -> np.ndarray:
    """Sorted ids of the images the words find, for a photo searched among them: the top
    :data:`config.WORD_CANDIDATES` of their ranking that are not weak matches of them
    (cosine at least :data:`config.WEAK_WORDS`)."""
    scores, ids = word_ranking(snapshot, query, config.WORD_CANDIDATES)
    kept = (ids[0] >= 0) & (scores[0] >= config.WEAK_WORDS)
    return np.sort(ids[0][kept])


def search_words(
    snapshot: SearchSnapshot,
    store: MetadataStore,
    query: WordQuery,
    *,
    k: int = config.DEFAULT_K,
    min_score: float | None = None,
) -> QueryOutcome:
    """The images a query of words alone finds (see :func:`word_ranking`); results scored
    below :data:`config.WEAK_WORDS` are weak matches."""
    scores, ids = word_ranking(snapshot, query, k + config.DELETED_SLACK)
    (row,) = results_for(store, ids, scores, min_score)
    return QueryOutcome(row[:k], weak_below=config.WEAK_WORDS, concepts=concept_names(query))


def search_photos(
    snapshot: SearchSnapshot,
    store: MetadataStore,
    queries: DescribedQueries,
    options: SearchOptions = SearchOptions(),
    *,
    within: Sequence[np.ndarray | None] | None = None,
    calibration: Calibration | None = None,
) -> list[QueryOutcome]:
    """Described photo queries -> outcomes, on one snapshot (see the module's steps).
    ``within[i]``: the sorted ids query ``i`` may return (None: any).
    ``calibration`` (the collection model's, :func:`lookalike.search.calibration.for_model`):
    each result also gets its confidences ``same_item`` and ``same_kind``.

    ``rerank``: database-side augmentation + alpha query expansion (it replaces ``expand``)
    orders the results after the plain search's best match, which stays first with the plain
    results as good as it (:func:`lookalike.search.rerank.keep_plain_top`: more of the same
    kind without losing the one exact item); a no-op, said in the outcomes' ``reranked``,
    below :data:`lookalike.config.RERANK_MIN_IMAGES` images.

    Category-aware search (``by_category``) ranks in the space learned from the labels
    (the snapshot's LDA projection) when there is one, and uses the classifier's predicted
    categories: ``category_ranking`` "soft" (with the projection) weighs each image by the
    probability of its category, nothing left out (:func:`rank_by_category`; ``searched``:
    the categories it searched before no other could reach its top k, None if it went on
    to all of them); "filter", or a collection without the projection, searches only the top
    categories covering ``coverage``, everything when that takes more than
    ``max_categories`` (see :func:`choose_categories_for`). A query with an object view
    (``queries.views``: border localization) is searched twice, every result at its better
    score (:func:`lookalike.image.localization.fuse`).

    One meaning of the score, whatever ordered the results: re-ranking, query expansion and
    the LDA projection choose the results and their order, and each result's score is then
    the one plain search gives it (:func:`common_scores`); ``min_score`` applies to it."""
    k, min_score, expand, rerank = options.k, options.min_score, options.expand, options.rerank
    by_category, soft = options.by_category, options.category_ranking == "soft"
    encode: Callable[[np.ndarray], np.ndarray] = snapshot.encode
    index = None
    if by_category and snapshot.projection is not None and snapshot.projected is not None:
        encode, index = snapshot.projection.transform, snapshot.projected
    if rerank and expand:
        raise InvalidInput("re-ranking expands the query itself: use rerank or expand, not both")
    augmented = snapshot.augmented(index) if rerank else None
    if rerank and augmented is None:
        log.info(
            "too few images to re-rank (fewer than %d): plain search", config.RERANK_MIN_IMAGES
        )
    vectors = encode(queries.vectors)
    choices: list[CategoryChoice] | None = None
    weights: np.ndarray | None = None
    if by_category:
        if snapshot.classifier is None:
            log.info("no category classifier: searching everything")
        elif soft and index is not None and snapshot.partition is not None:
            probabilities = snapshot.classifier.predict_proba(queries.vectors)
            weights = category_weights(probabilities)
            choices = [
                CategoryChoice(None, top_predictions(snapshot.classifier, p)) for p in probabilities
            ]
        else:
            choices = choose_categories_for(
                snapshot.classifier,
                queries.vectors,
                coverage=options.coverage,
                max_categories=options.max_categories,
            )
    # A few more than asked: an image deleted after the snapshot was taken has no record any
    # more and is left out, and the next one takes its place.
    searched = [c.searched for c in choices] if choices else None
    # The object views are ranked with the queries (one scan of a store for all of them).
    viewed = list(queries.views)
    n = len(vectors)
    if viewed:
        vectors = np.concatenate([vectors, encode(np.stack([queries.views[i] for i in viewed]))])
    exclude = [*queries.own_ids, *(queries.own_ids[i] for i in viewed)]
    allowed = [*within, *(within[i] for i in viewed)] if within is not None else None

    def ranked(
        width: int, expand_by: int, reranking: AugmentedVectors | None
    ) -> tuple[np.ndarray, np.ndarray, list[list[str] | None] | None]:
        """``(scores, ids)`` of each query's top ``width``, its object view's fused in, and
        (soft category ranking) the categories each row searched."""
        by_rows = None
        if weights is not None:
            scores, ids, by_rows = rank_by_category(
                snapshot,
                vectors,
                width,
                np.concatenate([weights, weights[viewed]]),
                exclude=exclude,
                expand=expand_by,
                index=index,
                augmented=reranking,
                within=allowed,
                settle=min(k, width),
            )
        else:
            scores, ids = rank(
                snapshot,
                vectors,
                width,
                exclude=exclude,
                searched=[*searched, *(searched[i] for i in viewed)] if searched else None,
                expand=expand_by,
                index=index,
                augmented=reranking,
                within=allowed,
            )
        for row, i in enumerate(viewed, start=n):
            fused_ids, fused_scores = fuse(
                (ids[i : i + 1], scores[i : i + 1]),
                (ids[row : row + 1], scores[row : row + 1]),
                width,
            )
            ids[i], scores[i] = fused_ids[0], fused_scores[0]
        return scores[:n], ids[:n], by_rows

    scores, ids, by_rows = ranked(k + config.DELETED_SLACK, expand, augmented)
    if by_rows is not None:
        assert choices is not None
        for i, choice in enumerate(choices):
            views = [by_rows[row] for row, j in enumerate(viewed, start=n) if j == i]
            choices[i] = dataclasses.replace(choice, searched=_together([by_rows[i], *views]))
    if augmented is not None:  # the plain search's best match stays first
        plain_scores, plain_ids, _ = ranked(config.RERANK_KEEP_TOP, 0, None)
        ids = keep_plain_top((plain_scores, plain_ids), ids)
    if index is not None or augmented is not None or expand > 0:  # ordered in another space
        scores = common_scores(snapshot, queries, ids)
    confidences = calibration.confidences(scores) if calibration is not None else None
    # ``min_score`` cuts the top k (the spares after them only stand in for deleted images)
    rows = results_for(store, ids, scores, None, confidences)
    return [
        QueryOutcome(
            [r for r in row[:k] if min_score is None or r.score >= min_score],
            choices[i].searched if choices else None,
            choices[i].predictions if choices else [],
            queries.boxes[i],
            augmented is not None,
        )
        for i, row in enumerate(rows)
    ]


def common_scores(
    snapshot: SearchSnapshot, queries: DescribedQueries, ids: np.ndarray
) -> np.ndarray:
    """The score of each result ``ids[i, j]`` of query ``i``: the cosine of the query and the
    result in the collection's common space (the codec's, which plain search ranks in), the
    better of the query's two views when it has an object view; -inf where ``ids`` is -1.

    The results' vectors are the snapshot index's own (what plain search compares with; for
    an approximate index, the stored vectors through the codec, as its refine step and the
    exact scan use). An image removed from the index since (an approximate index changes in
    place) gets id -1."""
    index = snapshot.index
    out = np.full(ids.shape, -np.inf, dtype=np.float32)
    found = np.unique(ids[ids >= 0])
    if not len(found):
        return out
    if not index.capabilities.reconstruct:
        raise Unavailable("scoring re-ordered results needs an index that returns stored vectors")
    whole = snapshot.encode(queries.vectors)
    try:
        stored = index.vectors_of(found)
    except KeyError:  # removed meanwhile
        found = found[np.isin(found, index.ids)]
        ids[~np.isin(ids, found)] = -1
        stored = index.vectors_of(found) if len(found) else whole[:0]
    for i, row in enumerate(ids):
        present = row >= 0
        vectors = stored[np.searchsorted(found, row[present])]
        scores = vectors @ whole[i]
        view = queries.views.get(i)
        if view is not None:
            scores = np.maximum(scores, vectors @ snapshot.encode(view[None])[0])
        out[i, present] = scores
    return out


def results_for(
    store: MetadataStore,
    ids: np.ndarray,
    scores: np.ndarray,
    min_score: float | None = None,
    confidences: tuple[np.ndarray, np.ndarray] | None = None,
) -> list[list[SearchResult]]:
    """Turn rows of (id, score) into results with the images' metadata (and the
    ``(same_item, same_kind)`` confidences, rows like ``scores``). An id the store no
    longer has (deleted since the snapshot was taken) is left out."""
    records = store.records(int(i) for i in np.unique(ids) if i >= 0)
    results: list[list[SearchResult]] = []
    for r, (row_ids, row_scores) in enumerate(zip(ids, scores, strict=True)):
        row = []
        for j, (i, s) in enumerate(zip(row_ids, row_scores, strict=True)):
            record = records.get(int(i))
            if record is None or (min_score is not None and s < min_score):
                continue
            item, kind = (
                (None, None)
                if confidences is None
                else (float(confidences[0][r, j]), float(confidences[1][r, j]))
            )
            row.append(
                SearchResult(
                    record.id,
                    record.path,
                    float(s),
                    record.category,
                    record.cluster,
                    record.box,
                    item,
                    kind,
                )
            )
        results.append(row)
    return results
