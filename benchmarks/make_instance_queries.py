"""Instance queries from Caltech-101: pictures photographed on a wall, and transformed copies.

    .venv/bin/python benchmarks/make_instance_queries.py --set wall \\
        --caltech ../shared/datasets/caltech101 --out /tmp/wall
    .venv/bin/python benchmarks/make_instance_queries.py --set transformed \\
        --caltech ../shared/datasets/caltech101 --out /tmp/transformed

The collection is the one of make_scene_queries.py: Caltech-101's test split without
BACKGROUND_Google (2,893 clean images). Every query is made from one collection image, which
is THE relevant item (it must come first); its category mates are category matches.

``--set wall`` (the "photos of paintings on gallery walls, searched against clean scans"
kind of collection): ``--per-category`` sources per category (2: 202 sources), each giving
two queries:

- ``wall``: the image as a picture in a frame (black, wood, gold or white; a white mat
  half the time) on a plain wall (a light, randomly tinted colour with a lighting gradient
  and a little texture), covering 30-65 % of a 640 x 480 photo, seen in perspective (the
  corners moved by up to 12 % of the picture's side: a camera off-axis), then lit unevenly
  (a brightness ramp, a warm or cool cast), blurred a little and JPEG-encoded;
- ``clean``: the image itself, resized to 60-100 % and re-encoded at JPEG quality 80-95:
  a clean, object-filling photo, which query localization must leave alone.

``--set transformed`` (the "objects on a turntable / edited copies" kind): ``--count``
queries (2,000), each a random collection image under one transformation: ``rotate``
(90, 180 or 270 degrees, or -30..30 with the corners filled with grey), ``crop`` (40-80 %
of the area at a random place), ``colour`` (hue shift, saturation 0.3-1.7, gamma
0.6-1.6), ``light`` (brightness 0.5-1.5, contrast 0.6-1.4, a lighting ramp), ``combo``
(a small rotation, a 70-90 % crop and a colour and lighting change together).

Both write ``<out>/queries/*.jpg``, ``<out>/collection.txt``, ``<out>/collection_labels.csv``
and ``<out>/queries.csv`` with the columns of make_scene_queries.py (``query_path,
source_path, class_name, box_x0, box_y0, box_x1, box_y1, kind``; the box is the picture's
extent inside the frame for ``wall``, the whole image otherwise). Deterministic given
``--seed``: one generator for the plan, one per query seeded with (seed, query number).
The generated images derive from Caltech-101 (CC BY 4.0) and are not committed.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter

from benchmarks.make_scene_queries import SCENE_H, SCENE_W, load_rgb, write_query_set
from benchmarks.make_scene_queries import plan as scene_plan

TRANSFORMS = ("rotate", "crop", "colour", "light", "combo")
FRAMES = ((20, 20, 20), (110, 70, 40), (180, 150, 70), (240, 240, 236))


@dataclass(frozen=True)
class Job:
    number: int
    seed: int
    source: str
    class_name: str
    kind: str
    out_path: str


def perspective_coefficients(
    target: list[tuple[float, float]], source: list[tuple[float, float]]
) -> list[float]:
    """PIL's 8 perspective coefficients mapping output points ``target`` to ``source``."""
    rows, rhs = [], []
    for (x, y), (u, v) in zip(target, source, strict=True):
        rows.append([x, y, 1, 0, 0, 0, -u * x, -u * y])
        rows.append([0, 0, 0, x, y, 1, -v * x, -v * y])
        rhs += [u, v]
    return np.linalg.solve(np.array(rows, float), np.array(rhs, float)).tolist()


def framed(picture: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, tuple[int, ...]]:
    """The picture in a frame (and a mat half the time); returns it and the picture's box."""
    side = max(picture.size)
    mat = int(rng.uniform(0.06, 0.14) * side) if rng.random() < 0.5 else 0
    border = max(2, int(rng.uniform(0.03, 0.08) * side))
    colour = FRAMES[int(rng.integers(len(FRAMES)))]
    w, h = picture.width + 2 * (mat + border), picture.height + 2 * (mat + border)
    out = Image.new("RGB", (w, h), colour)
    if mat:
        ImageDraw.Draw(out).rectangle(
            (border, border, w - border - 1, h - border - 1), fill=(245, 243, 236)
        )
    inset = mat + border
    out.paste(picture, (inset, inset))
    return out, (inset, inset, inset + picture.width, inset + picture.height)


def wall_photo(picture: Image.Image, rng: np.random.Generator) -> tuple[Image.Image, tuple]:
    base = np.array([rng.uniform(170, 245)] * 3) + rng.uniform(-18, 18, size=3)
    ramp = np.linspace(rng.uniform(0.8, 1.0), rng.uniform(1.0, 1.15), SCENE_W)
    ramp_y = np.linspace(rng.uniform(0.9, 1.05), rng.uniform(0.9, 1.05), SCENE_H)
    light = ramp_y[:, None] * ramp[None, :]
    noise = rng.normal(0, 3.0, size=(SCENE_H, SCENE_W, 1))
    wall = np.clip(base[None, None, :] * light[..., None] + noise, 0, 255).astype(np.uint8)
    scene = Image.fromarray(wall)

    art, inner = framed(picture, rng)
    width = rng.uniform(0.30, 0.65) * SCENE_W
    scale = min(width / art.width, 0.85 * SCENE_H / art.height)
    w, h = max(8, round(art.width * scale)), max(8, round(art.height * scale))
    art = art.resize((w, h), Image.Resampling.LANCZOS)
    x0 = rng.uniform(0.05 * SCENE_W, SCENE_W - w - 0.05 * SCENE_W)
    y0 = rng.uniform(0.05 * SCENE_H, max(0.05 * SCENE_H + 1, SCENE_H - h - 0.05 * SCENE_H))
    jitter = 0.12 * min(w, h)
    corners = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
    moved = [
        (x + rng.uniform(-jitter, jitter), y + rng.uniform(-jitter, jitter)) for x, y in corners
    ]
    coeffs = perspective_coefficients(moved, [(0, 0), (w, 0), (w, h), (0, h)])
    warped = art.transform(
        scene.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BICUBIC
    )
    mask = Image.new("L", art.size, 255).transform(
        scene.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
    )
    scene.paste(warped, (0, 0), mask)

    # the picture's own box (inside the frame) after the perspective warp
    inner_mask = Image.new("L", art.size, 0)
    ix0, iy0, ix1, iy1 = (v * scale for v in inner)
    ImageDraw.Draw(inner_mask).rectangle((ix0, iy0, ix1 - 1, iy1 - 1), fill=255)
    box = inner_mask.transform(
        scene.size, Image.Transform.PERSPECTIVE, coeffs, Image.Resampling.BILINEAR
    ).point(lambda v: 255 if v >= 128 else 0).getbbox() or (0, 0, SCENE_W, SCENE_H)

    # uneven light on the whole photo, a colour cast, camera blur
    arr = np.asarray(scene, dtype=np.float32)
    shade = np.linspace(rng.uniform(0.75, 1.0), rng.uniform(1.0, 1.2), SCENE_W)
    if rng.random() < 0.5:
        shade = shade[::-1]
    cast = np.array([1.0 + rng.uniform(-0.08, 0.08), 1.0, 1.0 + rng.uniform(-0.08, 0.08)])
    arr = np.clip(arr * shade[None, :, None] * cast[None, None, :], 0, 255).astype(np.uint8)
    scene = Image.fromarray(arr)
    if rng.random() < 0.5:
        scene = scene.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.0)))
    return scene, box


def clean_photo(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    scale = rng.uniform(0.6, 1.0)
    size = (max(16, round(picture.width * scale)), max(16, round(picture.height * scale)))
    return picture.resize(size, Image.Resampling.LANCZOS)


def transformed(picture: Image.Image, kind: str, rng: np.random.Generator) -> Image.Image:
    if kind == "rotate":
        if rng.random() < 0.5:
            return picture.rotate(float(rng.choice([90, 180, 270])), expand=True)
        return picture.rotate(
            float(rng.uniform(-30, 30)), Image.Resampling.BICUBIC, expand=True, fillcolor=(128,) * 3
        )
    if kind == "crop":
        return random_crop(picture, rng.uniform(0.4, 0.8), rng)
    if kind == "colour":
        return recolour(picture, rng)
    if kind == "light":
        return relight(picture, rng)
    # combo
    picture = picture.rotate(
        float(rng.uniform(-10, 10)), Image.Resampling.BICUBIC, expand=False, fillcolor=(128,) * 3
    )
    return relight(recolour(random_crop(picture, rng.uniform(0.7, 0.9), rng), rng), rng)


def random_crop(picture: Image.Image, area: float, rng: np.random.Generator) -> Image.Image:
    aspect = rng.uniform(0.75, 1.33)
    w = min(picture.width, round(picture.width * np.sqrt(area * aspect)))
    h = min(picture.height, round(picture.height * np.sqrt(area / aspect)))
    x = int(rng.integers(0, picture.width - w + 1))
    y = int(rng.integers(0, picture.height - h + 1))
    return picture.crop((x, y, x + w, y + h))


def recolour(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    hsv = np.asarray(picture.convert("HSV")).copy()
    hsv[..., 0] = (hsv[..., 0].astype(int) + int(rng.integers(-25, 26))) % 256
    picture = Image.fromarray(hsv, "HSV").convert("RGB")
    picture = ImageEnhance.Color(picture).enhance(rng.uniform(0.3, 1.7))
    gamma = rng.uniform(0.6, 1.6)
    return picture.point([round(255 * (i / 255) ** gamma) for i in range(256)] * 3)


def relight(picture: Image.Image, rng: np.random.Generator) -> Image.Image:
    picture = ImageEnhance.Brightness(picture).enhance(rng.uniform(0.5, 1.5))
    picture = ImageEnhance.Contrast(picture).enhance(rng.uniform(0.6, 1.4))
    arr = np.asarray(picture, dtype=np.float32)
    ramp = np.linspace(rng.uniform(0.6, 1.0), rng.uniform(1.0, 1.3), arr.shape[1])
    if rng.random() < 0.5:
        ramp = ramp[::-1]
    return Image.fromarray(np.clip(arr * ramp[None, :, None], 0, 255).astype(np.uint8))


def make_query(job: Job) -> list[str]:
    rng = np.random.default_rng([job.seed, job.number])
    picture = load_rgb(job.source)
    if job.kind == "wall":
        image, (x0, y0, x1, y1) = wall_photo(picture, rng)
        box = (x0 / image.width, y0 / image.height, x1 / image.width, y1 / image.height)
    elif job.kind == "clean":
        image, box = clean_photo(picture, rng), (0.0, 0.0, 1.0, 1.0)
    else:
        image, box = transformed(picture, job.kind, rng), (0.0, 0.0, 1.0, 1.0)
    quality = int(rng.integers(80, 96)) if job.kind == "clean" else int(rng.integers(75, 93))
    image.save(job.out_path, "JPEG", quality=quality)
    return [job.out_path, job.source, job.class_name, *(f"{v:.4f}" for v in box), job.kind]


def plan(
    caltech: Path, out: Path, which: str, per_category: int, count: int, seed: int
) -> tuple[list[tuple[str, str]], list[Job]]:
    collection, _ = scene_plan(caltech, out, 0, seed)
    rng = np.random.default_rng(seed)
    jobs: list[Job] = []
    if which == "wall":
        by_class: dict[str, list[tuple[str, str]]] = {}
        for path, name in collection:
            by_class.setdefault(name, []).append((path, name))
        for name in sorted(by_class):
            members = by_class[name]
            picks = sorted(rng.choice(len(members), min(per_category, len(members)), replace=False))
            for i in picks:
                path = members[i][0]
                for kind in ("wall", "clean"):
                    stem = f"{name}__{Path(path).stem}__{kind}"
                    out_path = os.path.abspath(out / "queries" / f"{stem}.jpg")
                    jobs.append(Job(len(jobs), seed, path, name, kind, out_path))
    else:
        picks = rng.choice(len(collection), count, replace=True)
        kinds = rng.choice(TRANSFORMS, count)
        for n, (i, kind) in enumerate(zip(picks, kinds, strict=True)):
            path, name = collection[int(i)]
            out_path = os.path.abspath(out / "queries" / f"{n:05}__{name}__{kind}.jpg")
            jobs.append(Job(n, seed, path, name, str(kind), out_path))
    return collection, jobs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("wall", "transformed"), required=True)
    parser.add_argument("--caltech", type=Path, required=True, help="the caltech101 folder")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--per-category", type=int, default=2)
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    args = parser.parse_args()

    start = time.perf_counter()
    collection, jobs = plan(
        args.caltech, args.out, args.set, args.per_category, args.count, args.seed
    )
    rows = write_query_set(
        args.out, collection, jobs, make_query, args.workers, chunksize=16, stale="*.jpg"
    )
    kinds = {k: sum(r[-1] == k for r in rows) for k in sorted({r[-1] for r in rows})}
    print(
        f"{len(rows)} queries ({', '.join(f'{k}: {v}' for k, v in kinds.items())}), "
        f"{len(collection)} collection images -> {args.out} in {time.perf_counter() - start:.1f} s"
    )


if __name__ == "__main__":
    main()
