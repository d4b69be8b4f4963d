"""Pictures of results, drawn with Pillow alone: a query and its top-k in a grid, and one
contact sheet of thumbnails per cluster.

Images are decoded with :func:`lookalike.image.decode.load_image` at thumbnail size (JPEG draft
mode decodes at 1/2, 1/4 or 1/8 scale), so a sheet of 40 thumbnails takes a fraction of a
second. A file that cannot be read any more becomes a grey tile that says so.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from lookalike.analysis.clustering import NOISE, centroid_order
from lookalike.image.decode import DecodeError, load_image
from lookalike.search.engine import SearchResult
from lookalike.store.records import ImageRecord

if TYPE_CHECKING:
    from lookalike.collection import Collection

log = logging.getLogger(__name__)

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont

BACKGROUND = (255, 255, 255)
TILE_BACKGROUND = (236, 236, 236)
TEXT = (20, 20, 20)
MUTED = (100, 100, 100)
QUERY_FRAME = (40, 110, 220)
BOX = (230, 30, 30)
HEADER = (245, 245, 245)

#: Thumbnails per contact sheet, at most (the most typical members of the cluster).
SHEET_PER_CLUSTER = 40


def font(size: int) -> Font:
    """Pillow's bundled font at ``size`` px (a small bitmap font if FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (ImportError, AttributeError, TypeError):  # Pillow built without FreeType
        return ImageFont.load_default()


def thumbnail(source: str | os.PathLike[str] | bytes | Image.Image, side: int) -> Image.Image:
    """``source`` scaled to fit a ``side`` x ``side`` square; a grey tile if unreadable."""
    try:
        image = source if isinstance(source, Image.Image) else load_image(source, min_side=side)
    except DecodeError as exc:
        log.warning("cannot draw %s: %s", source, exc.reason)
        return _unreadable(side, exc.reason)
    image = image.convert("RGB")
    image.thumbnail((side, side), Image.Resampling.LANCZOS, reducing_gap=2.0)
    return image


def _unreadable(side: int, reason: str) -> Image.Image:
    tile = Image.new("RGB", (side, side // 2), TILE_BACKGROUND)
    draw = ImageDraw.Draw(tile)
    draw.text((6, 6), _fit("unreadable: " + reason, font(12), side - 12), fill=MUTED, font=font(12))
    return tile


def _fit(text: str, face: Font, width: int) -> str:
    """``text`` cut with an ellipsis to fit ``width`` px."""
    if face.getlength(text) <= width:
        return text
    while text and face.getlength(text + "…") > width:
        text = text[:-1]
    return text + "…"


def _paste_centred(
    canvas: Image.Image, image: Image.Image, left: int, top: int, side: int
) -> tuple[int, int]:
    x = left + (side - image.width) // 2
    y = top + (side - image.height) // 2
    canvas.paste(image, (x, y))
    return x, y


# --- query and results -------------------------------------------------------------------


def plot_results(
    query_image: str | os.PathLike[str] | bytes | Image.Image,
    results: Sequence[SearchResult],
    out_path: str | os.PathLike[str],
    *,
    title: str | None = None,
    tile: int = 224,
    columns: int = 6,
) -> Path:
    """Draw the query (framed in blue) then its results in rank order, ``columns`` per row.

    Under each result: rank and cosine score, its category and cluster when it has them;
    its object box, when localization found one, is drawn in red. Saved in the format the
    name of ``out_path`` says (PNG, JPEG, ...); returns the path.
    """
    caption_face, title_face = font(max(12, tile // 14)), font(max(14, tile // 11))
    line = round(caption_face.size * 1.3) if hasattr(caption_face, "size") else 16
    pad = 8
    caption_height = 3 * line + pad
    cell_w, cell_h = tile + 2 * pad, tile + caption_height + 2 * pad
    count = len(results) + 1
    columns = max(1, min(columns, count))
    rows = math.ceil(count / columns)
    header = round(title_face.size * 1.8) if title and hasattr(title_face, "size") else 0
    header = header or (28 if title else 0)
    canvas = Image.new("RGB", (columns * cell_w, header + rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.rectangle((0, 0, canvas.width, header), fill=HEADER)
        draw.text(
            (pad, header // 2),
            _fit(title, title_face, canvas.width - 2 * pad),
            fill=TEXT,
            font=title_face,
            anchor="lm",
        )

    for position in range(count):
        left = (position % columns) * cell_w + pad
        top = header + (position // columns) * cell_h + pad
        draw.rectangle((left, top, left + tile - 1, top + tile - 1), fill=TILE_BACKGROUND)
        if position == 0:
            image = thumbnail(query_image, tile)
            _paste_centred(canvas, image, left, top, tile)
            draw.rectangle(
                (left - 3, top - 3, left + tile + 2, top + tile + 2), outline=QUERY_FRAME, width=3
            )
            name = (
                Path(os.fspath(query_image)).name
                if isinstance(query_image, (str, os.PathLike))
                else ""
            )
            lines = [("query", TEXT), (name, MUTED)]
        else:
            hit = results[position - 1]
            image = thumbnail(hit.path, tile)
            x, y = _paste_centred(canvas, image, left, top, tile)
            if hit.box is not None:
                _draw_box(draw, hit.box, x, y, image.size)
            lines = [(f"#{position}  {hit.score:.3f}", TEXT)]
            lines.append((hit.category or "", TEXT))
            lines.append(
                (
                    f"cluster {hit.cluster}"
                    if hit.cluster is not None and hit.cluster != NOISE
                    else ("noise" if hit.cluster == NOISE else ""),
                    MUTED,
                )
            )
        for n, (text, colour) in enumerate(lines):
            if text:
                draw.text(
                    (left, top + tile + pad // 2 + n * line),
                    _fit(text, caption_face, tile),
                    fill=colour,
                    font=caption_face,
                )

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out)
    log.info("wrote %s (%d x %d)", out, canvas.width, canvas.height)
    return out


def _draw_box(
    draw: ImageDraw.ImageDraw,
    box: tuple[float, float, float, float],
    x: int,
    y: int,
    size: tuple[int, int],
) -> None:
    """The object box (fractions of the image) on the thumbnail pasted at (x, y)."""
    width, height = size
    x0, y0, x1, y1 = (min(max(v, 0.0), 1.0) for v in box)
    draw.rectangle(
        (
            x + round(x0 * width),
            y + round(y0 * height),
            x + max(round(x1 * width) - 1, 0),
            y + max(round(y1 * height) - 1, 0),
        ),
        outline=BOX,
        width=max(2, min(width, height) // 70),
    )


def numbered_path(out_path: str | os.PathLike[str], number: int) -> Path:
    """``out.png`` for the first query (``number`` 1), ``out-2.png`` for the second, ..."""
    path = Path(out_path)
    return path if number <= 1 else path.with_name(f"{path.stem}-{number}{path.suffix}")


# --- contact sheets ------------------------------------------------------------------------


def contact_sheet(
    sources: Sequence[str | os.PathLike[str] | Image.Image],
    title: str,
    *,
    thumb: int = 128,
    columns: int = 8,
) -> Image.Image:
    """A grid of thumbnails under a title bar."""
    title_face = font(max(14, thumb // 7))
    pad = 4
    columns = max(1, min(columns, len(sources) or 1))
    rows = max(1, math.ceil(len(sources) / columns))
    header = round(title_face.size * 2) if hasattr(title_face, "size") else 28
    sheet = Image.new(
        "RGB", (columns * (thumb + pad) + pad, header + rows * (thumb + pad) + pad), BACKGROUND
    )
    draw = ImageDraw.Draw(sheet)
    draw.rectangle((0, 0, sheet.width, header), fill=HEADER)
    draw.text(
        (pad * 2, header // 2),
        _fit(title, title_face, sheet.width - 4 * pad),
        fill=TEXT,
        font=title_face,
        anchor="lm",
    )
    for n, source in enumerate(sources):
        left = pad + (n % columns) * (thumb + pad)
        top = header + pad + (n // columns) * (thumb + pad)
        draw.rectangle((left, top, left + thumb - 1, top + thumb - 1), fill=TILE_BACKGROUND)
        _paste_centred(sheet, thumbnail(source, thumb), left, top, thumb)
    return sheet


def write_contact_sheets(
    collection: Collection,
    out_dir: str | os.PathLike[str],
    *,
    per_cluster: int = SHEET_PER_CLUSTER,
    thumb: int = 128,
    columns: int = 8,
) -> list[Path]:
    """One JPEG per cluster of the last clustering: ``cluster-007.jpg`` (``noise.jpg`` for -1).

    A sheet shows the cluster's ``per_cluster`` most typical images (nearest to its mean
    vector) and says its size and, when images have categories, the commonest ones.
    """
    ids, vectors = collection.store.load_vectors()
    records = collection.store.records(ids.tolist())
    labels = np.array([_cluster_or_none(records[int(i)].cluster) for i in ids], dtype=np.int64)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for cluster in sorted(set(labels.tolist()) - {_UNCLUSTERED}):
        if cluster == NOISE:
            members = np.flatnonzero(labels == NOISE)
            name, what = "noise.jpg", "noise"
        else:
            members = centroid_order(vectors, labels, cluster)
            name, what = f"cluster-{cluster:03d}.jpg", f"cluster {cluster}"
        member_records = [records[int(ids[m])] for m in members]
        title = f"{what}: {len(members)} images{_category_summary(member_records)}"
        sheet = contact_sheet(
            [r.path for r in member_records[:per_cluster]], title, thumb=thumb, columns=columns
        )
        sheet.save(out / name, quality=85)
        written.append(out / name)
    log.info("wrote %d contact sheets to %s", len(written), out)
    return written


_UNCLUSTERED = -2  # images not clustered yet (indexed after the last clustering)


def _cluster_or_none(cluster: int | None) -> int:
    return _UNCLUSTERED if cluster is None else cluster


def _category_summary(records: Sequence[ImageRecord]) -> str:
    known = [r.category for r in records if r.category]
    if not known:
        return ""
    names, counts = np.unique(np.array(known), return_counts=True)
    top = np.argsort(-counts, kind="stable")[:3]
    return " (" + ", ".join(f"{names[i]} {counts[i] / len(records):.0%}" for i in top) + ")"
