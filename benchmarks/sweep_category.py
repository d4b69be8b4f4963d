"""Ways to use the category model when it is unsure, compared in NumPy on cached vectors.

    .venv/bin/python benchmarks/sweep_category.py --cache-dir /tmp/labels \\
        [--caltech ../shared/datasets/caltech101] [--split caltech few subkinds merged]

Reads the train and test collections ``benchmarks/eval_category.py --cache-dir`` embedded
(``train-lite0.db``, ``test-lite0.db``) and the splits it defines, fits the classifier and
the LDA projection as a collection does (:mod:`lookalike.search.categories`), then scores
every method over the whole ranking (P@10; mAP: average precision over the full ranking,
what a filter leaves out counted as not found):

* ``filter``: the categories covering 80% of the probability, at most 3, else everything
  (the LDA space in both cases: category-aware search before issue 19);
* ``calibrated + filter``: the same with the probabilities temperature-scaled (the
  temperature fitted on 5-fold cross-validated predictions of the train split);
* ``kNN vote + filter``: the probabilities replaced by the votes of the 10 nearest labelled
  images in the LDA space (cosine^4 weights); ``LR + kNN``: their mean;
* ``soft w``: everything, ranked by LDA cosine + w log p(category of the image) (no
  filter); ``by probability``: the categories in order, LDA cosine inside each.

It ranks in memory, so it says which method to build, not how fast it is; the library's
own search path is measured by ``eval_category.py``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from eval_category import DEFAULT_CALTECH, SPLITS, split_labels

from lookalike import Collection
from lookalike.analysis.evaluate import read_labels
from lookalike.search.categories import (
    choose_categories,
    fit_classifier,
    fit_projection,
    stored_precision,
)


def load(db: Path) -> tuple[np.ndarray, list[str]]:
    with Collection.open(db) as collection:
        ids, vectors = collection.store.load_vectors()
        paths = collection.store.paths(ids)
    return vectors, [paths[int(i)] for i in ids]


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def temperature(vectors: np.ndarray, codes: np.ndarray, classes: int) -> float:
    """The temperature minimising the cross-validated log loss (5 folds)."""
    fold = np.random.default_rng(0).permutation(len(vectors)) % 5
    logits = np.zeros((len(vectors), classes), np.float32)
    labels = codes.astype(str)
    for f in range(5):
        train, test = fold != f, fold == f
        model = fit_classifier(vectors[train], list(labels[train]))
        order = [
            model.classes.index(str(c)) if str(c) in model.classes else -1 for c in range(classes)
        ]
        fold_logits = stored_precision(vectors[test]) @ model.coef.T + model.intercept
        logits[test] = np.where(np.array(order) >= 0, fold_logits[:, order], -1e9)

    def loss(t: float) -> float:
        return float(-np.log(softmax(logits / t)[np.arange(len(codes)), codes] + 1e-12).mean())

    grid = np.exp(np.linspace(np.log(0.2), np.log(5), 40))
    return float(grid[np.argmin([loss(t) for t in grid])])


def knn_votes(similar: np.ndarray, codes: np.ndarray, classes: int, m: int = 10) -> np.ndarray:
    top = np.argpartition(-similar, m, axis=1)[:, :m]
    votes = np.zeros((len(similar), classes))
    for i, row in enumerate(top):
        np.add.at(votes[i], codes[row], np.maximum(similar[i, row], 0) ** 4)
    return votes / np.maximum(votes.sum(axis=1, keepdims=True), 1e-12)


def scores_of(relevant: np.ndarray, total: int, k: int = 10) -> tuple[float, float]:
    """(precision@k, average precision) of one ranking of relevance flags, ``total`` the
    number of relevant images in the collection."""
    precision = np.cumsum(relevant) / np.arange(1, len(relevant) + 1)
    return float(relevant[:k].sum() / k), float((precision * relevant).sum() / max(total, 1))


def run(name: str, xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, yte: np.ndarray) -> None:
    classifier = fit_classifier(xtr, list(ytr))
    projection = fit_projection(xtr, list(ytr))
    classes = np.array(classifier.classes)
    code_of = {c: i for i, c in enumerate(classifier.classes)}
    codes = np.array([code_of[c] for c in ytr])
    probabilities = classifier.predict_proba(xte)
    similar = projection.transform(xte) @ projection.transform(xtr).T
    knn = knn_votes(similar, codes, len(classes))
    t = temperature(xtr, codes, len(classes))
    logits = stored_precision(xte) @ classifier.coef.T + classifier.intercept
    calibrated = softmax(logits / t)
    relevant_all = ytr[None, :] == yte[:, None]
    n_relevant = relevant_all.sum(axis=1)
    accuracy = float(np.mean(classes[probabilities.argmax(1)] == yte))
    print(
        f"\n{name}: {len(classes)} kinds, {len(xtr)} images, {len(xte)} queries, "
        f"classifier top-1 {accuracy:.4f}, temperature {t:.2f}"
    )
    print("| method | P@10 | mAP | fallback |\n|---|---:|---:|---:|")

    def report(
        label: str, scores: np.ndarray, chosen: list[np.ndarray | None] | None = None
    ) -> None:
        p10, aps, fallbacks = [], [], 0
        for i in range(len(xte)):
            row = scores[i].copy()
            if chosen is not None and chosen[i] is not None:
                row[~chosen[i]] = -np.inf
            fallbacks += chosen is not None and chosen[i] is None
            order = np.argsort(-row, kind="stable")
            order = order[np.isfinite(row[order])]
            p, ap = scores_of(relevant_all[i, order].astype(float), int(n_relevant[i]))
            p10.append(p)
            aps.append(ap)
        print(f"| {label} | {np.mean(p10):.4f} | {np.mean(aps):.4f} | {fallbacks / len(xte):.3f} |")

    def filtered(p: np.ndarray) -> list[np.ndarray | None]:
        out: list[np.ndarray | None] = []
        for row in p:
            chosen = choose_categories(row, coverage=0.8, max_categories=3)
            out.append(None if chosen is None else np.isin(codes, chosen))
        return out

    report("LDA, everything", similar)
    report("filter (before)", similar, filtered(probabilities))
    report("calibrated + filter", similar, filtered(calibrated))
    report("kNN vote + filter", similar, filtered(knn))
    report("LR + kNN + filter", similar, filtered((probabilities + knn) / 2))
    for weight in (0.05, 0.1, 0.2, 0.3, 0.5, 1.0):
        log_p = np.log(np.maximum(probabilities[:, codes], 1e-9))
        report(f"soft {weight}", similar + weight * log_p)
    report(
        "soft 0.2, LR + kNN",
        similar + 0.2 * np.log(np.maximum(((probabilities + knn) / 2)[:, codes], 1e-9)),
    )
    report("by probability", similar * 1e-3 + probabilities[:, codes])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, default=DEFAULT_CALTECH)
    parser.add_argument("--cache-dir", type=Path, required=True)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--split", nargs="+", choices=SPLITS, default=list(SPLITS))
    args = parser.parse_args()
    labels = read_labels(args.caltech, args.caltech / "labels.csv")
    xtr, ptr = load(args.cache_dir / f"train-{args.model}.db")
    xte, pte = load(args.cache_dir / f"test-{args.model}.db")
    for split in args.split:
        kinds = split_labels(split, labels, ptr + pte)
        train = np.array([p in kinds for p in ptr])
        test = np.array([p in kinds for p in pte])
        ytr = np.array([kinds[p] for p in ptr if p in kinds])
        yte = np.array([kinds[p] for p in pte if p in kinds])
        run(split, xtr[train], ytr, xte[test], yte)


if __name__ == "__main__":
    main()
