"""Camera-sized test photos made from Caltech-101, for benchmarks/bench_large.py.

    .venv/bin/python benchmarks/make_large_photos.py --out /tmp/large [--count 120]

Caltech-101's photos are about 300 x 200 px; phones give 12 MP and more. Upscaling one of
them to 4000 x 3000 would give a smooth picture that compresses (and decodes) far faster
than a real photo, flattering the decoder. Instead each large image is a mosaic of real
Caltech-101 photos at their own resolution (about 13 x 13 of them to a 4000 x 3000 canvas,
each from a different random category), so every region has the detail, edges and noise
of a real photo. The subject is not one object: this set measures decoding speed, not
retrieval. Written as:

* ``jpeg/``: 4000 x 3000 baseline JPEG, quality 92, 4:2:0 (what phone cameras write);
* ``png/``: 3000 x 2000 PNG (Pillow's default compression);
* ``webp/``: 3000 x 2000 WEBP, quality 90;
* ``upscaled/``: the first photo of each mosaic alone, upscaled to 4000 x 3000 (bicubic),
  JPEG quality 92: the smooth kind of large image, for comparison;
* ``small/``: that photo unchanged (the small-image reference).

Deterministic: the same ``--seed`` gives the same files.
"""

from __future__ import annotations

import argparse
import random
import shutil
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
CALTECH = ROOT.parent / "shared" / "datasets" / "caltech101" / "101_ObjectCategories"

SIZES = {"jpeg": (4000, 3000), "png": (3000, 2000), "webp": (3000, 2000)}


def mosaic(files: list[Path], size: tuple[int, int]) -> Image.Image:
    """Fill a ``size`` canvas row by row with the photos, each at its own resolution."""
    canvas = Image.new("RGB", size)
    x = y = row_height = 0
    for path in files:
        with Image.open(path) as photo:
            tile = photo.convert("RGB")
        if x + tile.width > size[0]:
            x, y, row_height = 0, y + row_height, 0
        if y >= size[1]:
            break
        canvas.paste(tile, (x, y))
        x += tile.width
        row_height = max(row_height, tile.height)
    return canvas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--count", type=int, default=120)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--caltech", type=Path, default=CALTECH)
    args = parser.parse_args()

    photos = sorted(p for p in args.caltech.rglob("*.jpg") if p.parent.name != "BACKGROUND_Google")
    rng = random.Random(args.seed)
    kinds = (*SIZES, "upscaled", "small")
    for name in kinds:
        (args.out / name).mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        chosen = rng.sample(photos, 400)
        shutil.copyfile(chosen[0], args.out / "small" / f"{i:04}.jpg")
        with Image.open(chosen[0]) as photo:
            upscaled = photo.convert("RGB").resize(SIZES["jpeg"], Image.Resampling.BICUBIC)
        upscaled.save(args.out / "upscaled" / f"{i:04}.jpg", quality=92, subsampling="4:2:0")
        if (args.out / "webp" / f"{i:04}.webp").is_file():
            continue  # made by an earlier run with the same seed
        big = mosaic(chosen, SIZES["jpeg"])
        big.save(args.out / "jpeg" / f"{i:04}.jpg", quality=92, subsampling="4:2:0")
        medium = big.crop((0, 0, *SIZES["png"]))
        medium.save(args.out / "png" / f"{i:04}.png")
        medium.save(args.out / "webp" / f"{i:04}.webp", quality=90)
    for name in kinds:
        files = list((args.out / name).iterdir())
        mb = sum(f.stat().st_size for f in files) / len(files) / 1e6
        print(f"{name}: {len(files)} files, {mb:.2f} MB each on average")


if __name__ == "__main__":
    main()
