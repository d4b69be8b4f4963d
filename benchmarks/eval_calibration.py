"""Calibrated confidences: fit and measure P(same item) and P(same kind) from the score.

    .venv/bin/python benchmarks/eval_calibration.py --caltech ../shared/datasets/caltech101 \\
        --sbi ../shared/datasets/search-by-image --work /tmp/calib [--write]

Three collections, each searched exactly in its own common space (centred by its own mean,
as lookalike's default codec does), top 10 results per query:

* ``fit``: Caltech-101's train split (6,096 images, ``BACKGROUND_Google`` kept as clutter);
* ``caltech-test``: its test split (3,049 images), a collection the fit never saw;
* ``web``: the 88 web images of search-by-image (cats, dogs, Mickey Mouse, grapes, mangoes,
  stop signs), another kind of collection.

Queries of each collection: every labelled image (``fit``/``caltech-test``: 1,000 at random)
searched with itself left out (no copy of it is in the collection), and as many edited
copies of collection images (one random edit each: JPEG quality 12-25, downscaled to 30-50 %,
a centre crop of 60-80 %, colour/brightness shift, a text watermark, rotation by 5-15
degrees, a 10-20 % frame), whose source is in the collection. A result is the *same item*
when it is the query's source, the *same kind* when it has the query's label
(``BACKGROUND_Google`` is no kind).

Two models per target, fitted on ``fit`` only (logistic regression): on the cosine alone,
and on the cosine and its margin over the best other result of the same query. Reported on
every collection: a reliability table (predicted vs observed in bins), the Brier score,
and what a cut-off does: the precision of the results kept at a cosine cut-off and at a
confidence cut-off. ``--write`` stores the chosen coefficients in
``src/lookalike/search/calibration.json``. Vectors are cached by benchmarks/feature_cache.py
(the copies are made once in ``--work``).
"""

from __future__ import annotations

import argparse
import csv
import itertools
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

from benchmarks.feature_cache import build, load
from lookalike.encode.models import builtin_spec
from lookalike.search import calibration

K = 10
EDITS = ("jpeg", "downscale", "crop", "colour", "watermark", "rotate", "frame")


def edited(image: Image.Image, edit: str, rng: random.Random) -> Image.Image:
    """One edit of ``image`` (see the module's list)."""
    w, h = image.size
    if edit == "downscale":
        f = rng.uniform(0.3, 0.5)
        return image.resize((max(16, round(w * f)), max(16, round(h * f))))
    if edit == "crop":
        f = rng.uniform(0.6, 0.8)
        cw, ch = round(w * f), round(h * f)
        x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
        return image.crop((x, y, x + cw, y + ch))
    if edit == "colour":
        image = ImageEnhance.Color(image).enhance(rng.uniform(0.3, 1.8))
        return ImageEnhance.Brightness(image).enhance(rng.uniform(0.6, 1.4))
    if edit == "watermark":
        out = image.copy()
        draw = ImageDraw.Draw(out)
        for row in range(0, h, max(12, h // 5)):
            draw.text(
                (rng.randint(0, max(1, w // 4)), row), "(c) lookalike sample", fill=(255,) * 3
            )
        return out
    if edit == "rotate":
        angle = rng.choice((-1, 1)) * rng.uniform(5, 15)
        return image.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    if edit == "frame":
        border = round(min(w, h) * rng.uniform(0.1, 0.2))
        colour = tuple(rng.randint(0, 255) for _ in range(3))
        return ImageOps.expand(image, border=border, fill=colour)
    return image  # jpeg: only the saving quality


def make_copies(sources: list[str], folder: Path, seed: int) -> dict[str, str]:
    """Copy path -> source path, one random edit each (made once)."""
    folder.mkdir(parents=True, exist_ok=True)
    copies = {}
    for i, source in enumerate(sources):
        rng = random.Random(seed * 1_000_003 + i)  # each copy its own draws: made once
        edit = EDITS[rng.randrange(len(EDITS))]
        target = folder / f"{i:05d}-{edit}.jpg"
        quality = rng.randint(12, 25) if edit == "jpeg" else 90
        if not target.exists():
            with Image.open(source) as image:
                edited(image.convert("RGB"), edit, rng).save(target, quality=quality)
        copies[str(target)] = source
    return copies


@dataclass
class Pairs:
    """Every (query, result) pair in the top ``K``: cosine, margin over the best other result
    of the query, and the two labels."""

    cosine: np.ndarray
    margin: np.ndarray
    same_item: np.ndarray
    same_kind: np.ndarray


def search_pairs(
    vectors: dict[str, np.ndarray],
    collection: list[str],
    labels: dict[str, str],
    queries: list[tuple[str, str | None]],
) -> Pairs:
    """Exact top-K search of ``queries`` (path, source in the collection or None: the query
    is a collection image, left out of its own results) in the collection's centred space."""
    base = np.stack([vectors[p] for p in collection]).astype(np.float64)
    mean = base.mean(axis=0)

    def centred(x: np.ndarray) -> np.ndarray:
        x = x - mean
        return x / np.linalg.norm(x, axis=-1, keepdims=True)

    space = centred(base)
    position = {p: i for i, p in enumerate(collection)}
    cos, margin, item, kind = [], [], [], []
    for path, source in queries:
        scores = space @ centred(vectors[path])
        if source is None:
            scores[position[path]] = -np.inf
        top = np.argsort(-scores)[:K]
        top_scores = scores[top]
        origin = source or path
        for j, i in enumerate(top):
            others = np.delete(top_scores, j)
            cos.append(top_scores[j])
            margin.append(top_scores[j] - others.max())
            item.append(source is not None and collection[i] == source)
            label = labels.get(collection[i])
            kind.append(label is not None and label == labels.get(origin))
    return Pairs(np.array(cos), np.array(margin), np.array(item), np.array(kind))


def reliability(predicted: np.ndarray, observed: np.ndarray) -> list[tuple[str, int, float, float]]:
    rows = []
    edges = np.linspace(0, 1, 6)
    for lo, hi in itertools.pairwise(edges):
        inside = (predicted >= lo) & (predicted < hi if hi < 1 else predicted <= hi)
        if inside.any():
            rows.append(
                (
                    f"{lo:.1f}-{hi:.1f}",
                    int(inside.sum()),
                    float(predicted[inside].mean()),
                    float(observed[inside].mean()),
                )
            )
    return rows


def _mean(values: np.ndarray) -> str:
    return f"{values.mean():.3f}" if len(values) else "-"


def fit_logistic(features: np.ndarray, target: np.ndarray) -> tuple[list[float], float]:
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=10.0, max_iter=1000).fit(features, target)
    return [float(c) for c in model.coef_[0]], float(model.intercept_[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, required=True)
    parser.add_argument("--sbi", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--cache", type=Path, default=None, help="feature_cache.py's .npz")
    parser.add_argument("--write", action="store_true")
    args = parser.parse_args()
    rng = random.Random(0)

    def listed(csv_path: Path) -> dict[str, str]:
        with csv_path.open(newline="") as handle:
            return {
                os.path.abspath(csv_path.parent / r["path"]): r["class_name"]
                for r in csv.DictReader(handle)
            }

    caltech = listed(args.caltech / "labels.csv")
    web = listed(args.sbi / "labels.csv")
    folder = args.caltech / "101_ObjectCategories"
    splits = {
        name: [
            os.path.abspath(folder / line)
            for line in (args.caltech / f"{name}.txt").read_text().split()
        ]
        for name in ("train", "test")
    }
    labels = {p: c for p, c in {**caltech, **web}.items() if c != "BACKGROUND_Google"}
    collections = {"fit": splits["train"], "caltech-test": splits["test"], "web": sorted(web)}
    plans: dict[str, list[tuple[str, str | None]]] = {}
    copies_of: dict[str, dict[str, str]] = {}
    for seed, (name, members) in enumerate(collections.items()):
        labelled = [p for p in members if p in labels]
        originals = rng.sample(labelled, min(args.queries, len(labelled)))
        sources = rng.sample(labelled, min(args.queries, len(labelled)))
        copies_of[name] = make_copies(sources, args.work / "edited" / name, seed)
        plans[name] = [(p, None) for p in originals] + list(copies_of[name].items())
    cache = args.cache or args.work / f"vectors-{args.model}.npz"
    every = sorted(
        {p for members in collections.values() for p in members}
        | {c for m in copies_of.values() for c in m}
    )
    build(every, args.model, cache)
    data = load(cache)
    vectors = dict(zip(data["paths"].tolist(), data["gem"], strict=True))
    pairs = {
        name: search_pairs(
            vectors,
            [p for p in members if p in vectors],
            labels,
            [q for q in plans[name] if q[0] in vectors],
        )
        for name, members in collections.items()
    }
    fitted: dict[str, dict[str, object]] = {}
    for target in ("same_item", "same_kind"):
        fit = pairs["fit"]
        y = getattr(fit, target)
        variants = {
            "cosine": calibration.Logistic(
                *fit_logistic(fit.cosine[:, None], y), features=("cosine",)
            ),
            "cosine+margin": calibration.Logistic(
                *fit_logistic(np.stack([fit.cosine, fit.margin], axis=1), y),
                features=("cosine", "margin"),
            ),
        }
        print(f"\n## {target}\n")
        for label, model in variants.items():
            print(
                f"### {label}: coefficients {model.coefficients}, intercept {model.intercept:.3f}\n"
            )
            print("| collection | pairs | positives | Brier | bins: predicted / observed (count) |")
            print("|---|---:|---:|---:|---|")
            for name, p in pairs.items():
                predicted = model.predict(p.cosine, p.margin)
                observed = getattr(p, target).astype(float)
                brier = float(np.mean((predicted - observed) ** 2))
                bins = "; ".join(
                    f"{b}: {m:.2f} / {o:.2f} ({n})"
                    for b, n, m, o in reliability(predicted, observed)
                )
                print(
                    f"| {name} | {len(observed)} | {int(observed.sum())} | {brier:.4f} | {bins} |"
                )
            print()
        print("Cut-offs fitted on `fit` to keep results with precision 0.8, applied elsewhere:\n")
        print("| cut-off | collection | kept | precision |")
        print("|---|---|---:|---:|")
        fit_scores = fit.cosine
        order = np.argsort(-fit_scores)
        precision = np.cumsum(y[order]) / np.arange(1, len(order) + 1)
        ok = np.flatnonzero(precision >= 0.8)
        cosine_cut = float(fit_scores[order][ok[-1]]) if len(ok) else 1.0
        for label, model in variants.items():
            for name, p in pairs.items():
                observed = getattr(p, target)
                keep = model.predict(p.cosine, p.margin) >= 0.8
                print(
                    f"| P[{label}] >= 0.8 | {name} | {int(keep.sum())} | {_mean(observed[keep])} |"
                )
        for name, p in pairs.items():
            observed = getattr(p, target)
            keep = p.cosine >= cosine_cut
            cut = f"cosine >= {cosine_cut:.3f}"
            print(f"| {cut} | {name} | {int(keep.sum())} | {_mean(observed[keep])} |")
        fitted[target] = {name: model.as_dict() for name, model in variants.items()}
    if args.write:
        table = calibration.load_table()
        table[builtin_spec(args.model).label] = {
            target: fitted[target]["cosine+margin"] for target in fitted
        }
        calibration.TABLE.write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
        print(f"\nwrote {calibration.TABLE}")


if __name__ == "__main__":
    main()
