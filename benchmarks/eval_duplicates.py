"""How near is a near-duplicate? Choosing `lookalike duplicates`' default threshold.

    .venv/bin/python benchmarks/eval_duplicates.py [--db /tmp/caltech_clu.db] [--sample 400]
        [--pairs DIR]

Caltech-101 (../shared/datasets/caltech101) is indexed into --db if it is not there yet.
A seeded sample of its images is altered the ways copies of a photo get altered (JPEG
quality 50, resized to 50%, centre crop keeping 90% of each side, brightness +15%, all
four at once, and a mirror image); each copy is embedded and scored (cosine) against its
original's vector. The same is done for the larger web photos of search-by-image (short
side >= 400 px), since Caltech-101's 300 x 200 px images lose much in a 50% resize.

Against that: for every indexed image, the cosine of its nearest *other* image, and how many
pairs of Caltech-101 images a threshold would call duplicates. Caltech-101 itself holds
true duplicates (mirrored Leopards, Faces_easy crops of the Faces photos, repeated
pictures), so those pair counts are an upper bound on false alarms; --pairs DIR draws 24
seeded random pairs per cosine band, for judging by eye which are the same photo.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from lookalike import Collection
from lookalike.analysis.duplicates import DEFAULT_THRESHOLD, duplicate_pairs
from lookalike.image.decode import load_image
from lookalike.index.exact import ExactIndex

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "caltech101"
THRESHOLDS = (0.85, 0.88, 0.90, 0.92, 0.94, 0.95, 0.96)


def jpeg(image: Image.Image, quality: int = 50) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def half(image: Image.Image) -> Image.Image:
    return image.resize((max(1, image.width // 2), max(1, image.height // 2)), Image.BILINEAR)


def crop90(image: Image.Image) -> Image.Image:
    dx, dy = round(image.width * 0.05), round(image.height * 0.05)
    return image.crop((dx, dy, image.width - dx, image.height - dy))


def brighter(image: Image.Image) -> Image.Image:
    return ImageEnhance.Brightness(image).enhance(1.15)


def everything(image: Image.Image) -> Image.Image:
    return jpeg(brighter(crop90(half(image))))


def mirror(image: Image.Image) -> Image.Image:
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)


TRANSFORMS: dict[str, Callable[[Image.Image], Image.Image]] = {
    "jpeg q50": jpeg,
    "resize 50%": half,
    "crop 90%": crop90,
    "brightness +15%": brighter,
    "all four": everything,
    "mirror": mirror,
}
#: The edits whose copies a default threshold should find (all four at once, on a 300 px
#: image, is a thumbnail of a thumbnail; a mirror image is a different picture to some).
MAIN = ("jpeg q50", "resize 50%", "crop 90%", "brightness +15%")
WEB = DATA.parent / "search-by-image"
BANDS = ((0.85, 0.88), (0.88, 0.90), (0.90, 0.92), (0.92, 0.94), (0.94, 0.96), (0.96, 1.01))


def percentiles(values: np.ndarray, qs: tuple[float, ...]) -> dict[str, float]:
    return {f"p{q:g}": round(float(np.percentile(values, q)), 4) for q in qs}


def copy_scores(
    collection: Collection, originals: list[str], vectors: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Cosine of each altered copy with its original, by edit. ``vectors``: the originals'
    stored vectors (else the originals are embedded here, as indexing would)."""
    scores: dict[str, list[float]] = {name: [] for name in TRANSFORMS}
    for row, path in enumerate(originals):
        original = load_image(path)
        reference = collection.query_vectors([path])[0][0] if vectors is None else vectors[row]
        embedded, _ = collection.query_vectors([t(original) for t in TRANSFORMS.values()])
        for name, vector in zip(TRANSFORMS, embedded, strict=True):
            scores[name].append(float(vector @ reference))
    return {name: np.array(v) for name, v in scores.items()}


def summary(scores: dict[str, np.ndarray]) -> dict[str, dict[str, float]]:
    return {
        name: {"min": round(float(v.min()), 4), **percentiles(v, (1, 5, 50))}
        for name, v in scores.items()
    }


def found(scores: dict[str, np.ndarray], threshold: float) -> float:
    main = np.concatenate([scores[name] for name in MAIN])
    return round(float((main >= threshold).mean()), 4)


def draw_pairs(
    out: Path, paths: list[str], first: np.ndarray, second: np.ndarray, score: np.ndarray
) -> None:
    """24 seeded random pairs per cosine band, side by side, for judging by eye."""
    from PIL import ImageDraw

    from lookalike.analysis.plots import font, thumbnail

    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    side = 150
    for low, high in BANDS:
        band = np.flatnonzero((score >= low) & (score < high))
        pick = rng.choice(band, size=min(24, len(band)), replace=False)
        sheet = Image.new("RGB", (3 * (2 * side + 16), 8 * (side + 18)), "white")
        draw = ImageDraw.Draw(sheet)
        for n, p in enumerate(pick):
            x, y = (n % 3) * (2 * side + 16), (n // 3) * (side + 18)
            names = []
            for k, row in enumerate((first[p], second[p])):
                sheet.paste(thumbnail(paths[row], side), (x + k * side, y))
                names.append("/".join(Path(paths[row]).parts[-2:]).replace("image_", ""))
            text = f"{n}: {score[p]:.3f} {names[0]} {names[1]}"
            draw.text((x, y + side + 1), text, fill="black", font=font(12))
        sheet.save(out / f"pairs-{low:.2f}-{min(high, 1.0):.2f}.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/caltech_clu.db"))
    parser.add_argument("--sample", type=int, default=400)
    parser.add_argument("--pairs", type=Path, default=None, help="draw sample pairs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    with Collection.open(args.db) as collection:
        if len(collection) == 0:
            collection.add([DATA / "101_ObjectCategories"])
        ids, vectors = collection.store.load_vectors()
        by_id = collection.store.paths(ids.tolist())
        paths = [by_id[int(i)] for i in ids]
        rng = np.random.default_rng(0)
        sample = np.sort(rng.choice(len(ids), size=min(args.sample, len(ids)), replace=False))
        started = time.perf_counter()
        caltech = copy_scores(collection, [paths[r] for r in sample], vectors[sample])
        with (WEB / "labels.csv").open(newline="") as handle:
            web_paths = [str(WEB / row["path"]) for row in csv.DictReader(handle)]
        large = [p for p in web_paths if min(load_image(p).size) >= 400]
        web = copy_scores(collection, large)
        embed_seconds = time.perf_counter() - started

    # nearest other image of every indexed image, in chunks
    index = ExactIndex(ids, vectors)
    nearest = np.concatenate(
        [
            index.search(vectors[s : s + 1024], 1, exclude=ids[s : s + 1024].tolist())[0][:, 0]
            for s in range(0, len(ids), 1024)
        ]
    )
    # every pair of images at or above the lowest threshold
    first, second, score = duplicate_pairs(
        vectors, threshold=min(THRESHOLDS), max_neighbours=len(ids)
    )
    if args.pairs is not None:
        draw_pairs(args.pairs, paths, first, second, score)

    figures: dict[str, object] = {
        "images": len(ids),
        "caltech_copies_of": len(sample),
        "web_copies_of": len(large),
        "embed_seconds": round(embed_seconds, 1),
        "caltech_copies": summary(caltech),
        "web_copies": summary(web),
        "nearest_other": {
            **percentiles(nearest, (50, 90, 99)),
            "max": round(float(nearest.max()), 4),
        },
        "pairs_per_band": {
            f"{low:.2f}-{min(high, 1.0):.2f}": int(((score >= low) & (score < high)).sum())
            for low, high in BANDS
        },
        "thresholds": {
            f"{t:.2f}": {
                "caltech_copies_found": found(caltech, t),
                "web_copies_found": found(web, t),
                "caltech_pairs_flagged": int((score >= t).sum()),
                "caltech_images_in_a_pair": len(
                    np.unique(np.concatenate([first[score >= t], second[score >= t]]))
                ),
            }
            for t in THRESHOLDS
        },
        "default_threshold": DEFAULT_THRESHOLD,
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
