"""Near-duplicate groups: a blocked range self-join over unit vectors, then connected pieces.

Large collections (those searched with an approximate index) use the index's neighbours
instead: :func:`find_duplicates_by_neighbours`.

Every image is compared with every later image by matrix products over blocks of rows, and
only the pairs at or above the cosine ``threshold`` are kept. A block holds at most
``block_elements`` scores (64 MiB of float32 by default), so memory is the vectors plus one
block, never an N x N matrix: 100,000 x 1280 vectors take about 0.7 GB in all
(BENCHMARKS.md). Each image keeps at most ``max_neighbours`` pairs, its best, which bounds the
pair list when thousands of copies of one picture make every pair a duplicate; groups stay
connected through those kept pairs. Groups are the connected components of the kept pairs.

Default threshold: :data:`lookalike.config.DUPLICATE_THRESHOLD`, chosen on Caltech-101 with
re-encoded, resized, cropped and brightened copies (docs/EVALUATION.md). Each group found is
then sorted into tiers (exact copies, near-duplicates, merely similar shots) with a copy to keep
suggested, by :mod:`lookalike.analysis.duplicate_tiers`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from lookalike import config
from lookalike.analysis.duplicate_tiers import Member, Tier, facts_of, tier_group
from lookalike.index.base import VectorIndex
from lookalike.search.snapshot import SearchSnapshot
from lookalike.store.base import MetadataStore
from lookalike.store.records import ImageRecord

if TYPE_CHECKING:
    from lookalike.index.ann import SearchSettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DuplicateGroup:
    """Images that are near-duplicates of each other.

    ``scores[i]`` is image ``ids[i]``'s best cosine with another member; ``min_score`` is the
    weakest pair that holds the group together, ``max_score`` the strongest. ``paths``, the
    ``tier`` and the ``members`` (in review order, each with its tier, whether to keep it and
    why) are filled in by :meth:`lookalike.Collection.duplicates`.
    """

    ids: tuple[int, ...]
    scores: tuple[float, ...]
    min_score: float
    max_score: float
    paths: tuple[str, ...] = ()
    tier: Tier | None = None
    members: tuple[Member, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def pictures(self) -> int:
        """Distinct pictures (other shots) in the group."""
        return len({m.picture for m in self.members})

    def as_dict(self) -> dict[str, object]:
        if self.members:
            images = [m.as_dict() for m in self.members]
        else:
            images = [
                {"id": i, "score": round(s, 6), **({"path": self.paths[n]} if self.paths else {})}
                for n, (i, s) in enumerate(zip(self.ids, self.scores, strict=True))
            ]
        return {
            "size": len(self.ids),
            **({"tier": self.tier, "pictures": self.pictures} if self.members else {}),
            "min_score": round(self.min_score, 6),
            "max_score": round(self.max_score, 6),
            "images": images,
        }


def duplicate_pairs(
    vectors: np.ndarray,
    *,
    threshold: float = config.DUPLICATE_THRESHOLD,
    max_neighbours: int = config.DUPLICATE_MAX_NEIGHBOURS,
    block_elements: int = config.DUPLICATE_BLOCK_ELEMENTS,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row pairs (i < j) with cosine >= ``threshold``: arrays ``first``, ``second``, ``score``.

    At most ``max_neighbours`` pairs per first row, its best.
    """
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n = len(vectors)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    start = 0
    while start < n:
        # Rows i in [start, stop) against columns j in [start, n): the upper triangle only.
        # Later blocks have fewer columns, so they take more rows.
        columns = n - start
        stop = min(n, start + max(1, block_elements // columns))
        block = vectors[start:stop] @ vectors[start:].T
        rows = stop - start
        block[:, :rows][np.tri(rows, dtype=bool)] = -np.inf  # j <= i
        r, c = np.nonzero(block >= threshold)
        s = block[r, c]
        del block
        r, c, s = _best_per_row(r, c, s, max_neighbours)
        firsts.append(r + start)
        seconds.append(c + start)
        scores.append(s)
        start = stop
    empty_i = np.empty(0, dtype=np.int64)
    first = np.concatenate(firsts).astype(np.int64) if firsts else empty_i
    second = np.concatenate(seconds).astype(np.int64) if seconds else empty_i
    score = np.concatenate(scores) if scores else np.empty(0, dtype=np.float32)
    return first, second, score.astype(np.float32)


def _best_per_row(
    rows: np.ndarray, cols: np.ndarray, scores: np.ndarray, limit: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if len(rows) == 0 or np.bincount(rows).max() <= limit:
        return rows, cols, scores
    order = np.lexsort((-scores, rows))  # by row, best first within a row
    rows, cols, scores = rows[order], cols[order], scores[order]
    row_start = np.searchsorted(rows, rows, side="left")
    keep = np.arange(len(rows)) - row_start < limit
    return rows[keep], cols[keep], scores[keep]


def group_pairs(
    n: int, first: np.ndarray, second: np.ndarray, score: np.ndarray
) -> list[DuplicateGroup]:
    """Connected components (of 2 or more rows) of the pair graph, as groups of row positions.

    Tightest groups first (by their weakest pair), then by first row: a long list can be
    reviewed from the top until the groups get loose.
    """
    if len(first) == 0:
        return []
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(first), dtype=np.int8), (first, second)), shape=(n, n))
    count, component = connected_components(graph, directed=False)
    best = np.full(n, -np.inf, dtype=np.float32)
    np.maximum.at(best, first, score)
    np.maximum.at(best, second, score)
    weakest = np.full(count, np.inf, dtype=np.float32)
    strongest = np.full(count, -np.inf, dtype=np.float32)
    np.minimum.at(weakest, component[first], score)
    np.maximum.at(strongest, component[first], score)
    members = np.unique(np.concatenate([first, second]))
    by_component = members[np.argsort(component[members], kind="stable")]
    splits = np.flatnonzero(np.diff(component[by_component])) + 1
    groups: list[DuplicateGroup] = []
    for rows in np.split(by_component, splits):
        c = component[rows[0]]
        groups.append(
            DuplicateGroup(
                ids=tuple(int(r) for r in rows),
                scores=tuple(float(best[r]) for r in rows),
                min_score=float(weakest[c]),
                max_score=float(strongest[c]),
            )
        )
    groups.sort(key=lambda g: (-g.min_score, g.ids[0]))
    return groups


def find_duplicates(
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    threshold: float = config.DUPLICATE_THRESHOLD,
    max_neighbours: int = config.DUPLICATE_MAX_NEIGHBOURS,
    block_elements: int = config.DUPLICATE_BLOCK_ELEMENTS,
) -> list[DuplicateGroup]:
    """Groups of near-duplicate images among unit ``vectors`` (one per id), by id."""
    ids = np.asarray(ids, dtype=np.int64)
    if len(ids) != len(vectors):
        raise ValueError("ids and vectors differ in length")
    started = time.perf_counter()
    first, second, score = duplicate_pairs(
        vectors, threshold=threshold, max_neighbours=max_neighbours, block_elements=block_elements
    )
    groups = group_pairs(len(ids), first, second, score)
    log.info(
        "%d pairs, %d groups among %d vectors at cosine >= %.3f in %.2f s",
        len(first),
        len(groups),
        len(ids),
        threshold,
        time.perf_counter() - started,
    )
    return _with_ids(groups, ids)


def _with_ids(groups: list[DuplicateGroup], ids: np.ndarray) -> list[DuplicateGroup]:
    """Groups of row numbers (what :func:`group_pairs` finds) as groups of these rows' ids."""
    return [dataclasses.replace(g, ids=tuple(int(ids[r]) for r in g.ids)) for g in groups]


def _neighbour_search() -> SearchSettings:
    """How hard the approximate index looks for near-duplicates: they are an image's very
    closest neighbours, which a short HNSW candidate list finds (100,000 Lite0-shaped
    vectors, 20,000 queries: efSearch 32 found the same 509 candidate pairs as 128, in 2.5x
    less time); IVF a few cells (:data:`lookalike.config.DUPLICATE_NPROBE`)."""
    from lookalike.index.ann import SearchSettings

    return SearchSettings(nprobe=config.DUPLICATE_NPROBE, ef_search=config.DUPLICATE_EF_SEARCH)


def find_duplicates_by_neighbours(
    batches: Iterable[tuple[np.ndarray, np.ndarray]],
    all_ids: np.ndarray,
    index: VectorIndex,
    encode: Callable[[np.ndarray], np.ndarray],
    vectors_of: Callable[[np.ndarray], np.ndarray],
    *,
    threshold: float = config.DUPLICATE_THRESHOLD,
    max_neighbours: int = config.DUPLICATE_MAX_NEIGHBOURS,
) -> list[DuplicateGroup]:
    """Near-duplicate groups of a large collection from its (approximate) index: each image's
    ``max_neighbours`` nearest neighbours are the candidates, not all N(N-1)/2 pairs.

    ``batches`` yields (ids, stored vectors) of every image; ``encode`` maps stored vectors
    to the index's space; ``vectors_of`` reads stored vectors by id. A candidate pair within
    :data:`lookalike.config.DUPLICATE_CANDIDATE_MARGIN` of ``threshold`` in the index's space
    is scored again on the stored vectors, so the threshold means what it means for
    :func:`find_duplicates`. Memory: one batch, the pairs found and the ids, never the whole
    matrix.
    """
    started = time.perf_counter()
    all_ids = np.asarray(all_ids, dtype=np.int64)
    firsts: list[np.ndarray] = []
    seconds: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    from lookalike.index.ann import AnnIndex  # FAISS: imported only where it is used
    from lookalike.index.refine import RefinedIndex

    if isinstance(index, RefinedIndex):  # its candidates are re-scored below, on stored vectors
        index = index.approximate
    search: Callable[..., tuple[np.ndarray, np.ndarray]] = index.search
    if isinstance(index, AnnIndex):
        search = functools.partial(index.search, settings=_neighbour_search())
    for ids, vectors in batches:
        found_scores, found = search(encode(vectors), max_neighbours + 1)
        rows, cols = np.nonzero((found >= 0) & (found != ids[:, None]))
        keep = found_scores[rows, cols] >= threshold - config.DUPLICATE_CANDIDATE_MARGIN
        rows, cols = rows[keep], cols[keep]
        if not len(rows):
            continue
        others = found[rows, cols]
        unique_others, where = np.unique(others, return_inverse=True)
        other_vectors = vectors_of(unique_others)
        exact = np.einsum("ij,ij->i", vectors[rows], other_vectors[where])
        good = exact >= threshold
        a, b = ids[rows[good]], others[good]
        firsts.append(np.minimum(a, b))
        seconds.append(np.maximum(a, b))
        scores.append(exact[good].astype(np.float32))
    if not firsts:
        return []
    first, second, score = (np.concatenate(x) for x in (firsts, seconds, scores))
    # Each pair once (found from both ends, or from one).
    pairs, unique_rows = np.unique(np.stack([first, second], axis=1), axis=0, return_index=True)
    first_rows = np.searchsorted(all_ids, pairs[:, 0])
    second_rows = np.searchsorted(all_ids, pairs[:, 1])
    first_rows, second_rows, pair_scores = _best_per_row(
        first_rows, second_rows, score[unique_rows], max_neighbours
    )
    groups = group_pairs(len(all_ids), first_rows, second_rows, pair_scores)
    log.info(
        "%d pairs, %d groups among %d images from index neighbours in %.1f s",
        len(first_rows),
        len(groups),
        len(all_ids),
        time.perf_counter() - started,
    )
    return _with_ids(groups, all_ids)


def with_records(
    groups: list[DuplicateGroup], records: Mapping[int, ImageRecord]
) -> list[DuplicateGroup]:
    """Groups with their paths, the image with the most pixels first (the one to keep), then
    the others by best score; images no longer indexed are left out (and groups left with
    fewer than two images)."""
    out: list[DuplicateGroup] = []
    for group in groups:
        members = [
            (records[i], s) for i, s in zip(group.ids, group.scores, strict=True) if i in records
        ]
        if len(members) < 2:
            continue
        members.sort(key=lambda m: (-m[0].width * m[0].height, -m[1], m[0].path))
        out.append(
            dataclasses.replace(
                group,
                ids=tuple(r.id for r, _ in members),
                scores=tuple(s for _, s in members),
                paths=tuple(r.path for r, _ in members),
            )
        )
    return out


#: Groups listed in this order of tiers: the surest first.
TIER_ORDER = {"exact": 0, "near": 1, "similar": 2}


def with_tiers(
    groups: list[DuplicateGroup], vectors_of: Callable[[np.ndarray], np.ndarray]
) -> list[DuplicateGroup]:
    """Groups (with their paths) sorted into tiers, each with its copies to keep and why:
    every member's file is read and decoded once (hashes, size, compression), a few at a
    time. Exact groups first, then near, then similar; tightest first within a tier."""
    started = time.perf_counter()
    facts = iter(facts_of([p for g in groups for p in g.paths]))
    out = []
    for group in groups:
        group_facts = [next(facts) for _ in group.ids]
        vectors = vectors_of(np.asarray(group.ids, dtype=np.int64))
        tier, members = tier_group(group.ids, group.scores, group_facts, vectors)
        out.append(
            dataclasses.replace(
                group,
                ids=tuple(m.id for m in members),
                scores=tuple(m.score for m in members),
                paths=tuple(m.path for m in members),
                tier=tier,
                members=tuple(members),
            )
        )
    out.sort(key=lambda g: (TIER_ORDER[g.tier or "similar"], -g.min_score, g.ids[0]))
    log.info(
        "%d groups sorted into tiers (%d files read) in %.1f s",
        len(out),
        sum(len(g) for g in out),
        time.perf_counter() - started,
    )
    return out


def _rows_of(
    ids: np.ndarray, order: np.ndarray, vectors: np.ndarray, wanted: np.ndarray
) -> np.ndarray:
    """The rows of ``vectors`` (one per id of ``ids``; ``order`` sorts ``ids``) of ``wanted``."""
    return vectors[order[np.searchsorted(ids, wanted, sorter=order)]]


def find_in_store(
    store: MetadataStore,
    approximate: SearchSnapshot | None,
    *,
    threshold: float = config.DUPLICATE_THRESHOLD,
    max_neighbours: int = config.DUPLICATE_MAX_NEIGHBOURS,
) -> list[DuplicateGroup]:
    """The near-duplicate groups of a store's images, with their records: by an exact
    self-join of the vectors, or, given the search snapshot of a collection with an
    approximate index (``approximate``), from each image's neighbours in that index (a
    batch of vectors in memory at a time); then sorted into tiers (:func:`with_tiers`)."""
    vectors_of: Callable[[np.ndarray], np.ndarray]
    if approximate is not None:
        groups = find_duplicates_by_neighbours(
            store.vector_batches(),
            store.ids(),
            approximate.index,
            approximate.encode,
            store.vectors_of,
            threshold=threshold,
            max_neighbours=max_neighbours,
        )
        vectors_of = store.vectors_of
    else:
        ids, vectors = store.load_vectors()
        groups = find_duplicates(ids, vectors, threshold=threshold, max_neighbours=max_neighbours)
        order = np.argsort(ids)
        vectors_of = functools.partial(_rows_of, ids, order, vectors)
    recorded = with_records(groups, store.records(i for g in groups for i in g.ids))
    return with_tiers(recorded, vectors_of)
