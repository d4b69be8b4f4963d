"""How high do the best scores go when the collection holds nothing like the query?

Caltech-101: a collection of ``--in`` categories (``--per`` images each); queries are other
images of those categories (something like them is there) and images of ``--out`` other
categories (nothing like them is there). Prints the top-1 cosine of both kinds of query, as
quantiles, and how many of each fall below candidate "weak match" cut-offs.

    python scripts/weak_match_scores.py ../shared/datasets/caltech101/101_ObjectCategories
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import numpy as np

from lookalike import Collection


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("root", type=Path)
    parser.add_argument("--in", dest="inside", type=int, default=40)
    parser.add_argument("--out", type=int, default=20)
    parser.add_argument("--per", type=int, default=12)
    parser.add_argument("--queries", type=int, default=3, help="queries per category")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folders = sorted(p for p in args.root.iterdir() if p.is_dir() and p.name != "BACKGROUND_Google")
    rng.shuffle(folders)
    inside, outside = folders[: args.inside], folders[args.inside : args.inside + args.out]
    indexed: list[Path] = []
    known_queries: list[tuple[Path, str]] = []
    for folder in inside:
        files = sorted(folder.glob("*.jpg"))
        rng.shuffle(files)
        indexed += files[: args.per]
        known_queries += [(f, folder.name) for f in files[args.per : args.per + args.queries]]
    novel = [f for folder in outside for f in sorted(folder.glob("*.jpg"))[: args.queries]]
    with tempfile.TemporaryDirectory() as tmp, Collection.open(Path(tmp) / "w.db") as coll:
        coll.add(indexed)
        known = coll.search_many([str(f) for f, _ in known_queries], k=1)
        unknown = coll.search_many([str(f) for f in novel], k=1)
    pairs = zip(known, known_queries, strict=True)
    right = np.array([r[0].score for r, (_, c) in pairs if f"/{c}/" in r[0].path])
    novel_top = np.array([r[0].score for r in unknown])
    print(f"collection: {len(indexed)} images of {len(inside)} categories")
    kinds = (("right top-1, known category", right), ("top-1, unknown category", novel_top))
    for name, scores in kinds:
        q = np.quantile(scores, [0.05, 0.25, 0.5, 0.75, 0.95])
        print(f"{name:<30} n={len(scores):3d}  5/25/50/75/95%: " + " ".join(f"{v:.3f}" for v in q))
    for cut in (0.3, 0.35, 0.4, 0.45, 0.5):
        print(
            f"cut {cut:.2f}: right top-1 below {np.mean(right < cut):6.1%}, "
            f"unknown top-1 below {np.mean(novel_top < cut):6.1%}"
        )


if __name__ == "__main__":
    main()
