"""How near is a near-duplicate? Choosing `lookalike duplicates`' threshold and its tiers.

    .venv/bin/python benchmarks/eval_duplicates.py [--db /tmp/caltech_clu.db] [--sample 400]
        [--pairs DIR]
    .venv/bin/python benchmarks/eval_duplicates.py --tiers [--originals 80] [--json OUT]

--tiers (no --db needed): the tiers of analysis/duplicate_tiers.py measured on copies made
here. A seeded sample of Caltech-101 photos is copied byte for byte, saved as PNG (same
pixels), and edited every way copies get edited, each at several strengths (JPEG quality,
resize, crop 5-20%, colour shifts, watermark text), each edit saved as a file (JPEG quality
90 unless the edit is a JPEG quality). The "similar" class, other shots: the two photos
before and after each original in its folder, and, harder, every pair of distinct photos
at cosine >= 0.8 among the first --per-category photos of categories photographed much
alike (LOOKALIKE_CATEGORIES; Caltech-101 holds a few true copies, which count as errors
here). Each pair is sorted by the rules a group's pairs are sorted by: a confusion table per
tier, and the near-duplicate boundary swept (cosine alone, and cosine or perceptual hash).

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
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from lookalike import Collection, config
from lookalike.analysis.duplicates import duplicate_pairs
from lookalike.image.decode import load_image
from lookalike.index.exact import ExactIndex

#: $DATA: the datasets folder (default ../shared/datasets beside the repository).
DATA = (
    Path(os.environ.get("DATA", Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets"))
    / "caltech101"
)
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


# --- tiers ------------------------------------------------------------------------------------


def _save_jpeg(image: Image.Image, path: Path, quality: int = 90) -> None:
    image.save(path, "JPEG", quality=quality)


def _resize(scale: float) -> Callable[[Image.Image], Image.Image]:
    return lambda im: im.resize(
        (max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.LANCZOS
    )


def _crop(fraction: float) -> Callable[[Image.Image], Image.Image]:
    """Keep 1 - ``fraction`` of the area, off centre (more from the right and bottom)."""

    def crop(im: Image.Image) -> Image.Image:
        side = (1 - fraction) ** 0.5
        w, h = round(im.width * side), round(im.height * side)
        x, y = (im.width - w) // 3, (im.height - h) // 3
        return im.crop((x, y, x + w, y + h))

    return crop


def _colour(kind: str) -> Callable[[Image.Image], Image.Image]:
    def shift(im: Image.Image) -> Image.Image:
        if kind == "brightness +20%":
            return ImageEnhance.Brightness(im).enhance(1.2)
        if kind == "saturation +40%, contrast +20%":
            return ImageEnhance.Contrast(ImageEnhance.Color(im).enhance(1.4)).enhance(1.2)
        # warm cast: red up, blue down
        r, g, b = (np.asarray(c, np.float32) for c in im.split())
        channels = [np.clip(r * 1.15, 0, 255), g, np.clip(b * 0.8, 0, 255)]
        return Image.merge("RGB", [Image.fromarray(c.astype(np.uint8)) for c in channels])

    return shift


def _watermark(size: float) -> Callable[[Image.Image], Image.Image]:
    """White text with a dark outline, ``size`` of the image's height, bottom right (small)
    or across the middle (large)."""
    from PIL import ImageDraw, ImageFont

    def mark(im: Image.Image) -> Image.Image:
        out = im.copy()
        draw = ImageDraw.Draw(out)
        font = ImageFont.load_default(size=max(8, round(im.height * size)))
        text = "© lookalike 2026"
        box = draw.textbbox((0, 0), text, font=font)
        w, h = box[2] - box[0], box[3] - box[1]
        at = (
            (im.width - w - 4, im.height - h - 8)
            if size < 0.1
            else ((im.width - w) // 2, (im.height - h) // 2)
        )
        draw.text(at, text, font=font, fill="white", stroke_width=2, stroke_fill="black")
        return out

    return mark


#: Edit kind -> (strength -> edit, JPEG quality it is saved at).
EDITS: dict[str, dict[str, tuple[Callable[[Image.Image], Image.Image], int]]] = {
    "JPEG quality": {f"q{q}": (lambda im: im, q) for q in (90, 70, 50, 30)},
    "resize": {f"{round(s * 100)}%": (_resize(s), 90) for s in (0.75, 0.5, 0.33)},
    "crop": {f"{round(f * 100)}% off": (_crop(f), 90) for f in (0.05, 0.1, 0.15, 0.2)},
    "colour": {
        k: (_colour(k), 90)
        for k in ("brightness +20%", "saturation +40%, contrast +20%", "warm cast")
    },
    "watermark": {f"text {round(s * 100)}% high": (_watermark(s), 90) for s in (0.06, 0.15)},
}
PREDICTED = ("exact", "near", "similar", "not grouped")


def tier_pairs(originals: list[Path], work: Path) -> list[dict[str, object]]:
    """Every (original, copy) and (original, next photo of its category) pair: its true
    class, kind, strength and the files."""
    pairs: list[dict[str, object]] = []
    for n, original in enumerate(originals):
        image = load_image(str(original))
        folder = work / f"{n:04d}"
        folder.mkdir(parents=True)

        def add(
            truth: str, kind: str, strength: str, path: Path, original: Path = original
        ) -> None:
            pairs.append(
                {"truth": truth, "kind": kind, "strength": strength,
                 "a": str(original), "b": str(path)}
            )  # fmt: skip

        same_bytes = folder / original.name
        shutil.copyfile(original, same_bytes)
        add("exact", "same bytes", "copy", same_bytes)
        png = folder / "same.png"
        image.save(png)
        add("exact", "same pixels", "PNG", png)
        for kind, strengths in EDITS.items():
            for strength, (edit, quality) in strengths.items():
                target = folder / f"{kind}-{strength}.jpg".replace(" ", "_").replace("%", "")
                _save_jpeg(edit(image), target, quality)
                add("near", kind, strength, target)
        neighbours = sorted(original.parent.glob("*.jpg"))
        at = neighbours.index(original)
        for step in (-2, -1, 1, 2):  # neighbouring photos of the category: other shots
            if 0 <= at + step < len(neighbours):
                add("similar", "another shot", f"{step:+d} in the folder", neighbours[at + step])
    return pairs


#: Categories photographed much alike (one airliner side-on, one person facing the camera):
#: the hard "other shots", pairs of distinct photos at a high cosine.
LOOKALIKE_CATEGORIES = ("airplanes", "Motorbikes", "car_side", "Faces", "watch", "Leopards")


def predicted(pair: dict[str, object]) -> str:
    """The tier :func:`lookalike.analysis.duplicate_tiers.pair_tier` gives a pair, from its
    cosine, hash distance and exactness as measured (files stand-ins that carry just those),
    or "not grouped" below the grouping threshold (an image joins a group only through a
    pair at or above it)."""
    from lookalike import config
    from lookalike.analysis.duplicate_tiers import ImageFacts, pair_tier

    cosine, bits = float(pair["cosine"]), int(pair["hash_bits"])  # type: ignore[arg-type, call-overload]
    a = ImageFacts("a", file_sha="a", pixels_sha="a", phash=0)
    b = ImageFacts(
        "b", file_sha="a" if pair["exact"] else "b", pixels_sha="b", phash=(1 << bits) - 1
    )
    tier = pair_tier(a, b, cosine)
    return "not grouped" if tier != "exact" and cosine < config.DUPLICATE_THRESHOLD else tier


def collect_tier_pairs(args: argparse.Namespace) -> list[dict[str, object]]:
    """Make the copies, read every file's facts and vector: the pairs with their cosine,
    hash distance and exactness."""
    import tempfile

    from lookalike.analysis.duplicate_tiers import exact_match, facts_of, hash_distance

    folders = DATA / "101_ObjectCategories"
    categories = sorted(p for p in folders.iterdir() if p.is_dir())
    categories = [c for c in categories if c.name != "BACKGROUND_Google"]
    rng = np.random.default_rng(0)
    originals = []
    for c in rng.choice(len(categories), size=args.originals, replace=False):
        photos = sorted(categories[c].glob("*.jpg"))
        originals.append(photos[int(rng.integers(len(photos)))])
    lookalikes = [
        p
        for name in LOOKALIKE_CATEGORIES
        for p in sorted((folders / name).glob("*.jpg"))[: args.per_category]
    ]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        pairs = tier_pairs(originals, Path(tmp) / "copies")
        named = {str(p[k]) for p in pairs for k in ("a", "b")} | {str(p) for p in lookalikes}
        paths = sorted(named)
        facts = dict(zip(paths, facts_of(paths), strict=True))
        vectors: dict[str, np.ndarray] = {}
        with Collection.open(Path(tmp) / "embed.db") as collection:
            for s in range(0, len(paths), 64):
                chunk = paths[s : s + 64]
                vectors.update(zip(chunk, collection.query_vectors(chunk)[0], strict=True))
    # hard other shots: every pair of distinct photos of a look-alike category at cosine >= 0.8
    for name in LOOKALIKE_CATEGORIES:
        members = [str(p) for p in lookalikes if p.parent.name == name]
        matrix = np.stack([vectors[m] for m in members])
        first, second = np.nonzero(np.triu(matrix @ matrix.T >= 0.8, k=1))
        for i, j in zip(first, second, strict=True):
            pairs.append(
                {
                    "truth": "similar",
                    "kind": "look-alike shot",
                    "strength": name,
                    "a": members[i],
                    "b": members[j],
                }
            )
    for p in pairs:
        fa, fb = facts[str(p["a"])], facts[str(p["b"])]
        p["cosine"] = round(float(vectors[str(p["a"])] @ vectors[str(p["b"])]), 5)
        known = fa.phash is not None and fb.phash is not None
        p["hash_bits"] = hash_distance(fa.phash, fb.phash) if known else 64  # type: ignore[arg-type]
        p["exact"] = exact_match(fa, fb) is not None
    seconds = time.perf_counter() - started
    print(
        f"{len(originals)} originals copied, {len(lookalikes)} look-alike photos, "
        f"{len(pairs)} pairs, {seconds:.0f} s\n"
    )
    return pairs


def report_tiers(pairs: list[dict[str, object]]) -> None:
    """Markdown tables: per edit and strength, the confusion per tier, the boundary swept."""
    from lookalike import config

    for p in pairs:
        p["predicted"] = predicted(p)
    head = "| true class | edit | strength | pairs | " + " | ".join(PREDICTED)
    print(head + " | cosine p5 / median | hash bits median |")
    print("|---|---|---|---:|" + "---:|" * len(PREDICTED) + "---|---:|")
    rows: dict[tuple[str, str, str], list[dict[str, object]]] = {}
    for p in pairs:
        rows.setdefault((str(p["truth"]), str(p["kind"]), str(p["strength"])), []).append(p)
    for (truth, kind, strength), found in rows.items():
        cos = np.array([f["cosine"] for f in found], dtype=float)
        bits = np.array([f["hash_bits"] for f in found], dtype=float)
        counts = [sum(f["predicted"] == t for f in found) for t in PREDICTED]
        cells = " | ".join(f"{c / len(found):.0%}" for c in counts)
        print(
            f"| {truth} | {kind} | {strength} | {len(found)} | {cells} | "
            f"{np.percentile(cos, 5):.3f} / {np.median(cos):.3f} | {np.median(bits):.0f} |"
        )
    print("\nConfusion, by true class (rows) and predicted tier (columns), in pairs:\n")
    print("| true class | pairs | " + " | ".join(PREDICTED) + " |")
    print("|---|---:|" + "---:|" * len(PREDICTED))
    classes: dict[str, Callable[[dict[str, object]], bool]] = {
        "exact (same bytes, same pixels)": lambda p: p["truth"] == "exact",
        "near (edited copies)": lambda p: p["truth"] == "near",
        "similar: neighbouring photos": lambda p: p["kind"] == "another shot",
        "similar: look-alike shots (cosine >= 0.8)": lambda p: p["kind"] == "look-alike shot",
    }
    for label, member in classes.items():
        found = [p for p in pairs if member(p)]
        counts = [sum(f["predicted"] == t for f in found) for t in PREDICTED]
        print(f"| {label} | {len(found)} | " + " | ".join(str(c) for c in counts) + " |")

    near = [p for p in pairs if p["truth"] == "near"]
    hard = [p for p in pairs if p["kind"] == "look-alike shot"]
    print(
        f"\nThe near boundary (pairs grouped at cosine >= {config.DUPLICATE_THRESHOLD} and "
        "called near): edited copies, look-alike shots\n"
    )
    print("| rule | copies called near | look-alike shots called near |")
    print("|---|---:|---:|")

    def rate(group: list[dict[str, object]], rule: Callable[[float, int], bool]) -> str:
        called = [
            float(p["cosine"]) >= config.DUPLICATE_THRESHOLD  # type: ignore[arg-type]
            and rule(float(p["cosine"]), int(p["hash_bits"]))  # type: ignore[arg-type, call-overload]
            for p in group
        ]
        return f"{np.mean(called):.1%} ({sum(called)})"

    def cosine_only(low: float) -> Callable[[float, int], bool]:
        return lambda x, h: x >= low

    def cosine_or_hash(high: float, bits: int) -> Callable[[float, int], bool]:
        return lambda x, h: x >= high or h <= bits

    for c in (0.93, 0.95, 0.96, 0.97, 0.98):
        print(f"| cosine >= {c} | {rate(near, cosine_only(c))} | {rate(hard, cosine_only(c))} |")
    for high in (0.96, 0.97, 0.98):
        for bits in (6, 10, 14):
            rule = cosine_or_hash(high, bits)
            print(
                f"| cosine >= {high}, or hash <= {bits} bits | {rate(near, rule)} | "
                f"{rate(hard, rule)} |"
            )


def run_tiers(args: argparse.Namespace) -> None:
    if args.tiers_from is not None:
        pairs = json.loads(args.tiers_from.read_text())
    else:
        pairs = collect_tier_pairs(args)
        if args.json:
            args.json.write_text(json.dumps(pairs, indent=0))
    report_tiers(pairs)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--db", type=Path, default=Path("/tmp/caltech_clu.db"))
    parser.add_argument("--sample", type=int, default=400)
    parser.add_argument("--pairs", type=Path, default=None, help="draw sample pairs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    parser.add_argument("--tiers", action="store_true", help="measure the tiers on copies")
    parser.add_argument("--originals", type=int, default=100, help="--tiers: photos to copy")
    parser.add_argument(
        "--per-category", type=int, default=120, help="--tiers: photos per look-alike category"
    )
    parser.add_argument(
        "--tiers-from", type=Path, default=None, help="--tiers: the tables again from --json"
    )
    args = parser.parse_args()
    if args.tiers:
        run_tiers(args)
        return

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
        "default_threshold": config.DUPLICATE_THRESHOLD,
    }
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text)


if __name__ == "__main__":
    main()
