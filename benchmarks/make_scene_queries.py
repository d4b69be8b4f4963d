"""Scene queries from Caltech-101: a clean object image, photographed "in a scene".

    .venv/bin/python benchmarks/make_scene_queries.py \\
        --caltech ../shared/datasets/caltech101 --out /tmp/scenes \\
        [--per-category 3] [--seed 0] [--workers 4]

Tests object localization / background removal where it matters: a query shows an object
somewhere in a cluttered photo, the collection holds clean object images. This is instance
retrieval: every query is made from one collection image, which is THE relevant item; the
other images of its category are relevant at category level.

- Collection: every image of Caltech-101's test split (`test.txt`) except `BACKGROUND_Google`
  (2,893 images in all 101 categories, `Faces` and `Faces_easy` both kept). Nothing is copied:
  `<out>/collection.txt` lists their absolute paths, `<out>/collection_labels.csv` has
  `path,class_name` (labels from `labels.csv`).
- Queries: `--per-category` test images per category (303 by default), each turned into one
  640x480 JPEG `<out>/queries/<category>__<image-stem>__<n>.jpg` (n: 0.. within the category).
  The background is a random `BACKGROUND_Google` photo (those with a shorter side of at least
  200 px: 280 of 467, so little upscaling), scaled to cover and randomly cropped, flipped half
  the time.
  Three kinds, assigned in a shuffled 2:1:1 ratio:
  - `paste`: the object image (its own backdrop and all) scaled so its longer side is 25-55 %
    of the scene width, rotated by -20..20 degrees half the time (corners show the background
    through a mask), pasted fully inside the scene;
  - `paste_soft`: the same with a soft-edged rectangle or a feathered ellipse as the mask, so
    the object's edges are less of a giveaway;
  - `context_crop`: a photograph-like crop: the object larger (longer side 45-80 % of the
    width), hard-edged and unrotated, inside a background context that is then cropped so that
    at least 80 % of the object's area stays in the frame (it may be cut at the borders).
  Then photograph-like degradations on the whole scene: brightness, contrast and saturation
  +-15 %, a mild Gaussian blur a third of the time, JPEG re-encoding at quality 70-90.
- `<out>/queries.csv`: `query_path, source_path, class_name, box_x0, box_y0, box_x1, box_y1,
  kind`; paths absolute (as `os.path.abspath`, the form `lookalike` stores), `source_path` the
  collection image the query was made from, the box the visible extent in the scene of the
  pasted object image (mask at >= 50 %; the object with its own backdrop, not a tight outline)
  as fractions of the scene's width and height.

Deterministic given `--seed`: inputs are sorted, choices come from `numpy.random.default_rng`
(one generator for the plan, one per query seeded with (seed, query number)), so the result
does not depend on `--workers`. A rerun replaces `queries/*__*__*.jpg` and the three lists.

Licence: Caltech-101 (Fei-Fei, Fergus, Perona) is CC BY 4.0. The generated queries are
derivatives of its images (object and background photos); they are NOT committed to this
repository: regenerate them with the command above.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

SCENE_W, SCENE_H = 640, 480
BACKGROUND = "BACKGROUND_Google"
MIN_BACKGROUND_SIDE = 200
IMAGES_DIR = "101_ObjectCategories"
COLUMNS = (
    "query_path",
    "source_path",
    "class_name",
    "box_x0",
    "box_y0",
    "box_x1",
    "box_y1",
    "kind",
)


@dataclass(frozen=True)
class Job:
    number: int
    seed: int
    source: str  # absolute path of the collection image
    class_name: str
    background: str  # absolute path of a BACKGROUND_Google image
    kind: str
    out_path: str


def load_rgb(path: str) -> Image.Image:
    with Image.open(path) as im:
        return im.convert("RGB")


def make_background(path: str, rng: np.random.Generator) -> Image.Image:
    """Scale to cover the scene (plus up to 15 % zoom), crop at random, flip half the time."""
    bg = load_rgb(path)
    scale = max(SCENE_W / bg.width, SCENE_H / bg.height) * rng.uniform(1.0, 1.15)
    w = max(SCENE_W, math.ceil(bg.width * scale))
    h = max(SCENE_H, math.ceil(bg.height * scale))
    bg = bg.resize((w, h), Image.Resampling.LANCZOS)
    x = int(rng.integers(0, w - SCENE_W + 1))
    y = int(rng.integers(0, h - SCENE_H + 1))
    bg = bg.crop((x, y, x + SCENE_W, y + SCENE_H))
    if rng.random() < 0.5:
        bg = bg.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return bg


def soft_mask(size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    """A feathered ellipse or a soft-edged rectangle covering the object image."""
    w, h = size
    feather = max(1.0, rng.uniform(0.02, 0.05) * min(w, h))
    inset = 1.5 * feather  # the blurred edge stays inside the image
    mask = Image.new("L", size, 0)
    draw = ImageDraw.Draw(mask)
    if rng.random() < 0.5:
        draw.ellipse((inset, inset, w - 1 - inset, h - 1 - inset), fill=255)
    else:
        draw.rectangle((inset, inset, w - 1 - inset, h - 1 - inset), fill=255)
    return mask.filter(ImageFilter.GaussianBlur(feather))


def visible_box(mask: Image.Image, x: int, y: int) -> tuple[int, int, int, int]:
    """Box (in scene pixels) of the mask's >= 50 % part, the mask pasted at (x, y)."""
    bbox = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    assert bbox is not None
    x0, y0, x1, y1 = bbox
    return (
        max(0, x + x0),
        max(0, y + y0),
        min(SCENE_W, x + x1),
        min(SCENE_H, y + y1),
    )


def paste(
    scene: Image.Image, obj: Image.Image, soft: bool, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    longer = rng.uniform(0.25, 0.55) * SCENE_W
    scale = longer / max(obj.size)
    obj = obj.resize(
        (max(1, round(obj.width * scale)), max(1, round(obj.height * scale))),
        Image.Resampling.LANCZOS,
    )
    mask = soft_mask(obj.size, rng) if soft else Image.new("L", obj.size, 255)
    if rng.random() < 0.5:
        angle = float(rng.uniform(-20.0, 20.0))
        obj = obj.rotate(angle, Image.Resampling.BICUBIC, expand=True)
        mask = mask.rotate(angle, Image.Resampling.BILINEAR, expand=True)
    x = int(rng.integers(0, SCENE_W - obj.width + 1))
    y = int(rng.integers(0, SCENE_H - obj.height + 1))
    scene.paste(obj, (x, y), mask)
    return visible_box(mask, x, y)


def context_crop(
    scene: Image.Image, obj: Image.Image, rng: np.random.Generator
) -> tuple[int, int, int, int]:
    """The scene is a crop of a larger background with the object in it; >= 80 % of the
    object's area stays inside the crop."""
    longer = rng.uniform(0.45, 0.80) * SCENE_W
    scale = min(longer / max(obj.size), 1.1 * SCENE_H / obj.height)
    w = max(1, round(obj.width * scale))
    h = max(1, round(obj.height * scale))
    obj = obj.resize((w, h), Image.Resampling.LANCZOS)
    for _ in range(100):
        x = int(rng.integers(-w // 4, SCENE_W - 3 * w // 4 + 1))
        y = int(rng.integers(-h // 4, SCENE_H - 3 * h // 4 + 1))
        inside_w = min(SCENE_W, x + w) - max(0, x)
        inside_h = min(SCENE_H, y + h) - max(0, y)
        if inside_w * inside_h >= 0.8 * w * h:
            break
    else:  # centred: at least as much inside as any other position
        x, y = (SCENE_W - w) // 2, (SCENE_H - h) // 2
    scene.paste(obj, (x, y))
    return visible_box(Image.new("L", (w, h), 255), x, y)


def degrade(scene: Image.Image, rng: np.random.Generator) -> Image.Image:
    scene = ImageEnhance.Brightness(scene).enhance(rng.uniform(0.85, 1.15))
    scene = ImageEnhance.Contrast(scene).enhance(rng.uniform(0.85, 1.15))
    scene = ImageEnhance.Color(scene).enhance(rng.uniform(0.85, 1.15))
    if rng.random() < 1 / 3:
        scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.4, 1.0)))
    return scene


def make_query(job: Job) -> list[str]:
    rng = np.random.default_rng([job.seed, job.number])
    scene = make_background(job.background, rng)
    obj = load_rgb(job.source)
    if job.kind == "context_crop":
        box = context_crop(scene, obj, rng)
    else:
        box = paste(scene, obj, job.kind == "paste_soft", rng)
    scene = degrade(scene, rng)
    scene.save(job.out_path, "JPEG", quality=int(rng.integers(70, 91)))
    x0, y0, x1, y1 = box
    fractions = (x0 / SCENE_W, y0 / SCENE_H, x1 / SCENE_W, y1 / SCENE_H)
    return [job.out_path, job.source, job.class_name, *(f"{v:.4f}" for v in fractions), job.kind]


def read_labels(caltech: Path) -> dict[str, str]:
    """labels.csv, keyed by path relative to 101_ObjectCategories."""
    labels = {}
    with open(caltech / "labels.csv", newline="") as f:
        for row in csv.DictReader(f):
            rel = Path(row["path"]).relative_to(IMAGES_DIR).as_posix()
            labels[rel] = row["class_name"]
    return labels


def plan(
    caltech: Path, out: Path, per_category: int, seed: int
) -> tuple[list[tuple[str, str]], list[Job]]:
    """The collection as (absolute path, class name) and one job per query."""
    labels = read_labels(caltech)
    images = Path(os.path.abspath(caltech / IMAGES_DIR))
    test = sorted(
        line.strip() for line in (caltech / "test.txt").read_text().splitlines() if line.strip()
    )
    collection = [rel for rel in test if labels[rel] != BACKGROUND]
    by_class: dict[str, list[str]] = {}
    for rel in collection:
        by_class.setdefault(labels[rel], []).append(rel)

    backgrounds = []
    for path in sorted((images / BACKGROUND).glob("*.jpg")):
        with Image.open(path) as im:
            if min(im.size) >= MIN_BACKGROUND_SIDE:
                backgrounds.append(str(path))

    rng = np.random.default_rng(seed)
    chosen = []
    for class_name in sorted(by_class):
        members = by_class[class_name]
        picks = rng.choice(len(members), size=min(per_category, len(members)), replace=False)
        chosen += [(class_name, n, members[i]) for n, i in enumerate(sorted(picks))]
    count = len(chosen)
    kinds = ["context_crop"] * round(count / 4) + ["paste_soft"] * round(count / 4)
    kinds += ["paste"] * (count - len(kinds))
    kinds = [kinds[i] for i in rng.permutation(count)]
    bg_order = rng.permutation(len(backgrounds))  # spread: each used once before any twice

    jobs = []
    for number, (class_name, n, rel) in enumerate(chosen):
        stem = Path(rel).stem
        jobs.append(
            Job(
                number=number,
                seed=seed,
                source=str(images / rel),
                class_name=class_name,
                background=backgrounds[bg_order[number % len(backgrounds)]],
                kind=kinds[number],
                out_path=os.path.abspath(out / "queries" / f"{class_name}__{stem}__{n}.jpg"),
            )
        )
    return [(str(images / rel), labels[rel]) for rel in collection], jobs


AnyJob = TypeVar("AnyJob")


def write_query_set(
    out: Path,
    collection: list[tuple[str, str]],
    jobs: Sequence[AnyJob],
    make: Callable[[AnyJob], list[str]],
    workers: int,
    *,
    chunksize: int,
    stale: str,
) -> list[list[str]]:
    """Write a query set: ``collection.txt`` and ``collection_labels.csv`` (the database and
    its categories), the query photos (``make`` each job, in ``workers`` processes; old
    photos matching ``stale`` removed first) and ``queries.csv``; returns its rows."""
    queries_dir = out / "queries"
    queries_dir.mkdir(parents=True, exist_ok=True)
    for old in queries_dir.glob(stale):
        old.unlink()
    with open(out / "collection.txt", "w") as f:
        f.writelines(path + "\n" for path, _ in collection)
    with open(out / "collection_labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "class_name"])
        writer.writerows(collection)
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            rows = list(pool.map(make, jobs, chunksize=chunksize))
    else:
        rows = [make(job) for job in jobs]
    with open(out / "queries.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, required=True, help="the caltech101 folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-category", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    args = parser.parse_args()

    start = time.perf_counter()
    collection, jobs = plan(args.caltech, args.out, args.per_category, args.seed)
    rows = write_query_set(
        args.out, collection, jobs, make_query, args.workers, chunksize=8, stale="*__*__*.jpg"
    )
    kinds = {kind: sum(row[-1] == kind for row in rows) for kind in sorted({r[-1] for r in rows})}
    print(
        f"{len(rows)} queries ({', '.join(f'{k}: {v}' for k, v in kinds.items())}), "
        f"{len(collection)} collection images, {len({j.class_name for j in jobs})} "
        f"categories -> {args.out} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
