"""Search by words on Caltech-101: categories queried by name.

    .venv/bin/python benchmarks/eval_text.py [--caltech ../shared/datasets/caltech101] \\
        [--per-category 25] [--distractors 300] [--cache-dir /tmp/eval-text]

The collection: up to ``--per-category`` images of each Caltech-101 category whose name is an
ImageNet concept (33 of them: ``airplanes`` is asked for as "airliner", the others by their
folder name) and ``--distractors`` images of the other categories (BACKGROUND_Google
included), drawn with a fixed seed. Two parts:

1. ImageNet concepts (no labels): each category's name is searched with ``lookalike search
   --text`` (:class:`lookalike.Text` through the one search path), over the whole
   collection; relevant = the images of that category. Reported: precision@10 and mAP over
   the full ranking. Beside it, other ways of scoring the same concept (from one run of the
   network that also keeps the head's logits): the head's probability and logit on the
   average-pooled features (what storing concept scores at index time would give), the head
   row on the stored vectors uncentred, and on them centred (what lookalike does: the row
   through the codec, a cosine in the common space).
2. Labels: half of each named category's images (alternately) get their folder name as a
   label (``--labels``); each label is searched by name and scored on the unlabelled images
   only (relevant: the same category). Beside it: the cosine to the label's centroid of
   labelled images in the common space, and the classifier's probability.

The score cut below which a word query's results are marked weak
(``config.WEAK_WORDS``) is checked here too: the precision of the results at or above it.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import Collection, Text, config
from lookalike.analysis.evaluate import read_labels
from lookalike.encode.features import pool
from lookalike.encode.imagenet import head_weights
from lookalike.encode.models import Embedder, builtin_spec, normalize
from lookalike.image.decode import load_image

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101"

#: Caltech-101 categories whose name (or, for airplanes, a plain word for them) is an
#: ImageNet concept's name or synonym, and the words searched for each.
NAMED = {
    "Leopards": "leopard",
    "accordion": "accordion",
    "airplanes": "airliner",
    "ant": "ant",
    "barrel": "barrel",
    "beaver": "beaver",
    "cannon": "cannon",
    "cellphone": "cellphone",
    "crayfish": "crayfish",
    "cup": "cup",
    "dalmatian": "dalmatian",
    "dragonfly": "dragonfly",
    "electric_guitar": "electric guitar",
    "ewer": "ewer",
    "flamingo": "flamingo",
    "grand_piano": "grand piano",
    "hedgehog": "hedgehog",
    "laptop": "laptop",
    "llama": "llama",
    "nautilus": "nautilus",
    "panda": "panda",
    "pizza": "pizza",
    "platypus": "platypus",
    "revolver": "revolver",
    "saxophone": "saxophone",
    "schooner": "schooner",
    "scorpion": "scorpion",
    "soccer_ball": "soccer ball",
    "starfish": "starfish",
    "strawberry": "strawberry",
    "tick": "tick",
    "trilobite": "trilobite",
    "umbrella": "umbrella",
}


def average_precision(relevant: np.ndarray) -> float:
    """AP of a ranking given as relevance flags, best first (every relevant image ranked)."""
    hits = np.cumsum(relevant)
    total = int(relevant.sum())
    if total == 0:
        return 0.0
    return float((hits[relevant] / (np.flatnonzero(relevant) + 1)).sum() / total)


def figures(order: np.ndarray, relevant: np.ndarray, k: int = 10) -> tuple[float, float]:
    """(precision@k, AP) of ``order`` (indices, best first) against ``relevant`` flags."""
    ranked = relevant[order]
    return float(ranked[:k].mean()), average_precision(ranked)


def choose_images(caltech: Path, per_category: int, distractors: int) -> dict[str, str]:
    """path -> category: the named categories' images and the distractors."""
    labels = read_labels(caltech, caltech / "labels.csv")
    rng = random.Random(0)
    by_category: dict[str, list[str]] = {}
    for path, category in sorted(labels.items()):
        by_category.setdefault(category, []).append(path)
    chosen: dict[str, str] = {}
    for category in NAMED:
        for path in by_category[category][:per_category]:
            chosen[path] = category
    others = sorted(p for p, c in labels.items() if c not in NAMED)
    for path in rng.sample(others, distractors):
        chosen[path] = labels[path]
    return chosen


def embed_with_head(paths: list[str], model: str, out: Path) -> dict[str, np.ndarray]:
    """Per image: the stored descriptor (GeM, as lookalike indexes with the default options)
    and the ImageNet head's logits on the average-pooled features, from one network run;
    cached in ``out``."""
    if out.is_file():
        with np.load(out, allow_pickle=False) as data:
            if list(data["paths"]) == paths:
                return {k: data[k] for k in data.files}
    spec = builtin_spec(model)
    embedder = Embedder(spec, threads=2)
    gem, logits = [], []
    for start in range(0, len(paths), 16):
        images = [load_image(p, min_side=embedder.decode_side) for p in paths[start : start + 16]]
        pixels = np.stack([embedder.prepare(image) for image in images])
        batch_logits, fmaps = embedder.run(embedder.model_input(pixels), ["logits", "feature_map"])
        gem.append(normalize(pool(fmaps, "gem")))
        logits.append(batch_logits)
    found = {"paths": np.array(paths), "gem": np.concatenate(gem), "logits": np.concatenate(logits)}
    np.savez(out, **found)
    return found


def softmax(scores: np.ndarray) -> np.ndarray:
    shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def concept_rows(collection: Collection, words: str) -> list[int]:
    """The ImageNet classes the words name (as the search matched them)."""
    matched = collection.vocabulary().match(words)
    return [int(c.key) for term in matched.terms for c in term.concepts]


def imagenet_part(
    collection: Collection, chosen: dict[str, str], cached: dict[str, np.ndarray], model: str
) -> dict[str, object]:
    ids, _ = collection.store.load_vectors()
    paths_by_id = collection.store.paths(ids)
    position = {str(p): i for i, p in enumerate(cached["paths"])}
    rows = np.array([position[paths_by_id[int(i)]] for i in ids])
    categories = np.array([chosen[paths_by_id[int(i)]] for i in ids])
    gem, logits = cached["gem"][rows], cached["logits"][rows]
    probabilities = softmax(logits)
    weights = head_weights(builtin_spec(model))
    assert weights is not None
    centred = normalize(gem - gem.mean(axis=0))
    ways: dict[str, list[tuple[float, float]]] = {
        "lookalike": [],
        "head probability (avg features)": [],
        "head logit (avg features)": [],
        "head row on stored vectors, uncentred": [],
        "head row on stored vectors, centred": [],
    }
    scores_of_results: list[tuple[float, bool]] = []
    searched_ms = []
    for category, words in NAMED.items():
        relevant = categories == category
        started = time.perf_counter()
        collection.search_detailed([Text(words)], k=10)
        searched_ms.append((time.perf_counter() - started) * 1000)
        (outcome,) = collection.search_detailed([Text(words)], k=len(ids))
        found = {r.id: r for r in outcome.results}
        order = np.array([int(np.flatnonzero(ids == r.id)[0]) for r in outcome.results])
        ways["lookalike"].append(figures(order, relevant))
        scores_of_results += [(r.score, chosen[r.path] == category) for r in found.values()]
        classes = concept_rows(collection, words)
        alternatives = {
            "head probability (avg features)": probabilities[:, classes].max(axis=1),
            "head logit (avg features)": logits[:, classes].max(axis=1),
            "head row on stored vectors, uncentred": (gem @ weights[classes].T).max(axis=1),
            "head row on stored vectors, centred": (centred @ normalize(weights[classes]).T).max(
                axis=1
            ),
        }
        for name, score in alternatives.items():
            ways[name].append(figures(np.argsort(-score, kind="stable"), relevant))
    return {
        "images": len(ids),
        "queries": len(NAMED),
        **{name: summary(values) for name, values in ways.items()},
        "weak cut": weak_cut(scores_of_results),
        "search ms, k=10 (median)": round(float(np.median(searched_ms)), 1),
    }


def label_part(collection: Collection, chosen: dict[str, str]) -> dict[str, object]:
    named = sorted(p for p, c in chosen.items() if c in NAMED)
    labelled = {p: chosen[p] for p in named[::2]}
    collection.set_labels(labelled)
    ids, vectors = collection.store.load_vectors()
    paths_by_id = collection.store.paths(ids)
    unlabelled = np.array([paths_by_id[int(i)] not in labelled for i in ids])
    categories = np.array([chosen[paths_by_id[int(i)]] for i in ids])
    snapshot = collection.snapshot()
    common = snapshot.encode(vectors)
    classifier = collection.classifier()
    assert classifier is not None
    probabilities = classifier.predict_proba(vectors)
    ways: dict[str, list[tuple[float, float]]] = {
        "lookalike": [],
        "centroid cosine": [],
        "classifier probability": [],
    }
    scores_of_results: list[tuple[float, bool]] = []
    for category in NAMED:
        relevant = (categories == category)[unlabelled]
        (outcome,) = collection.search_detailed([Text(category)], k=len(ids))
        kept = [r for r in outcome.results if r.path not in labelled]
        order = np.array([int(np.flatnonzero(ids[unlabelled] == r.id)[0]) for r in kept])
        ways["lookalike"].append(figures(order, relevant))
        scores_of_results += [(r.score, chosen[r.path] == category) for r in kept]
        members = np.array(
            [
                paths_by_id[int(i)] in labelled and c == category
                for i, c in zip(ids, categories, strict=True)
            ]
        )
        centroid = normalize(common[members].mean(axis=0)[None])[0]
        column = classifier.classes.index(category)
        alternatives = {
            "centroid cosine": (common @ centroid)[unlabelled],
            "classifier probability": probabilities[unlabelled, column],
        }
        for name, score in alternatives.items():
            ways[name].append(figures(np.argsort(-score, kind="stable"), relevant))
    return {
        "labelled": len(labelled),
        "scored (unlabelled)": int(unlabelled.sum()),
        **{name: summary(values) for name, values in ways.items()},
        "weak cut": weak_cut(scores_of_results),
    }


def summary(values: list[tuple[float, float]]) -> dict[str, float]:
    p10, ap = zip(*values, strict=True)
    return {"P@10": round(float(np.mean(p10)), 4), "mAP": round(float(np.mean(ap)), 4)}


#: Score cuts whose precision is reported beside config.WEAK_WORDS.
CUTS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3)


def weak_cut(scored: list[tuple[float, bool]]) -> dict[str, object]:
    """For the weak cut (``config.WEAK_WORDS``, and others beside it): the precision of the
    results scored at or above it, how many there are, and the precision below it."""
    scores = np.array([s for s, _ in scored])
    right = np.array([r for _, r in scored])
    out: dict[str, object] = {"WEAK_WORDS": config.WEAK_WORDS}
    for cut in sorted({*CUTS, config.WEAK_WORDS}):
        above = scores >= cut
        out[f">= {cut}"] = {
            "precision": round(float(right[above].mean()), 4) if above.any() else None,
            "results": int(above.sum()),
            "precision below": round(float(right[~above].mean()), 4) if (~above).any() else None,
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, default=DEFAULT_CALTECH)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--per-category", type=int, default=25)
    parser.add_argument("--distractors", type=int, default=300)
    parser.add_argument("--cache-dir", type=Path, default=None)
    args = parser.parse_args()
    chosen = choose_images(args.caltech, args.per_category, args.distractors)
    paths = sorted(chosen)
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        name = f"{args.model}-{args.per_category}-{args.distractors}"
        cached = embed_with_head(paths, args.model, cache / f"text-{name}.npz")
        base = cache / f"text-{name}-unlabelled.db"
        if not base.exists():  # indexed once; each run works on a copy (it adds labels)
            with Collection.open(base, model=args.model) as collection:
                collection.add(paths)
        db = cache / f"text-{name}.db"
        shutil.copyfile(base, db)
        with Collection.open(db, create=False) as collection:
            report = {
                "model": collection.spec.label,
                "imagenet concepts": imagenet_part(collection, chosen, cached, args.model),
                "labels": label_part(collection, chosen),
            }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
