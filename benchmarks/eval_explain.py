"""Does an explained match point at the object? Heat inside the true box of framed photos.

    .venv/bin/python benchmarks/make_scene_queries.py --caltech ../shared/datasets/caltech101 \\
        --out /tmp/scenes
    .venv/bin/python benchmarks/eval_explain.py --scenes /tmp/scenes

Each scene query (a Caltech-101 photo pasted into a ``BACKGROUND_Google`` photo at a known
box, see make_scene_queries.py) is explained against the photo it was made from
(:func:`lookalike.search.explain.explain_pair`, Lite0 int8, centred by the mean of a random
400 of the scene collection's 2,893 images), once with the whole photo's cells only and once
as search describes a query by default (the object cut from a photo on a plain background
too, the better view explained). Reported: the share of the query's positive heat inside
the pasted box, against the box's share of the photo (what heat spread evenly would give).
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from lookalike.encode.models import Embedder, builtin_spec, normalize
from lookalike.image.decode import load_image
from lookalike.index.pca import Pca
from lookalike.search.explain import explain_pair, heat_inside


def centring(encoder: Embedder, paths: list[str], sample: int) -> Pca:
    """The default codec (the mean subtracted) fitted on a random sample of ``paths``."""
    chosen = np.random.default_rng(0).choice(len(paths), min(sample, len(paths)), replace=False)
    images = [load_image(paths[i], min_side=encoder.decode_side) for i in chosen]
    vectors = normalize(np.concatenate([encoder.embed_images([image]) for image in images]))
    empty = np.zeros((0, vectors.shape[1]), np.float32)
    return Pca(vectors.mean(axis=0), empty, np.zeros(0, np.float32), len(vectors))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, required=True)
    parser.add_argument("--model", default="lite0")
    parser.add_argument("--mean-sample", type=int, default=400, help="images the mean is of")
    args = parser.parse_args()
    encoder = Embedder(builtin_spec(args.model))
    codec = centring(
        encoder, (args.scenes / "collection.txt").read_text().split(), args.mean_sample
    )
    with (args.scenes / "queries.csv").open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    shares: dict[str, list[float]] = {"whole photo": [], "as searched (border view)": []}
    areas, kinds = [], []
    for row in rows:
        query = load_image(row["query_path"], min_side=encoder.decode_side)
        result = load_image(row["source_path"], min_side=encoder.decode_side)
        x0, y0, x1, y1 = (float(row[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1"))
        areas.append((x1 - x0) * (y1 - y0))
        kinds.append(row["kind"])
        for label, view in zip(shares, (False, True), strict=True):
            e = explain_pair(encoder, codec, query, result, object_view=view)
            share = heat_inside(e.query_heat, e.query_region, query.size, (x0, y0, x1, y1))
            shares[label].append(share)
    area = np.array(areas)
    print(f"{len(rows)} scene queries; the box covers {area.mean():.1%} of a photo on average\n")
    print("| query described | heat in the box: mean | median | share > 50 % | mean by kind |")
    print("|---|---:|---:|---:|---|")
    kind_of = np.array(kinds)
    for label, values in shares.items():
        v = np.array(values)
        by_kind = ", ".join(f"{k} {v[kind_of == k].mean():.1%}" for k in sorted(set(kinds)))
        figures = f"{v.mean():.1%} | {np.median(v):.1%} | {(v > 0.5).mean():.1%}"
        print(f"| {label} | {figures} | {by_kind} |")
    even = f"{area.mean():.1%} | {np.median(area):.1%} | {(area > 0.5).mean():.1%}"
    print(f"| heat spread evenly (the box's area) | {even} | |")


if __name__ == "__main__":
    main()
