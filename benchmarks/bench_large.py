"""Large photos against small ones: `lookalike index` images/s and peak memory per format.

    .venv/bin/python benchmarks/make_large_photos.py --out /tmp/large
    .venv/bin/python benchmarks/bench_large.py --photos /tmp/large [--precision fp32 int8]

Each kind of photo (folders of make_large_photos.py: small, jpeg, upscaled, png, webp) is
indexed by a fresh `lookalike index` process into a new collection, once per precision, all
in one run so that the ratios to the small-photo rate are fair on a noisy machine. A folder
is repeated (hard links under other names) up to ``--min-images`` so that every run lasts
a few seconds; the rate is the one `index` reports (decode + embed + store, model start-up
excluded), and the process wall time is given too.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
from pathlib import Path

from benchmarks.bench_index import run_index

KINDS = ("small", "jpeg", "upscaled", "png", "webp")


def repeated(source: Path, target: Path, min_images: int) -> int:
    """Hard-link the files of ``source`` into ``target`` until there are ``min_images``."""
    files = sorted(source.iterdir())
    target.mkdir(parents=True)
    count = 0
    while count < min_images:
        for f in files:
            os.link(f, target / f"{count:05}{f.suffix}")
            count += 1
    return count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--precision", nargs="+", default=["fp32", "int8"])
    parser.add_argument("--kinds", nargs="+", default=list(KINDS))
    parser.add_argument("--min-images", type=int, default=150)
    parser.add_argument("--small-images", type=int, default=1200)
    args = parser.parse_args()
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )
    results: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(dir=args.photos) as tmp:
        folders = {}
        for kind in args.kinds:
            wanted = args.small_images if kind == "small" else args.min_images
            folders[kind] = Path(tmp) / kind
            repeated(args.photos / kind, folders[kind], wanted)
        for precision in args.precision:
            for kind in args.kinds:
                db = Path(tmp) / f"{kind}-{precision}.db"
                summary, wall, peak, cpu = run_index(
                    folders[kind], db, "lite0", ("--precision", precision)
                )
                added = int(summary["added"])  # type: ignore[call-overload]
                figures = {
                    "images": added,
                    "images_per_s": float(summary["images_per_second"]),  # type: ignore[arg-type]
                    "images_per_s_process_wall": round(added / wall, 1),
                    "cpu_ms_per_image": round(1000 * cpu / added, 1),
                    "peak_rss_mb": round(peak),
                }
                results.setdefault(precision, {})[kind] = figures
                print(precision, kind, json.dumps(figures), flush=True)
    for by_kind in results.values():
        small = by_kind.get("small", {}).get("images_per_s")
        for figures in by_kind.values():
            if small:
                figures["ratio_to_small"] = round(figures["images_per_s"] / small, 3)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
