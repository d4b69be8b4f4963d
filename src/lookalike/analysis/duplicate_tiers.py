"""Tiers within a near-duplicate group, and the copy to keep.

A group found by cosine (:mod:`lookalike.analysis.duplicates`) can hold three kinds of
relation, which this module tells apart by measurement:

- **exact** copies: the same bytes (SHA-256 of the file) or the same pixels (SHA-256 of the
  decoded image: a PNG saved from a JPEG, a file with other metadata);
- **near**-duplicates: the same picture after an edit (re-encoded, resized, cropped a little,
  colour-shifted, watermarked): a cosine at or above ``config.DUPLICATE_NEAR_COSINE``, or at
  or above ``config.DUPLICATE_NEAR_HASH_COSINE`` with a perceptual hash (a 64-bit DCT hash of
  the decoded image) within ``config.DUPLICATE_NEAR_HASH_BITS`` bits;
- merely **similar**: another shot of the same scene or object.

The images of a group joined by exact and near pairs make a *picture*; each picture has one
copy to keep (the others are suggested for removal) and a group of several pictures is
"similar": every picture's keeper is kept. Boundaries measured by
``benchmarks/eval_duplicates.py`` (docs/EVALUATION.md).
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np
from PIL import Image

from lookalike import config
from lookalike.image.decode import DecodeError, load_image

log = logging.getLogger(__name__)

Tier = Literal["exact", "near", "similar"]
#: Formats that lose nothing: a copy in one of them with the same pixels as a JPEG was
#: converted from it (a lossy encoder never gives back the pixels it was given).
LOSSLESS = frozenset({"PNG", "TIFF", "BMP", "GIF", "PPM"})


@dataclass(frozen=True)
class ImageFacts:
    """What the tiers and the keep suggestion look at in one file."""

    path: str
    file_sha: str | None = None
    pixels_sha: str | None = None
    phash: int | None = None
    width: int = 0
    height: int = 0
    format: str | None = None
    bytes: int = 0
    mtime_ns: int = 0
    jpeg_quality: int | None = None
    #: Why the file could not be read (then only its cosine speaks for it).
    error: str | None = None

    @property
    def pixels(self) -> int:
        return self.width * self.height

    @property
    def bytes_per_pixel(self) -> float:
        return self.bytes / self.pixels if self.pixels else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "width": self.width,
            "height": self.height,
            "format": self.format,
            "bytes": self.bytes,
            "jpeg_quality": self.jpeg_quality,
            "mtime": self.mtime_ns / 1e9 if self.mtime_ns else None,
            **({"error": self.error} if self.error else {}),
        }


def perceptual_hash(image: Image.Image) -> int:
    """64-bit DCT hash (pHash): the signs of the 8 x 8 lowest frequencies of the 32 x 32
    grey image against their median. Survives re-encoding, resizing, colour shifts and small
    marks; a crop shifts it."""
    from scipy.fft import dctn

    grey = np.asarray(image.convert("L").resize((32, 32), Image.Resampling.LANCZOS), np.float32)
    low = dctn(grey, norm="ortho")[:8, :8].ravel()
    bits = low > np.median(low)
    return int("".join("1" if b else "0" for b in bits), 2)


def hash_distance(a: int, b: int) -> int:
    return (a ^ b).bit_count()


#: libjpeg's luminance table at quality 50, to estimate the quality a JPEG was saved at.
_STANDARD_LUMA = np.array(
    [16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
     14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
     92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99],
    dtype=np.float64,
)  # fmt: skip


def jpeg_quality(table: Sequence[int]) -> int:
    """The libjpeg quality (1-100) whose luminance table is closest to ``table`` (the inverse
    of libjpeg's scaling, on the mean ratio; tables are compared sorted, so the order they are
    stored in does not matter)."""
    ratio = float(np.mean(np.sort(np.asarray(table, np.float64)) / np.sort(_STANDARD_LUMA)))
    scale = ratio * 100
    quality = (200 - scale) / 2 if scale <= 100 else 5000 / scale
    return int(min(100, max(1, round(quality))))


def image_facts(path: str) -> ImageFacts:
    """Hashes, size, format and compression of one file; ``error`` set when unreadable."""
    try:
        info = os.stat(path)
        if info.st_size > config.MAX_FILE_BYTES:  # as the indexer refuses it: never read
            return ImageFacts(path, bytes=info.st_size, error="file too large")
        with open(path, "rb") as handle:
            data = handle.read(config.MAX_FILE_BYTES + 1)
        image = load_image(data)
    except (OSError, DecodeError) as exc:
        reason = exc.reason if isinstance(exc, DecodeError) else (exc.strerror or str(exc))
        return ImageFacts(path, error=reason)
    fmt: str | None = None
    quality: int | None = None
    try:
        with Image.open(io.BytesIO(data)) as header:
            fmt = header.format
            tables = getattr(header, "quantization", None)  # JPEG only (PIL's JpegImageFile)
            if fmt == "JPEG" and tables:
                quality = jpeg_quality(tables[0])
    except (OSError, ValueError):  # decodable by load_image's plugins only (HEIC, AVIF)
        pass
    pixels = np.ascontiguousarray(np.asarray(image))
    pixels_sha = hashlib.sha256(f"{image.width}x{image.height}".encode() + pixels.data).hexdigest()
    return ImageFacts(
        path=path,
        file_sha=hashlib.sha256(data).hexdigest(),
        pixels_sha=pixels_sha,
        phash=perceptual_hash(image),
        width=image.width,
        height=image.height,
        format=fmt,
        bytes=info.st_size,
        mtime_ns=info.st_mtime_ns,
        jpeg_quality=quality,
    )


def facts_of(paths: Sequence[str], workers: int | None = None) -> list[ImageFacts]:
    """:func:`image_facts` of every path, a few files at a time (decoders release the GIL)."""
    if not paths:
        return []
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        return list(pool.map(image_facts, paths))


# --- pairs -----------------------------------------------------------------------------------


def exact_match(a: ImageFacts, b: ImageFacts) -> str | None:
    """ "same bytes", "same pixels" or None."""
    if a.file_sha is not None and a.file_sha == b.file_sha:
        return "same bytes"
    if a.pixels_sha is not None and a.pixels_sha == b.pixels_sha:
        return "same pixels"
    return None


def pair_tier(a: ImageFacts, b: ImageFacts, cosine: float) -> Tier:
    """The tier of two images of a group, by the measured boundaries (module docstring)."""
    if exact_match(a, b):
        return "exact"
    if cosine >= config.DUPLICATE_NEAR_COSINE:
        return "near"
    if (
        a.phash is not None
        and b.phash is not None
        and cosine >= config.DUPLICATE_NEAR_HASH_COSINE
        and hash_distance(a.phash, b.phash) <= config.DUPLICATE_NEAR_HASH_BITS
    ):
        return "near"
    return "similar"


def pair_reason(a: ImageFacts, b: ImageFacts, cosine: float) -> str:
    """How ``b`` relates to ``a``, for people: "same bytes", "cosine 0.981, hash 6 bits"."""
    exact = exact_match(a, b)
    if exact:
        return exact
    text = f"cosine {cosine:.3f}"
    if a.phash is not None and b.phash is not None:
        text += f", hash {hash_distance(a.phash, b.phash)} bits apart"
    return text


# --- the copy to keep ------------------------------------------------------------------------


def _quality(f: ImageFacts) -> int:
    """Compression loss, higher is better: lossless 101, a JPEG its quality, else 100."""
    if f.format in LOSSLESS:
        return 101
    return f.jpeg_quality if f.jpeg_quality is not None else 100


def _original_of_same_pixels(copies: list[ImageFacts]) -> ImageFacts:
    """Among files with the same pixels: a lossy file (the others were converted from it, a
    lossy encoder never gives back the pixels it was given), else the earliest, else the
    smallest."""
    return min(copies, key=lambda f: (f.format in LOSSLESS, f.mtime_ns, f.bytes, f.path))


def _rank(f: ImageFacts) -> tuple[object, ...]:
    """Sort key, best first: readable, most pixels, least compressed (JPEG quality, then
    bytes per pixel), earliest, then by path."""
    return (f.error is not None, -f.pixels, -_quality(f), -f.bytes_per_pixel, f.mtime_ns, f.path)


def choose_keeper(members: Sequence[ImageFacts]) -> tuple[int, str]:
    """The position in ``members`` of the copy to keep, and why (against the runner-up)."""
    by_pixels: dict[str, list[int]] = {}
    for i, f in enumerate(members):
        by_pixels.setdefault(f.pixels_sha or f"unreadable:{i}", []).append(i)
    # one candidate per set of same-pixel files: the original among them
    candidates = []
    for positions in by_pixels.values():
        original = _original_of_same_pixels([members[i] for i in positions])
        candidates.append(next(i for i in positions if members[i] is original))
    candidates.sort(key=lambda i: _rank(members[i]))
    best = candidates[0]
    reasons = []
    if len(candidates) > 1:
        reasons.append(_why_better(members[best], members[candidates[1]]))
    same = [members[i] for i in by_pixels[_key(members, best)]]
    if len(same) > 1 or not reasons:
        reasons.append(_why_original(members[best], same))
    return best, "; ".join(reasons)


def _key(members: Sequence[ImageFacts], i: int) -> str:
    return members[i].pixels_sha or f"unreadable:{i}"


def _why_better(best: ImageFacts, other: ImageFacts) -> str:
    if other.error is not None and best.error is None:
        return f"the other copies cannot be read ({other.error})"
    if best.pixels != other.pixels:
        return f"most pixels ({best.width} x {best.height} against {other.width} x {other.height})"
    if _quality(best) != _quality(other):
        return f"least compressed ({_describe_quality(best)} against {_describe_quality(other)})"
    if round(best.bytes_per_pixel, 3) != round(other.bytes_per_pixel, 3):
        return (
            f"least compressed ({best.bytes_per_pixel:.2f} against "
            f"{other.bytes_per_pixel:.2f} bytes per pixel)"
        )
    if best.mtime_ns != other.mtime_ns:
        return "earliest file"
    return "first by name"


def _why_original(best: ImageFacts, same: list[ImageFacts]) -> str:
    formats = {f.format for f in same}
    if len(formats) > 1 and best.format not in LOSSLESS:
        converted = sorted(str(f.format) for f in same if f.format in LOSSLESS)
        return f"original format ({best.format}; the {', '.join(converted)} copy has its pixels)"
    if len(same) == 1:
        return "the only copy"
    if len({f.mtime_ns for f in same}) > 1:
        return "earliest of identical copies"
    return "first by name of identical copies"


def _describe_quality(f: ImageFacts) -> str:
    if f.format in LOSSLESS:
        return f"lossless {f.format}"
    if f.jpeg_quality is not None:
        return f"JPEG quality {f.jpeg_quality}"
    return f.format or "unknown format"


# --- a group ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One image of a tiered group.

    ``picture``: which picture of the group it shows (0 is the first listed); ``tier``:
    "keep" for the copy to keep of picture 0, "similar" for the copy to keep of another
    picture (another shot: kept too), "exact" or "near" for a copy of its picture's keeper
    (suggested for removal); ``why``: the reason, for people.
    """

    id: int
    path: str
    score: float
    picture: int
    tier: Literal["keep", "exact", "near", "similar"]
    keep: bool
    why: str
    facts: ImageFacts

    def as_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "path": self.path,
            "score": round(self.score, 6),
            "picture": self.picture,
            "tier": self.tier,
            "keep": self.keep,
            "why": self.why,
            **self.facts.as_dict(),
        }


def near_pairs(
    facts: Sequence[ImageFacts], first: np.ndarray, second: np.ndarray, cosines: np.ndarray
) -> np.ndarray:
    """Which of the pairs (``first[k]``, ``second[k]``) with these cosines :func:`pair_tier`
    calls exact or near, all at once."""
    hashes = np.array([f.phash if f.phash is not None else 0 for f in facts], dtype=np.uint64)
    hashed = np.array([f.phash is not None for f in facts], dtype=bool)
    bits = np.bitwise_count(hashes[first] ^ hashes[second])
    near = (cosines >= config.DUPLICATE_NEAR_COSINE) | (
        (cosines >= config.DUPLICATE_NEAR_HASH_COSINE)
        & (bits <= config.DUPLICATE_NEAR_HASH_BITS)
        & hashed[first]
        & hashed[second]
    )
    for codes in _hash_codes(facts):
        near |= codes[first] == codes[second]
    return np.asarray(near, dtype=bool)


def _hash_codes(facts: Sequence[ImageFacts]) -> list[np.ndarray]:
    """For the file hash and the pixel hash: a code per image, the position of the first
    image with that hash (its own for the first), or negative for an image without one."""
    out = []
    for values in ([f.file_sha for f in facts], [f.pixels_sha for f in facts]):
        codes: dict[str, int] = {}
        out.append(
            np.array(
                [codes.setdefault(v, i) if v is not None else -1 - i for i, v in enumerate(values)]
            )
        )
    return out


def _pictures(facts: Sequence[ImageFacts], vectors: np.ndarray) -> np.ndarray:
    """A picture number per image: connected pieces of the exact and near pairs. Candidate
    pairs come from a blocked self-join at the lowest near cosine (each image's best few),
    so that a group of thousands of copies never builds its N x N matrix; exact copies are
    joined by their hashes, all of them."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from lookalike.analysis.duplicates import duplicate_pairs

    n = len(facts)
    hash_codes = _hash_codes(facts)
    # one image per set of equal pixels: thousands of exact copies are one candidate
    distinct = np.flatnonzero((hash_codes[1] < 0) | (hash_codes[1] == np.arange(n)))
    low = min(config.DUPLICATE_NEAR_COSINE, config.DUPLICATE_NEAR_HASH_COSINE)
    first, second, score = duplicate_pairs(
        vectors[distinct], threshold=low, max_neighbours=config.DUPLICATE_MAX_NEIGHBOURS
    )
    first, second = distinct[first], distinct[second]
    keep = near_pairs(facts, first, second, score)
    rows, cols = [first[keep]], [second[keep]]
    for codes in hash_codes:  # each image joined to the first with its hash
        rows.append(np.arange(n))
        cols.append(np.where(codes >= 0, codes, np.arange(n)))
    a, b = np.concatenate(rows), np.concatenate(cols)
    graph = coo_matrix((np.ones(len(a), dtype=np.int8), (a, b)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def tier_group(
    ids: Sequence[int],
    scores: Sequence[float],
    facts: Sequence[ImageFacts],
    vectors: np.ndarray,
) -> tuple[Tier, list[Member]]:
    """The group's tier and its members in review order: picture by picture (the one with
    the most copies first, then by its keeper), the keeper first, then its exact copies,
    then near ones.

    A picture is a connected piece of the exact and near pairs of the group's ``vectors``
    (unit rows, one per id; see :func:`_pictures`). A group's tier is "exact" when it is one
    picture of exact copies, "near" when it is one picture, else "similar".
    """
    vectors = np.asarray(vectors, dtype=np.float32)
    piece = _pictures(facts, vectors)
    pictures: dict[int, list[int]] = {}
    for i, p in enumerate(piece):
        pictures.setdefault(int(p), []).append(i)
    chosen = []
    for positions in pictures.values():
        best, why = choose_keeper([facts[i] for i in positions])
        chosen.append((positions[best], why, positions))
    chosen.sort(key=lambda c: (-len(c[2]), _rank(facts[c[0]])))  # most copies first
    members: list[Member] = []
    all_exact = len(chosen) == 1
    first = chosen[0][0]
    for number, (keeper, why, positions) in enumerate(chosen):
        if number == 0:
            members.append(_member(ids, scores, facts, keeper, number, "keep", f"keep: {why}"))
        else:
            relation = pair_reason(
                facts[first], facts[keeper], float(vectors[first] @ vectors[keeper])
            )
            text = f"another shot ({relation})" + (f"; keep: {why}" if len(positions) > 1 else "")
            members.append(_member(ids, scores, facts, keeper, number, "similar", text))
        copies = []
        for i in positions:
            if i == keeper:
                continue
            tier: Literal["exact", "near"] = (
                "exact" if exact_match(facts[keeper], facts[i]) else "near"
            )
            all_exact = all_exact and tier == "exact"
            reason = pair_reason(facts[keeper], facts[i], float(vectors[keeper] @ vectors[i]))
            member = _member(ids, scores, facts, i, number, tier, f"{tier} copy: {reason}")
            copies.append((tier != "exact", -float(vectors[keeper] @ vectors[i]), i, member))
        members.extend(c[3] for c in sorted(copies, key=lambda c: c[:3]))
    group_tier: Tier = "similar" if len(chosen) > 1 else ("exact" if all_exact else "near")
    return group_tier, members


def _member(
    ids: Sequence[int],
    scores: Sequence[float],
    facts: Sequence[ImageFacts],
    i: int,
    picture: int,
    tier: Literal["keep", "exact", "near", "similar"],
    why: str,
) -> Member:
    keep = tier in ("keep", "similar")
    return Member(ids[i], facts[i].path, scores[i], picture, tier, keep, why, facts[i])
