"""The plots of the "start here" pages, drawn from the figures BENCHMARKS.md and
docs/EVALUATION.md already report: it reads their tables, so a plot cannot say what the
record does not (rerun it after a table changes).

    .venv/bin/python benchmarks/plot_docs.py            # writes docs/plots/*.png

- recall-speed.png: recall@10 against the search step's time, for the approximate indexes
  compared at 100,000 images ("Which index") and for FAISS HNSW against PostgreSQL + pgvector
  at 1,000,000 (the quiet run of "Final main");
- quality-by-collection.png: the "Side by side" table of docs/EVALUATION.md, one panel for
  collections of categories (mAP), one for finding one item (instance top-1);
- cost-per-model.png: embedding time per image of Lite0 and the quality tier in fp32 and
  int8, and indexing rate per precision (the quiet run of "Final main").

Needs the `plots` extra (matplotlib).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "BENCHMARKS.md"
EVALUATION = ROOT / "docs" / "EVALUATION.md"
NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")


def table_after(text: str, marker: str) -> list[list[str]]:
    """The cells of the first Markdown table after the first line that starts with
    ``marker`` (header row first, the |---| row left out; emphasis and code marks removed)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(marker))
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith("|"):
            cells = [
                c.strip().replace("**", "").replace("`", "") for c in line.strip("|").split("|")
            ]
            if not all(set(c) <= set("-: ") for c in cells):
                rows.append(cells)
        elif rows:
            break
    if not rows:
        raise ValueError(f"no table after {marker!r}")
    return rows


def numbers(cell: str) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(cell)]


def row_starting(rows: list[list[str]], start: str) -> list[str]:
    return next(r for r in rows if r[0].startswith(start))


@dataclass(frozen=True)
class Point:
    label: str
    recall: float
    ms: float


def index_choices(benchmarks: str) -> list[Point]:
    """'Which index (100,000 images ...)': recall@10 and search step per index."""
    rows = table_after(benchmarks, "### Which index")
    return [Point(r[0], numbers(r[1])[0], numbers(r[2])[0]) for r in rows[1:]]


def faiss_million(benchmarks: str) -> list[Point]:
    """The quiet 1,000,000-image run: HNSW efSearch 128 (default) and 256 (efSearch 64 was
    measured with the index pushed out of the page cache: left out)."""
    rows = table_after(benchmarks, "| `bench_scale.py measure` | figure |")
    recall = numbers(row_starting(rows, "recall@10 against the exact scan")[1])  # 64, 128, 256
    p50_128 = numbers(row_starting(rows, "search step p50 / p95, efSearch 128")[1])[0]
    p50_256 = numbers(row_starting(rows, "search step p50 / p95, efSearch 256")[1])[0]
    return [
        Point("efSearch 128 (default)", recall[1], p50_128),
        Point("efSearch 256", recall[2], p50_256),
    ]


def pgvector_million(benchmarks: str) -> list[Point]:
    """The quiet 1,000,000-row pgvector run: hnsw.ef_search against p50 and recall@10."""
    header = "| hnsw.ef_search | p50 | p95 | recall@10 |"
    rows = table_after(benchmarks, "**PostgreSQL + pgvector, 1,000,000")
    if "| " + " | ".join(rows[0]) + " |" != header:
        raise ValueError(f"the pgvector table changed: {rows[0]}")
    return [
        Point(f"ef_search {int(numbers(r[0])[0])}", numbers(r[3])[0], numbers(r[1])[0])
        for r in rows[1:]
    ]


def side_by_side(evaluation: str) -> tuple[list[str], dict[str, list[float | None]]]:
    """The 'Side by side' table: its configurations, and per benchmark row the first figure
    of each (None where the table has none)."""
    rows = table_after(evaluation, "### Side by side")
    configs = rows[0][2:]
    figures: dict[str, list[float | None]] = {}
    for row in rows[1:]:
        cells = [numbers(c) if not c.startswith("(") else [] for c in row[2:]]
        figures[row[0]] = [c[0] if c else None for c in cells]
    return configs, figures


def tier_cost(benchmarks: str) -> dict[str, tuple[float, float]]:
    """precision -> (Lite0, Lite0+Lite2) ms per image, from the quiet run's bench_tier."""
    rows = table_after(benchmarks, "**Quality tier** (`bench_tier.py`")
    return {r[0].split()[0]: (numbers(r[1])[0], numbers(r[2])[0]) for r in rows[1:]}


def indexing_rate(benchmarks: str) -> dict[str, float]:
    """precision -> `lookalike index` images/s (process wall), Caltech-101, quiet run."""
    rows = table_after(benchmarks, "**Indexing Caltech-101, 9,144 images**")
    return {r[0].split()[0]: numbers(r[2])[0] for r in rows[1:]}


def warm_query(benchmarks: str) -> dict[str, float]:
    """precision -> warm whole query p50 (ms), 10,000 images, quiet run."""
    rows = table_after(benchmarks, "**Queries, 10,000 images**")
    return {r[0].split()[0]: numbers(r[1])[0] for r in rows[1:]}


CATEGORY_ROWS = (
    "Caltech-101, leave-one-out",
    "Caltech-101 split (held out)",
    "search-by-image, leave-one-out",
    "search-by-image, held out (4 folds)",
)
INSTANCE_ROWS = ("scenes", "wall: wall photos", "wall: clean photos", "transformed copies")


def plot_recall_speed(benchmarks: str, out: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for point in index_choices(benchmarks):
        default = "(default)" in point.label
        left.scatter(point.ms, point.recall, color="C3" if default else "C0", zorder=3)
        left.annotate(
            point.label,
            (point.ms, point.recall),
            fontsize=8,
            xytext=(5, -3),
            textcoords="offset points",
        )
    left.set(
        title="Which index: 100,000 images (FAISS, loaded machine)",
        xlabel="search step (ms, one run)",
        ylabel="recall@10 against the exact scan",
    )
    left.set_xlim(0, max(p.ms for p in index_choices(benchmarks)) * 1.9)
    for name, points, colour in (
        ("FAISS HNSW32 (SQLite collection)", faiss_million(benchmarks), "C3"),
        ("PostgreSQL + pgvector HNSW", pgvector_million(benchmarks), "C2"),
    ):
        right.plot(
            [p.ms for p in points], [p.recall for p in points], "o-", color=colour, label=name
        )
        for p in points:
            right.annotate(
                p.label, (p.ms, p.recall), fontsize=8, xytext=(5, -10), textcoords="offset points"
            )
    right.set(
        title="1,000,000 images (quiet machine)",
        xlabel="p50 (ms, log scale): FAISS search step; pgvector query, one client",
        ylabel="recall@10 against exact search",
        xscale="log",
    )
    right.legend(fontsize=8, loc="center left")
    for axis in (left, right):
        axis.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_quality(evaluation: str, out: Path) -> None:
    import matplotlib.pyplot as plt

    configs, figures = side_by_side(evaluation)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.6), sharey=True)
    panels = (
        ("Collections of categories: mAP (same category = relevant)", CATEGORY_ROWS),
        ("Finding one item: instance top-1 (its source image first)", INSTANCE_ROWS),
    )
    width = 0.8 / len(configs)
    for axis, (title, names) in zip(axes, panels, strict=True):
        for c, config in enumerate(configs):
            xs = [i + (c - (len(configs) - 1) / 2) * width for i in range(len(names))]
            values = [figures[name][c] for name in names]
            shown = [(x, v) for x, v in zip(xs, values, strict=True) if v is not None]
            axis.bar(
                [x for x, _ in shown], [v for _, v in shown], width, label=config, color=f"C{c}"
            )
        axis.set_xticks(
            range(len(names)),
            [n.replace(", ", ",\n").replace(": ", ":\n") for n in names],
            fontsize=8,
        )
        axis.set_title(title, fontsize=10)
        axis.set_ylim(0, 1.05)
        axis.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(configs), fontsize=8)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(out, dpi=110)
    plt.close(fig)


def plot_cost(benchmarks: str, out: Path) -> None:
    import matplotlib.pyplot as plt

    tier = tier_cost(benchmarks)
    rate = indexing_rate(benchmarks)
    query = warm_query(benchmarks)
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(12, 3.8))
    precisions = list(tier)
    for m, model in enumerate(("Lite0", "Lite0+Lite2 (quality tier)")):
        xs = [i + (m - 0.5) * 0.38 for i in range(len(precisions))]
        left.bar(xs, [tier[p][m] for p in precisions], 0.38, label=model, color=f"C{m}")
    left.set_xticks(range(len(precisions)), precisions)
    left.set(title="Embedding time per image (one core)", ylabel="ms per image")
    left.legend(fontsize=8)
    middle.bar(list(rate), list(rate.values()), color="C2")
    middle.set(title="lookalike index, Caltech-101 (2 cores)", ylabel="images per second")
    right.bar(list(query), list(query.values()), color="C4")
    right.set(title="Warm query, 10,000 images", ylabel="p50 (ms)")
    for axis in (left, middle, right):
        axis.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "plots")
    args = parser.parse_args()
    import matplotlib

    matplotlib.use("Agg")
    args.out.mkdir(parents=True, exist_ok=True)
    benchmarks, evaluation = BENCHMARKS.read_text(), EVALUATION.read_text()
    plot_recall_speed(benchmarks, args.out / "recall-speed.png")
    plot_quality(evaluation, args.out / "quality-by-collection.png")
    plot_cost(benchmarks, args.out / "cost-per-model.png")
    print(f"wrote 3 plots to {args.out}")


if __name__ == "__main__":
    main()
