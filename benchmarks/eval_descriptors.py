"""Descriptors, PCA, re-ranking and query localization compared on every benchmark, from
cached vectors (benchmarks/feature_cache.py), in seconds.

    .venv/bin/python benchmarks/eval_descriptors.py --cache /tmp/quality11 \\
        --caltech ../shared/datasets/caltech101 --sbi ../shared/datasets/search-by-image \\
        --scenes /tmp/quality11/scenes --wall /tmp/quality11/wall \\
        --transformed /tmp/quality11/transformed \\
        [--configs lite0:gem+center lite0+lite2:gem+centerall]

Benchmarks (see docs/EVALUATION.md):
* ``caltech`` and ``sbi``: leave-one-out category retrieval (mAP, P@10, top-1;
  BACKGROUND_Google as distractors);
* ``caltech-test``: leave-one-out on Caltech-101's test split only (2,893 object images;
  where the slower models were embedded only for it);
* ``caltech-split``: Caltech-101's test split as queries against the train split (held out:
  the protocol for re-ranking, which would be flattered by leave-one-out);
* ``sbi-split``: the same for the 88 images, 4 folds (each quarter against the rest);
* ``caltech-folds``: all of Caltech-101 in 5 folds, each fold's object images against the
  other folds (what ``lookalike eval ... rerank=1`` does: leave-one-out, held out);
* ``scenes``, ``wall``, ``transformed``: instance retrieval against Caltech-101's clean test
  split (2,893 images): top-1 (the source image first) and mAP (1 / its rank); category P@10
  on the scenes.

Descriptors: ``avg`` (global average, the default before issue 11), ``gem`` (GeM, p = 3),
``rmac``; ``+pca`` projects to 256 dimensions (fewer when the database is smaller) with a
PCA fitted on the benchmark's database only; ``+rerank`` re-ranks as the library does
(database-side augmentation and alpha query expansion, the plain search's best match kept
first: lookalike.search.rerank), ``+dbaqe`` without keeping it (before issue 19). Models
``lite0+lite2`` concatenate the two models' vectors (each centred or PCA-projected when
asked), each scaled by 1/sqrt(2); ``+centerall`` centres the concatenation as a whole
instead (what ``--model lite0+lite2`` stores and its default codec does).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lookalike import config as settings
from lookalike.analysis.evaluate import average_precisions, leave_one_out, read_labels
from lookalike.encode.models import normalize
from lookalike.index import pca as compression
from lookalike.search import rerank

DISTRACTOR = "BACKGROUND_Google"


class Vectors:
    """Cached descriptors by path, per model."""

    def __init__(self, cache: Path, models: list[str]) -> None:
        self.by_model: dict[str, tuple[dict[str, int], dict[str, np.ndarray]]] = {}
        for model in {m for name in models for m in name.split("+")}:
            arrays: dict[str, list[np.ndarray]] = {}
            index: dict[str, int] = {}
            for file in sorted(cache.glob(f"*-{model}.npz")):
                with np.load(file, allow_pickle=False) as data:
                    for path in data["paths"].tolist():
                        index.setdefault(path, len(index))
                    for kind in ("avg", "gem", "rmac"):
                        arrays.setdefault(kind, []).append(data[kind])
            self.by_model[model] = (index, {k: np.concatenate(v) for k, v in arrays.items()})

    def get(self, model: str, kind: str, paths: list[str]) -> np.ndarray:
        index, arrays = self.by_model[model]
        # a localized query left whole (no "path#border" entry) is the whole photo's vector
        return arrays[kind][[index.get(p, index.get(p.partition("#")[0])) for p in paths]]


def descriptor(
    vectors: Vectors, config: str, db_paths: list[str], query_paths: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """(database, query) vectors of ``config``, e.g. ``lite0:gem+pca``."""
    models, _, rest = config.partition(":")
    kind, *options = rest.split("+")
    parts_db, parts_q = [], []
    for model in models.split("+"):
        db = vectors.get(model, kind, db_paths)
        q = vectors.get(model, kind, query_paths)
        pca_dims = [int(o[3:] or 256) for o in options if o.startswith("pca")]
        if pca_dims or "center" in options:
            dims = pca_dims[0] if pca_dims else db.shape[1]
            if "center" in options:
                mean = db.mean(axis=0)
                db, q = normalize(db - mean), normalize(q - mean)
            else:
                pca = compression.fit(db, dims)
                db, q = pca.transform(db), pca.transform(q)
        parts_db.append(db)
        parts_q.append(q)
    db = normalize(np.concatenate(parts_db, axis=1))
    q = normalize(np.concatenate(parts_q, axis=1))
    if "centerall" in options:  # the library's composite model: one mean, whole vector
        mean = db.mean(axis=0)
        db, q = normalize(db - mean), normalize(q - mean)
    return db, q


def ranking(config: str, db: np.ndarray, views: list[np.ndarray]) -> np.ndarray:
    """Query x database scores, higher first: the cosine, each query's views (the whole
    photo and its localized object) fused at their better score. ``+dbaqe``: every result
    ordered by database-side augmentation and alpha query expansion (re-ranking before
    issue 19); ``+rerank``: what the library's re-ranking does, the same with the plain
    search's best match kept first (:func:`lookalike.search.rerank.keep_plain_top`)."""
    plain = np.max([q @ db.T for q in views], axis=0)
    if "rerank" not in config and "dbaqe" not in config:
        return plain
    augmented = rerank.augment_database(db, rerank.exact_neighbours(db))
    score = np.max([rerank.expand_queries(q, augmented) @ augmented.T for q in views], axis=0)
    if "dbaqe" in config:
        return score
    top = np.argsort(-plain, axis=1, kind="stable")[:, : settings.RERANK_KEEP_TOP]
    order = rerank.keep_plain_top(
        (np.take_along_axis(plain, top, axis=1), top), np.argsort(-score, axis=1, kind="stable")
    )
    out = np.empty_like(score)
    places = np.broadcast_to(-np.arange(order.shape[1], dtype=score.dtype), order.shape)
    np.put_along_axis(out, order, places, axis=1)
    return out


def instance_scores(score: np.ndarray, source_rows: np.ndarray) -> tuple[float, float]:
    own = score[np.arange(len(score)), source_rows]
    ranks = (score > own[:, None]).sum(axis=1) + 1
    return float((ranks == 1).mean()), float((1.0 / ranks).mean())


def category_scores(score: np.ndarray, q_codes: np.ndarray, db_codes: np.ndarray) -> dict:
    order = np.argsort(-score, axis=1, kind="stable")
    relevant = db_codes[order] == q_codes[:, None]
    positives = np.bincount(db_codes, minlength=int(db_codes.max()) + 1)[q_codes]
    return {
        "mAP": float(average_precisions(relevant, positives).mean()),
        "P@10": float(relevant[:, :10].mean()),
        "top1": float(relevant[:, 0].mean()),
    }


def read_queries(folder: Path) -> tuple[list[str], list[dict[str, str]], dict[str, str]]:
    db_paths = (folder / "collection.txt").read_text().split()
    with (folder / "queries.csv").open() as f:
        queries = list(csv.DictReader(f))
    with (folder / "collection_labels.csv").open() as f:
        labels = {row["path"]: row["class_name"] for row in csv.DictReader(f)}
    return db_paths, queries, labels


def run_instance(vectors: Vectors, config: str, folder: Path, suffix: str = "") -> dict:
    """Instance benchmark; ``suffix`` picks query vectors cached under path + suffix
    (localized queries)."""
    db_paths, queries, labels = read_queries(folder)
    fuse = suffix.endswith("+max")
    suffix = suffix.removesuffix("+max")
    q_paths = [q["query_path"] + suffix for q in queries]
    db, qv = descriptor(vectors, config, db_paths, q_paths)
    views = [qv]
    if fuse:  # the localized query and the whole photo, each item's better score
        _, whole = descriptor(vectors, config, db_paths, [q["query_path"] for q in queries])
        views.append(whole)
    score = ranking(config, db, views)
    row_of = {p: i for i, p in enumerate(db_paths)}
    source = np.array([row_of[q["source_path"]] for q in queries])
    kinds = np.array([q["kind"] for q in queries])
    out: dict[str, object] = {}
    for kind in sorted(set(kinds)):
        top1, mean_ap = instance_scores(score[kinds == kind], source[kinds == kind])
        out[f"{kind} top1"], out[f"{kind} mAP"] = round(top1, 4), round(mean_ap, 4)
    top1, mean_ap = instance_scores(score, source)
    out["all top1"], out["all mAP"] = round(top1, 4), round(mean_ap, 4)
    names = sorted(set(labels.values()))
    code = {n: i for i, n in enumerate(names)}
    cat = category_scores(
        score,
        np.array([code[q["class_name"]] for q in queries]),
        np.array([code[labels[p]] for p in db_paths]),
    )
    out["category mAP"], out["category P@10"] = round(cat["mAP"], 4), round(cat["P@10"], 4)
    return out


def run_loo(vectors: Vectors, config: str, labels: dict[str, str]) -> dict:
    paths = sorted(labels)
    db, _ = descriptor(vectors, config, paths, paths[:1])
    result = leave_one_out(db, [labels[p] for p in paths], distractors=frozenset([DISTRACTOR]))
    return {k: v for k, v in result.as_dict().items() if k in ("mAP", "precision@10", "top1")}


def run_split(
    vectors: Vectors, config: str, labels: dict[str, str], folds: list[tuple[list, list]]
) -> dict:
    """Held-out category retrieval: each (database, queries) pair, scores pooled."""
    names = sorted(set(labels.values()))
    code = {n: i for i, n in enumerate(names)}
    totals: dict[str, list[float]] = {"mAP": [], "P@10": [], "top1": []}
    for db_paths, q_paths in folds:
        db, qv = descriptor(vectors, config, db_paths, q_paths)
        score = ranking(config, db, [qv])
        cat = category_scores(
            score,
            np.array([code[labels[p]] for p in q_paths]),
            np.array([code[labels[p]] for p in db_paths]),
        )
        for key in totals:
            totals[key].append(cat[key] * len(q_paths))
    count = sum(len(q) for _, q in folds)
    return {k: round(sum(v) / count, 4) for k, v in totals.items()}


def run_labels(
    vectors: Vectors, config: str, labels: dict[str, str], folds: list[tuple[list, list]]
) -> dict:
    """Category-aware search learned from labels, on held-out queries against a labelled
    database: plain search, category-first (the logistic classifier's partition, as
    ``--by-category`` did), the LDA projection, and both."""
    from lookalike.search.categories import choose_categories, fit_classifier, fit_projection

    names = sorted(set(labels.values()))
    code = {n: i for i, n in enumerate(names)}
    sums: dict[str, float] = {}
    for db_paths, q_paths in folds:
        db, qv = descriptor(vectors, config, db_paths, q_paths)
        db_labels = [labels[p] for p in db_paths]
        q_codes = np.array([code[labels[p]] for p in q_paths])
        db_codes = np.array([code[c] for c in db_labels])
        classifier = fit_classifier(db, db_labels)
        probabilities = classifier.predict_proba(qv)
        allowed = np.ones((len(qv), len(db)), dtype=bool)
        for i, p in enumerate(probabilities):
            chosen = choose_categories(p)
            if chosen is not None:
                wanted = [code[classifier.classes[j]] for j in chosen]
                allowed[i] = np.isin(db_codes, wanted)
        projection = fit_projection(db, db_labels)
        pdb, pq = projection.transform(db), projection.transform(qv)
        bdb = normalize(np.concatenate([db, pdb], axis=1))
        bq = normalize(np.concatenate([qv, pq], axis=1))
        variants = {
            "plain": qv @ db.T,
            "blend": bq @ bdb.T,
            "blend+category-first": np.where(allowed, bq @ bdb.T, -np.inf),
            "category-first": np.where(allowed, qv @ db.T, -np.inf),
            "lda": pq @ pdb.T,
            "lda+category-first": np.where(allowed, pq @ pdb.T, -np.inf),
        }
        for name, score in variants.items():
            cat = category_scores(score, q_codes, db_codes)
            for key in ("P@10", "mAP"):
                sums[f"{name} {key}"] = sums.get(f"{name} {key}", 0.0) + cat[key] * len(q_paths)
    count = sum(len(q) for _, q in folds)
    return {k: round(v / count, 4) for k, v in sums.items()}


SMALL_SIZES = (10, 25, 50, 100, 200, 400, 800)


def run_small(vectors: Vectors, config: str, labels: dict[str, str]) -> dict:
    """Small collections: random subsets of Caltech-101's object images (5 seeds each),
    leave-one-out inside the subset, the PCA fitted on the subset (so at most N - 1
    dimensions). mAP per size."""
    paths = sorted(p for p, c in labels.items() if c != DISTRACTOR)
    out: dict[str, float] = {}
    for size in SMALL_SIZES:
        maps = []
        for seed in range(5):
            rng = np.random.default_rng(seed)
            subset = [paths[i] for i in sorted(rng.choice(len(paths), size, replace=False))]
            db, _ = descriptor(vectors, config, subset, subset[:1])
            maps.append(leave_one_out(db, [labels[p] for p in subset]).mean_average_precision)
        out[f"N={size}"] = round(float(np.mean(maps)), 4)
    return out


def caltech_split(caltech: Path, labels: dict[str, str]) -> list[tuple[list, list]]:
    images = caltech / "101_ObjectCategories"
    train = [os.path.abspath(images / p) for p in (caltech / "train.txt").read_text().split()]
    test = [os.path.abspath(images / p) for p in (caltech / "test.txt").read_text().split()]
    train = [p for p in train if p in labels]
    test = [p for p in test if labels.get(p, DISTRACTOR) != DISTRACTOR]
    return [(train, test)]


def k_folds(paths: list[str], k: int = 4) -> list[tuple[list, list]]:
    rng = np.random.default_rng(0)
    fold = rng.permutation(len(paths)) % k
    return [
        (
            [p for p, f in zip(paths, fold, strict=True) if f != i],
            [p for p, f in zip(paths, fold, strict=True) if f == i],
        )
        for i in range(k)
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--caltech", type=Path)
    parser.add_argument("--sbi", type=Path)
    parser.add_argument("--scenes", type=Path)
    parser.add_argument("--wall", type=Path)
    parser.add_argument("--transformed", type=Path)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=[
            "lite0:avg",
            "lite0:avg+pca",
            "lite0:gem",
            "lite0:gem+center",
            "lite0:gem+pca",
            "lite0:rmac+pca",
            "lite0:gem+pca+rerank",
        ],
    )
    parser.add_argument("--query-suffix", default="", help="localized query vectors")
    parser.add_argument("--only", nargs="*", default=None, help="benchmarks to run")
    args = parser.parse_args()
    vectors = Vectors(args.cache, [c.split(":")[0] for c in args.configs])
    benches: dict[str, Callable[[str], dict]] = {}
    if args.caltech:
        cal_labels = read_labels(args.caltech, args.caltech / "labels.csv")
        benches["caltech"] = lambda c: run_loo(vectors, c, cal_labels)
        split = caltech_split(args.caltech, cal_labels)
        benches["caltech-split"] = lambda c: run_split(vectors, c, cal_labels, split)
        benches["small"] = lambda c: run_small(vectors, c, cal_labels)
        caltech_folds = [
            (db, [p for p in q if cal_labels[p] != DISTRACTOR])
            for db, q in k_folds(sorted(cal_labels), 5)
        ]
        benches["caltech-folds"] = lambda c: run_split(vectors, c, cal_labels, caltech_folds)
        test_labels = {p: cal_labels[p] for p in split[0][1]}
        benches["caltech-test"] = lambda c: run_loo(vectors, c, test_labels)
        benches["labels"] = lambda c: run_labels(vectors, c, cal_labels, split)
    if args.sbi:
        sbi_labels = read_labels(args.sbi, args.sbi / "labels.csv")
        benches["sbi"] = lambda c: run_loo(vectors, c, sbi_labels)
        folds = k_folds(sorted(sbi_labels))
        benches["sbi-split"] = lambda c: run_split(vectors, c, sbi_labels, folds)
        benches["sbi-labels"] = lambda c: run_labels(vectors, c, sbi_labels, folds)
    for name in ("scenes", "wall", "transformed"):
        folder = getattr(args, name)
        if folder:
            benches[name] = lambda c, f=folder: run_instance(vectors, c, f, args.query_suffix)
    for bench, run in benches.items():
        if args.only and bench not in args.only:
            continue
        for config in args.configs:
            print(json.dumps({"bench": bench, "config": config, **run(config)}), flush=True)


if __name__ == "__main__":
    main()
