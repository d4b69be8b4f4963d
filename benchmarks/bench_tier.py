"""Embedding cost of the quality tier (Lite0 + Lite2) against Lite0 alone, and the time to
fit the category projection (LDA) on a labelled collection.

    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_tier.py \\
        --caltech ../shared/datasets/caltech101

Describes the same 64 Caltech-101 images (decoded once, beforehand) with each model,
alternating, 3 rounds; reports the median seconds per image and the ratio. Then fits
lookalike.categories.fit_projection on 6,000 random unit vectors in 1,280 dimensions with
101 labels (the size of Caltech-101's train split), 3 times, median.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from lookalike.categories import fit_projection
from lookalike.decode import load_image
from lookalike.models import Embedder, builtin_spec, normalize


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, required=True)
    parser.add_argument("--images", type=int, default=64)
    args = parser.parse_args()
    paths = sorted((args.caltech / "101_ObjectCategories").glob("*/*.jpg"))[:: 9144 // args.images]
    images = [load_image(p, min_side=260) for p in paths[: args.images]]
    embedders = {m: Embedder(builtin_spec(m)) for m in ("lite0", "lite2")}
    times: dict[str, list[float]] = {m: [] for m in embedders}
    for _ in range(3):
        for name, embedder in embedders.items():
            started = time.perf_counter()
            for i in range(0, len(images), 8):
                embedder.describe(images[i : i + 8])
            times[name].append((time.perf_counter() - started) / len(images))
    lite0, lite2 = (statistics.median(times[m]) for m in ("lite0", "lite2"))
    print(f"lite0: {1000 * lite0:.1f} ms/image, lite2: {1000 * lite2:.1f} ms/image")
    print(f"lite0+lite2: {1000 * (lite0 + lite2):.1f} ms/image = {(lite0 + lite2) / lite0:.2f}x")
    rng = np.random.default_rng(0)
    vectors = normalize(rng.normal(size=(6000, 1280)))
    labels = [f"c{i % 101}" for i in range(6000)]
    fits = []
    for _ in range(3):
        started = time.perf_counter()
        fit_projection(vectors, labels)
        fits.append(time.perf_counter() - started)
    print(f"LDA fit, 6,000 x 1,280, 101 categories: {statistics.median(fits):.2f} s")


if __name__ == "__main__":
    main()
