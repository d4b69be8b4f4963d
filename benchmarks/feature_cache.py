"""Pooled descriptors of a list of images, computed once and cached in an .npz file.

    .venv/bin/python benchmarks/feature_cache.py --model lite0 [--precision int8] \\
        --out /tmp/quality11/caltech-lite0.npz --paths-from ../shared/datasets/caltech101/labels.csv

``--precision`` defaults to the library's default for the model (int8 for Lite0, fp32
for Lite2: see ``config.INT8_BY_DEFAULT``).

Comparisons of descriptors (pooling, PCA, re-ranking, LDA) then run on these vectors in
seconds instead of re-embedding the images for every configuration. For each image the
network runs once (at the model's input size, centre crop, as lookalike indexes) and its
last feature map is pooled three ways, each L2-normalised:

* ``avg``: global average pooling (lookalike's descriptor before issue 11);
* ``gem``: generalized mean, p = 3 (:func:`lookalike.encode.features.pool`);
* ``rmac``: regional maximum activations (Tolias et al., 2016), regions at 3 scales, each
  region max-pooled and L2-normalised, summed (no per-region whitening).

A rerun only embeds the paths not yet in the file. Images that fail to decode are listed in
``failed`` and skipped.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lookalike.encode.features import pool
from lookalike.encode.models import CROP_MARGIN, Embedder, Precision, builtin_spec, normalize
from lookalike.image.decode import DecodeError, load_image
from lookalike.image.localization import crop_to, find_object

KINDS = ("avg", "gem", "rmac")


def rmac(fmaps: np.ndarray, levels: int = 3) -> np.ndarray:
    """(N, C, h, w) -> (N, C): R-MAC regions of side 2 * min(h, w) / (l + 1), l = 1..levels."""
    n, c, h, w = fmaps.shape
    total = np.zeros((n, c), dtype=np.float32)
    side_min = min(h, w)
    for level in range(1, levels + 1):
        side = max(1, round(2 * side_min / (level + 1)))
        ys = np.unique(np.linspace(0, h - side, level + (h > w)).round().astype(int))
        xs = np.unique(np.linspace(0, w - side, level + (w > h)).round().astype(int))
        for y in ys:
            for x in xs:
                region = fmaps[:, :, y : y + side, x : x + side].max(axis=(2, 3))
                total += normalize(region)
    return normalize(total + normalize(fmaps.max(axis=(2, 3))))


def describe(fmaps: np.ndarray) -> dict[str, np.ndarray]:
    return {
        "avg": normalize(pool(fmaps, "avg")),
        "gem": normalize(pool(fmaps, "gem")),
        "rmac": rmac(fmaps),
    }


def load(path: Path) -> dict[str, np.ndarray]:
    if not path.is_file():
        return {}
    with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


def located(
    embedder: Embedder, images: list[Image.Image], method: str
) -> tuple[list[Image.Image], list[tuple[float, float, float, float] | None]]:
    """The images cropped by query localization ``method`` (border: lookalike.image.localization;
    crop: the activation-map crop of ``--localize crop``), and the boxes found."""
    if method == "border":
        boxes = [find_object(image) for image in images]
        crops = [
            image if b is None else crop_to(image, b)
            for image, b in zip(images, boxes, strict=True)
        ]
        return crops, list(boxes)
    found = embedder._object_boxes(images)
    crops = [crop_to(image, box, CROP_MARGIN) for image, box in zip(images, found, strict=True)]
    return crops, list(found)


def build(
    paths: list[str],
    model: str,
    out: Path,
    *,
    batch: int = 16,
    threads: int = 2,
    localize: str | None = None,
    precision: Precision | None = None,
) -> None:
    """Embed ``paths`` not yet in ``out``; with ``localize``, the localized images, cached
    under ``path#method`` with their boxes."""
    suffix = f"#{localize}" if localize else ""
    cached = load(out)
    done = set(cached.get("paths", np.array([], dtype=str)).tolist())
    failed = set(cached.get("failed", np.array([], dtype=str)).tolist())
    todo = [p for p in paths if p + suffix not in done and p not in failed]
    print(f"{model}: {len(done)} cached, {len(todo)} to embed", flush=True)
    embedder = Embedder(builtin_spec(model, precision), threads=threads)
    new_paths: list[str] = []
    new_boxes: list[tuple[float, float, float, float]] = []
    new: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    started = time.perf_counter()
    for start in range(0, len(todo), batch):
        images, names = [], []
        for p in todo[start : start + batch]:
            try:
                images.append(load_image(p, min_side=embedder.decode_side))
                names.append(p)
            except DecodeError:
                failed.add(p)
        if not images:
            continue
        if localize:
            images, boxes = located(embedder, images, localize)
            if localize == "border":  # left whole: the plain vector stands (not stored again)
                kept = [i for i, b in enumerate(boxes) if b is not None]
                images, names = [images[i] for i in kept], [names[i] for i in kept]
                boxes = [boxes[i] for i in kept]
                if not images:
                    continue
            new_boxes.extend(b or (np.nan,) * 4 for b in boxes)
        else:
            new_boxes.extend([(np.nan,) * 4] * len(images))
        for kind, vectors in describe(
            embedder.feature_maps(images, embedder.spec.input_size)
        ).items():
            new[kind].append(vectors)
        new_paths.extend(n + suffix for n in names)
        if (start // batch) % 50 == 0:
            rate = len(new_paths) / (time.perf_counter() - started)
            print(f"  {len(new_paths)}/{len(todo)} ({rate:.1f} images/s)", flush=True)
    old_paths = cached["paths"].tolist() if done else []
    arrays = {"paths": np.array(old_paths + new_paths)}
    for kind in KINDS:
        parts = ([cached[kind]] if done else []) + new[kind]
        arrays[kind] = np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
    arrays["failed"] = np.array(sorted(failed))
    old_boxes = [cached["boxes"]] if done and "boxes" in cached else []
    if done and not old_boxes:
        old_boxes = [np.full((len(old_paths), 4), np.nan)]
    arrays["boxes"] = np.concatenate([*old_boxes, np.array(new_boxes).reshape(-1, 4)])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, out)
    print(f"{model}: {len(arrays['paths'])} images in {out}", flush=True)


def paths_from(listing: Path) -> list[str]:
    """Absolute image paths from a CSV with a ``path`` column (relative to the CSV) or a
    text file of paths, one per line."""
    if listing.suffix == ".csv":
        with listing.open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        column = "query_path" if rows and "query_path" in rows[0] else "path"
        return [os.path.abspath(listing.parent / row[column]) for row in rows]
    return [os.path.abspath(line) for line in listing.read_text().split()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--paths-from", type=Path, nargs="+", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--localize", choices=("border", "crop"), default=None)
    parser.add_argument(
        "--precision",
        choices=("fp32", "int8"),
        default=None,
        help="the model's precision (default: the library's default for the model)",
    )
    args = parser.parse_args()
    paths: list[str] = []
    for listing in args.paths_from:
        paths.extend(paths_from(listing))
    build(
        list(dict.fromkeys(paths)),
        args.model,
        args.out,
        threads=args.threads,
        localize=args.localize,
        precision=args.precision,
    )


if __name__ == "__main__":
    main()
