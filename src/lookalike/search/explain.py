"""Explain a match: which cells of each image's feature map made the score.

The score of a result is the cosine of the query and the result in the collection's common
space (:func:`lookalike.search.engine.common_scores`). For a built-in model it is an exact
sum over the cells of either image's feature map, plus one term no cell carries:

* the descriptor of an image is ``v = g / |g|`` with ``g_c = (mean_i x_ic^p)^(1/p)`` (GeM,
  p = 3; average pooling is p = 1), over the cells ``i`` it pools (all, or the object's with
  ``localize="mask"``). Cell ``i``'s share of channel ``c`` is
  ``w_ic = x_ic^p / sum_j x_jc^p``, so ``v_c = sum_i v_c w_ic``: the descriptor is a sum of
  per-cell parts ``v^(i) = v * w_i``;
* the codec maps ``v`` to ``u = L(v - mu) / |L(v - mu)|`` (``mu``: the collection's mean,
  ``L``: identity or a PCA projection), so with the result's ``u_r``,
  ``score = u_q . u_r = sum_i L(v_q^(i)) . u_r / |L(v_q - mu)|  -  L(mu) . u_r / |L(v_q - mu)|``.

The first sum is the query's heat map (one value per cell, positive where the cell's
features point the way the result's do); the last term, the ``rest``, is the collection
mean's part (zero without a codec). Swapping the two images gives the result's map. Only
the positive part of a map is drawn.

The images are described afresh from their files, at the model's base input size, as the
index describes them; the explained score can differ from the stored one by a little where
the file was decoded differently (JPEG draft mode).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from lookalike.encode.base import ImageEncoder
from lookalike.encode.features import GEM_P, cell_masks, object_masks
from lookalike.encode.models import Embedder
from lookalike.errors import NotFound, Unavailable
from lookalike.image.decode import DecodeError, load_image
from lookalike.image.localization import crop_pixels, find_object
from lookalike.image.preprocess import crop_region
from lookalike.index.base import IdentityCodec, VectorCodec
from lookalike.index.pca import Pca
from lookalike.search.engine import ImageSource, Region, query_image
from lookalike.store.base import MetadataStore
from lookalike.types import Box

#: Side of each image in the drawn explanation (pixels, longer side).
PANEL_SIDE = 384
_EPS = 1e-6


@dataclass(frozen=True)
class ImageCells:
    """One image's descriptor, split by cell: ``parts[i]`` (D,) adds up to ``vector``."""

    vector: np.ndarray  # (D,) unit descriptor
    parts: np.ndarray  # (h*w, D)
    grid: tuple[int, int]  # (h, w)
    region: Box  # part of the image the feature map covers (fractions)


@dataclass(frozen=True)
class Explanation:
    """Why two images are alike: per-cell contributions to their cosine.

    ``query_heat`` / ``result_heat`` (h, w): each cell's part of ``score``;
    ``heat.sum() + rest == score`` for either image. ``query_region`` / ``result_region``:
    the part of each image (fractions x0, y0, x1, y1) the maps cover (the model's square
    crop). ``image``: both images side by side with the positive heat drawn over them."""

    score: float
    query_heat: np.ndarray
    result_heat: np.ndarray
    query_rest: float
    result_rest: float
    query_region: Box
    result_region: Box
    image: Image.Image

    def png(self) -> bytes:
        out = io.BytesIO()
        self.image.save(out, format="PNG")
        return out.getvalue()


def cell_parts(encoder: Embedder, image: Image.Image) -> ImageCells:
    """The descriptor of ``image`` as the sum of its feature-map cells' parts."""
    spec = encoder.spec
    if spec.scales or spec.localize not in ("none", "mask"):
        raise Unavailable(
            "explaining needs a collection described at one scale without cropping "
            f"(this one: scales {spec.all_scales}, localize {spec.localize!r})"
        )
    (fmap,) = encoder.feature_maps([image], spec.input_size)
    channels, h, w = fmap.shape
    cells = np.ones((h, w), dtype=bool)
    if spec.localize == "mask":
        cells = cell_masks(object_masks(fmap[None]), h, w)[0]
    flat = fmap.reshape(channels, h * w).astype(np.float64)
    values = np.maximum(flat, _EPS) ** GEM_P if spec.pooling == "gem" else flat
    values = values * cells.reshape(-1)
    totals = values.sum(axis=1, keepdims=True)
    shares = np.divide(values, totals, out=np.zeros_like(values), where=np.abs(totals) > 0)
    pooled = totals[:, 0] / max(int(cells.sum()), 1)
    if spec.pooling == "gem":
        pooled = np.power(np.maximum(pooled, 0.0), 1.0 / GEM_P)
    vector = pooled / max(float(np.linalg.norm(pooled)), 1e-12)
    region = crop_region(image.width, image.height, spec.input_size, spec.resize)
    return ImageCells(vector, (shares * vector[:, None]).T, (h, w), region)


def _linear(codec: VectorCodec) -> tuple[np.ndarray, np.ndarray | None]:
    """The codec as ``(mu, M)`` with ``u = normalize((v - mu) @ M)`` (M None: identity)."""
    if isinstance(codec, IdentityCodec):
        return np.zeros(0), None
    if isinstance(codec, Pca):
        mean = codec.mean.astype(np.float64)
        if not codec.dims:
            return mean, None
        return mean, (codec.components.T * codec.scale).astype(np.float64)
    raise Unavailable(f"explaining knows mean-centring and PCA codecs, not {type(codec).__name__}")


def _encode(vector: np.ndarray, mean: np.ndarray, matrix: np.ndarray | None) -> np.ndarray:
    centred = vector - mean if len(mean) else vector
    return centred if matrix is None else centred @ matrix


def contributions(
    first: ImageCells, second: ImageCells, codec: VectorCodec
) -> tuple[np.ndarray, float, float]:
    """(per-cell heat of ``first`` (h, w), its rest, the cosine): see the module's sums."""
    mean, matrix = _linear(codec)
    first_code = _encode(first.vector, mean, matrix)
    second_code = _encode(second.vector, mean, matrix)
    norm = max(float(np.linalg.norm(first_code)), 1e-12)
    direction = second_code / max(float(np.linalg.norm(second_code)), 1e-12)
    # L^T u: the result's direction taken back to descriptor space
    back = direction if matrix is None else matrix @ direction
    heat = first.parts @ back / norm
    rest = -float(mean @ back) / norm if len(mean) else 0.0
    score = float(first_code @ direction) / norm
    return heat.reshape(first.grid), rest, score


def _inside(region: Box, frame: Box) -> Box:
    """``region`` (fractions of a crop) as fractions of the image ``frame`` was cut from."""
    fx0, fy0, fx1, fy1 = frame
    x0, y0, x1, y1 = region
    w, h = fx1 - fx0, fy1 - fy0
    return (fx0 + x0 * w, fy0 + y0 * h, fx0 + x1 * w, fy0 + y1 * h)


def explain_pair(
    encoder: Embedder,
    codec: VectorCodec,
    query: Image.Image,
    result: Image.Image,
    *,
    object_view: bool = False,
    stacked: bool = False,
) -> Explanation:
    """Explain the score of ``result`` for ``query`` (both decoded RGB images); ``stacked``:
    drawn one above the other (see :func:`draw`).

    ``object_view``: as search does with border localization, the object cut from a query
    photo on a plain background is described too, and the better of the two views is
    explained (its cells drawn where they lie in the whole photo)."""
    result_cells = cell_parts(encoder, result)
    views: list[tuple[ImageCells, Box | None]] = [(cell_parts(encoder, query), None)]
    found = find_object(query) if object_view else None
    pixels = None if found is None else crop_pixels(query.size, found)
    if pixels is not None:
        left, top, right, bottom = pixels
        cut = (left / query.width, top / query.height, right / query.width, bottom / query.height)
        views.append((cell_parts(encoder, query.crop(pixels)), cut))
    explained = [
        (contributions(cells, result_cells, codec), cells, frame) for cells, frame in views
    ]
    (query_heat, query_rest, score), query_cells, view = max(explained, key=lambda e: e[0][2])
    query_region = query_cells.region if view is None else _inside(query_cells.region, view)
    result_heat, result_rest, _ = contributions(result_cells, query_cells, codec)
    picture = draw(
        query,
        query_heat,
        query_region,
        result,
        result_heat,
        result_cells.region,
        score,
        stacked=stacked,
    )
    return Explanation(
        score,
        query_heat,
        result_heat,
        query_rest,
        result_rest,
        query_region,
        result_cells.region,
        picture,
    )


def pixel_heat(heat: np.ndarray, region: Box, size: tuple[int, int]) -> np.ndarray:
    """A cell map spread over an image of ``size`` (width, height): each cell's value over
    the pixels it covers (divided among them, so the sum is kept), zero outside ``region``.
    """
    width, height = size
    out = np.zeros((height, width), dtype=np.float64)
    x0, y0, x1, y1 = region
    left, top = round(x0 * width), round(y0 * height)
    right, bottom = max(left + 1, round(x1 * width)), max(top + 1, round(y1 * height))
    h, w = heat.shape
    rows = np.minimum(((np.arange(top, bottom) - top) * h) // (bottom - top), h - 1)
    cols = np.minimum(((np.arange(left, right) - left) * w) // (right - left), w - 1)
    counts = np.bincount(rows, minlength=h)[:, None] * np.bincount(cols, minlength=w)[None, :]
    per_pixel = heat / np.maximum(counts, 1)
    out[top:bottom, left:right] = per_pixel[rows][:, cols]
    return out


def heat_inside(heat: np.ndarray, region: Box, size: tuple[int, int], box: Box) -> float:
    """The fraction of the positive heat that falls inside ``box`` (fractions) of the image."""
    spread = np.maximum(pixel_heat(heat, region, size), 0.0)
    total = float(spread.sum())
    if total <= 0:
        return 0.0
    width, height = size
    x0, y0, x1, y1 = box
    inside = spread[round(y0 * height) : round(y1 * height), round(x0 * width) : round(x1 * width)]
    return float(inside.sum()) / total


def _overlay(image: Image.Image, heat: np.ndarray, region: Box) -> Image.Image:
    """``image`` shrunk to the panel size, darkened where no positive heat is and coloured
    (black-red-yellow-white) by it, smoothed over the cells it covers."""
    scale = PANEL_SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    base = np.asarray(image.convert("RGB").resize(size, Image.Resampling.BILINEAR), np.float32)
    positive = np.maximum(heat, 0.0)
    peak = float(positive.max())
    level = np.zeros(base.shape[:2], dtype=np.float32)
    if peak > 0:
        x0, y0, x1, y1 = region
        left, top = round(x0 * size[0]), round(y0 * size[1])
        right, bottom = max(left + 1, round(x1 * size[0])), max(top + 1, round(y1 * size[1]))
        cells = Image.fromarray((positive / peak * 255).astype(np.uint8))
        smooth = cells.resize((right - left, bottom - top), Image.Resampling.BILINEAR)
        level[top:bottom, left:right] = np.asarray(smooth, np.float32) / 255
    hot = np.stack(
        [np.clip(3 * level, 0, 1), np.clip(3 * level - 1, 0, 1), np.clip(3 * level - 2, 0, 1)],
        axis=-1,
    )
    alpha = (0.25 + 0.5 * level)[..., None]
    mixed = base * (1 - alpha) * (0.45 + 0.55 * level[..., None]) + hot * 255 * alpha
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))


def draw(
    query: Image.Image,
    query_heat: np.ndarray,
    query_region: Box,
    result: Image.Image,
    result_heat: np.ndarray,
    result_region: Box,
    score: float,
    *,
    stacked: bool = False,
) -> Image.Image:
    """Query and result side by side (``stacked``: one above the other, for narrow screens),
    each with its heat over it and a caption below, the score in the result's."""
    panels = [
        _captioned(_overlay(query, query_heat, query_region), "query", None),
        _captioned(_overlay(result, result_heat, result_region), "result", f"score {score:.3f}"),
    ]
    gap = 8
    if stacked:
        size = (max(p.width for p in panels), sum(p.height for p in panels) + gap)
        offsets = [(0, 0), (0, panels[0].height + gap)]
    else:
        size = (sum(p.width for p in panels) + gap, max(p.height for p in panels))
        offsets = [(0, 0), (panels[0].width + gap, 0)]
    canvas = Image.new("RGB", size, (24, 24, 24))
    for panel, offset in zip(panels, offsets, strict=True):
        canvas.paste(panel, offset)
    return canvas


def _captioned(image: Image.Image, label: str, note: str | None) -> Image.Image:
    caption = 22
    out = Image.new("RGB", (image.width, image.height + caption), (24, 24, 24))
    out.paste(image, (0, 0))
    text = ImageDraw.Draw(out)
    text.text((4, image.height + 5), label, fill=(230, 230, 230))
    if note is not None:
        text.text((max(60, image.width - 90), image.height + 5), note, fill=(255, 210, 90))
    return out


def explain(
    encoder: ImageEncoder,
    codec: VectorCodec,
    store: MetadataStore,
    query: ImageSource | Region,
    result_id: int,
    *,
    object_view: bool = False,
    stacked: bool = False,
) -> Explanation:
    """Explain why the indexed image ``result_id`` matches ``query`` (a file, bytes, an
    image or a region of one), in the collection's common space (``codec``); with
    ``object_view``, the object cut from the photo too (see :func:`explain_pair`)."""
    if not isinstance(encoder, Embedder):
        raise Unavailable("explaining needs a single built-in or feature-map model")
    path = store.paths([result_id]).get(result_id)
    if path is None:
        raise NotFound(f"no image {result_id}")
    try:
        result = load_image(path, min_side=encoder.decode_side)
    except DecodeError as exc:  # moved, deleted or changed since it was indexed
        raise NotFound(f"image {result_id} is no longer readable: {exc.reason}") from None
    image = query_image(query, lambda: encoder)
    return explain_pair(encoder, codec, image, result, object_view=object_view, stacked=stacked)
