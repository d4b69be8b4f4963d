"""Object localization where it matters: photos of an object in a scene, searched against a
collection of clean object images.

    .venv/bin/python benchmarks/make_scene_queries.py --caltech ../shared/datasets/caltech101 \\
        --out /tmp/scenes
    .venv/bin/python benchmarks/eval_localization.py --scenes /tmp/scenes [--configs ...]

Collection: Caltech-101's test split without BACKGROUND_Google (2,893 clean object photos).
Queries: 303 scene photos, each made from one collection image pasted (scaled, rotated,
soft-edged, or seen through a wider crop) onto a BACKGROUND_Google photo.

Reported per configuration (localization applied to collection and queries alike):
* instance top-1: the query's own source image ranked first; instance mAP: 1 / its rank,
  averaged (one relevant item per query);
* category precision@10 and mAP: relevant = same Caltech category;
* box IoU: the localized box of the query against the true pasted box (mask / crop only).

A configuration's ``loc`` applies to collection and queries alike; ``qloc=crop`` (or mask)
localizes the queries only, against a collection described without localization.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from lookalike import Collection
from lookalike.analysis.evaluate import EvalConfig, average_precisions
from lookalike.encode.models import Embedder
from lookalike.image.decode import load_image


def iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def evaluate(
    config: EvalConfig, scenes: Path, cache: Path, query_localize: str | None = None
) -> dict[str, object]:
    collection_paths = (scenes / "collection.txt").read_text().split()
    with (scenes / "collection_labels.csv").open() as f:
        category = {row["path"]: row["class_name"] for row in csv.DictReader(f)}
    with (scenes / "queries.csv").open() as f:
        queries = list(csv.DictReader(f))
    spec = config.model_spec()
    db = cache / f"scenes-{config.model}-{config.precision}-{config.pooling}-{config.localize}.db"
    with Collection.open(db, model=spec) as collection:
        started = time.perf_counter()
        report = collection.add(collection_paths)
        index_rate = report.embedded / (time.perf_counter() - started) if report.embedded else None
        ids, vectors = collection.store.load_vectors()
        paths = collection.store.paths(ids)
        id_paths = [paths[int(i)] for i in ids]
        embedder = collection.embedder
        if query_localize is not None:
            embedder = Embedder(spec.with_options(localize=query_localize))  # type: ignore[arg-type]
        images = [load_image(q["query_path"], min_side=embedder.decode_side) for q in queries]
        started = time.perf_counter()
        described = [embedder.describe(images[i : i + 16]) for i in range(0, len(images), 16)]
        query_rate = len(images) / (time.perf_counter() - started)
    query_vectors = np.concatenate([d.vectors for d in described])
    boxes = [b for d in described for b in d.boxes]
    scores = query_vectors @ vectors.T
    order = np.argsort(-scores, axis=1)
    source_pos = {p: i for i, p in enumerate(id_paths)}
    codes = {c: i for i, c in enumerate(sorted(set(category.values())))}
    db_codes = np.array([codes[category[p]] for p in id_paths])
    q_codes = np.array([codes[q["class_name"]] for q in queries])
    ranks = np.array(
        [
            int(np.flatnonzero(order[i] == source_pos[q["source_path"]])[0]) + 1
            for i, q in enumerate(queries)
        ]
    )
    relevant = db_codes[order] == q_codes[:, None]
    positives = np.bincount(db_codes, minlength=len(codes))[q_codes]
    ious = [
        iou(box, tuple(float(q[k]) for k in ("box_x0", "box_y0", "box_x1", "box_y1")))
        for box, q in zip(boxes, queries, strict=True)
        if box is not None
    ]
    return {
        "config": config.name + (f",qloc={query_localize}" if query_localize else ""),
        "instance_top1": round(float((ranks == 1).mean()), 4),
        "instance_mAP": round(float((1.0 / ranks).mean()), 4),
        "category_precision@10": round(float(relevant[:, :10].mean()), 4),
        "category_mAP": round(float(average_precisions(relevant, positives).mean()), 4),
        "box_mean_iou": round(float(np.mean(ious)), 3) if ious else None,
        "box_iou>=0.5": round(float(np.mean(np.array(ious) >= 0.5)), 3) if ious else None,
        "index_images_per_s": round(index_rate, 1) if index_rate else None,
        "query_images_per_s": round(query_rate, 1),
        "queries": len(queries),
        "collection": len(ids),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=Path, required=True)
    parser.add_argument("--cache-dir", type=Path, default=None)
    parser.add_argument(
        "--configs",
        nargs="+",
        default=[
            "model=lite0",
            "model=lite0,loc=mask",
            "model=lite0,loc=crop",
            "model=lite0,pool=gem,loc=mask",
            "model=lite0,pool=gem,loc=crop",
        ],
    )
    args = parser.parse_args()
    print(f"machine: {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory() as tmp:
        cache = args.cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        for text in args.configs:
            settings = dict(part.split("=", 1) for part in text.split(","))
            query_localize = settings.pop("qloc", None)
            config = EvalConfig.parse(",".join(f"{k}={v}" for k, v in settings.items()))
            result = evaluate(config, args.scenes, cache, query_localize)
            print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
