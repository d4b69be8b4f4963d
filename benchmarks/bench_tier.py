"""Embedding cost of the quality tier (``--model lite0+lite2``) against Lite0 alone, through
the encoders the library indexes with, in fp32 and int8; and the time to fit the category
projection (LDA) on a labelled collection.

    flock /tmp/lookalike-bench.lock .venv/bin/python benchmarks/bench_tier.py \\
        --caltech ../shared/datasets/caltech101

Decodes 64 Caltech-101 images once (at the side the tier decodes: 260), then describes them
with each encoder (``lookalike.encode.encoders.load_encoder``: Lite0, and the tier's
CompositeEncoder running Lite0 at 224 and Lite2 at 260 on the same decoded images), in
batches of 8 on one core (as each indexing run does, ``Collection.index_embedder``), the
encoders alternating, 3 rounds; reports the median ms/image of each and the tier's ratio to
Lite0 at the same precision. Model graphs are built (and int8 ones quantized) before the
clock starts. Then fits lookalike.search.categories.fit_projection on 6,000 random unit vectors in
1,280 dimensions with 101 labels (the size of Caltech-101's train split), 3 times, median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np

from lookalike import config
from lookalike.encode.base import ImageEncoder
from lookalike.encode.encoders import load_encoder
from lookalike.encode.models import Precision, builtin_spec, normalize
from lookalike.image.decode import load_image
from lookalike.search.categories import fit_projection

MODELS = ("lite0", "lite0+lite2")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, required=True)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=config.BATCH_SIZE)
    parser.add_argument("--threads", type=int, default=1, help="cores per model run")
    parser.add_argument("--precisions", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--no-lda", action="store_true", help="skip the LDA fit")
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.1f}; {args.images} images, batch {args.batch}, "
        f"{args.threads} thread(s), {args.rounds} rounds"
    )
    paths = sorted((args.caltech / "101_ObjectCategories").glob("*/*.jpg"))
    paths = paths[:: max(1, len(paths) // args.images)][: args.images]
    encoders: dict[tuple[str, str], ImageEncoder] = {}
    for precision in args.precisions:
        for model in MODELS:
            spec = builtin_spec(model, _precision(precision))
            encoders[(model, precision)] = load_encoder(spec, threads=args.threads)
    side = max(encoder.decode_side for encoder in encoders.values())
    images = [load_image(p, min_side=side) for p in paths]
    for encoder in encoders.values():  # warm up: first runs allocate
        encoder.embed_images(images[: args.batch])
    times: dict[tuple[str, str], list[float]] = {key: [] for key in encoders}
    for _ in range(args.rounds):
        for key, encoder in encoders.items():
            started = time.perf_counter()
            for i in range(0, len(images), args.batch):
                encoder.describe(images[i : i + args.batch])
            times[key].append((time.perf_counter() - started) / len(images))
    for precision in args.precisions:
        lite0 = statistics.median(times[("lite0", precision)])
        tier = statistics.median(times[("lite0+lite2", precision)])
        print(
            f"{precision}: lite0 {1000 * lite0:.1f} ms/image, lite0+lite2 "
            f"{1000 * tier:.1f} ms/image = {tier / lite0:.2f}x lite0"
        )
    if "fp32" in args.precisions and "int8" in args.precisions:
        tier_fp32 = statistics.median(times[("lite0+lite2", "fp32")])
        tier_int8 = statistics.median(times[("lite0+lite2", "int8")])
        lite0_fp32 = statistics.median(times[("lite0", "fp32")])
        print(
            f"lite0+lite2 int8 = {tier_int8 / tier_fp32:.2f}x its fp32, "
            f"{tier_int8 / lite0_fp32:.2f}x lite0 fp32"
        )
    if args.no_lda:
        return
    rng = np.random.default_rng(0)
    vectors = normalize(rng.normal(size=(6000, 1280)))
    labels = [f"c{i % 101}" for i in range(6000)]
    fits = []
    for _ in range(3):
        started = time.perf_counter()
        fit_projection(vectors, labels)
        fits.append(time.perf_counter() - started)
    print(f"LDA fit, 6,000 x 1,280, 101 categories: {statistics.median(fits):.2f} s")


def _precision(text: str) -> Precision:
    if text not in ("fp32", "int8"):
        raise SystemExit(f"unknown precision {text!r}")
    return "fp32" if text == "fp32" else "int8"


if __name__ == "__main__":
    main()
