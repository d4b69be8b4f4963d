"""A hostile-file corpus: what a careless disk or a hostile user puts in a photo folder.

    .venv/bin/python benchmarks/hostile_corpus.py OUT_DIR [--small]

Written into one folder (made fresh), about 1,100 entries by default (``--small``: about
250, what the tests use):

* every format this Pillow can write (JPEG, PNG, WebP, GIF, BMP, TIFF, MPO, AVIF, JPEG 2000,
  ICO, PPM, TGA, QOI, ...) whole, truncated at several points and with bits flipped, all
  named as images;
* the supported formats in every mode they take: 16-bit and 32-bit grey, float, CMYK,
  palette with and without transparency, LA, multi-frame, EXIF orientations, corrupt EXIF,
  a JPEG whose header claims 10000 x 10000;
* documents named as images: PDF, HTML, ZIP, an executable, text, JSON, an empty file;
* bombs: headers claiming billions of pixels, and real, small files that decode to huge
  images (a 16-bit 10900 x 10900 PNG of 250 KB, a 1 x 100,000,000 PNG, RGBA 8000 x 8000);
* odd names: not UTF-8, control characters, newlines, 255 bytes, shell and glob characters,
  leading dashes, Unicode of every kind;
* symbolic links (broken, loops, to folders, escaping the folder), FIFOs, a socket, hidden
  files, an unreadable file.

:func:`make_corpus` returns the manifest: one :class:`Entry` per path, with its kind.
Nothing here needs the network or ../shared.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import socket
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

_SUPPORTED = frozenset({"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF"})

#: Where truncated copies are cut, as fractions of the file.
CUTS = (0.02, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99)


@dataclass(frozen=True)
class Entry:
    path: str  # absolute, as os.fsdecode gives it
    kind: str  # good, truncated, bitflip, document, bomb, name, link, special, hidden


def make_corpus(root: Path, *, small: bool = False, seed: int = 0) -> list[Entry]:
    """Write the corpus into ``root`` (which must not exist) and return its manifest."""
    root = Path(os.path.abspath(root))
    root.mkdir(parents=True)
    rng = random.Random(seed)
    entries: list[Entry] = []

    def add(relative: str | bytes, data: bytes, kind: str) -> None:
        raw = os.fsencode(root) + b"/" + os.fsencode(relative)
        os.makedirs(os.path.dirname(raw), exist_ok=True)
        with open(raw, "wb") as file:
            file.write(data)
        entries.append(Entry(os.fsdecode(raw), kind))

    for name, data in _encoded_formats(rng):
        folder = f"formats/{name}"
        add(f"{folder}/whole.{_ext(name)}", data, "good")
        for cut in CUTS[:: 3 if small else 1]:
            cut_data = data[: int(len(data) * cut)]
            add(f"{folder}/cut{int(cut * 100):02}.{_ext(name)}", cut_data, "truncated")
        # More damage where it matters: the formats lookalike decodes.
        flips = (4 if small else 50) if name in _SUPPORTED else (2 if small else 12)
        for i in range(flips):
            add(f"{folder}/flip{i:02}.{_ext(name)}", _flip(data, rng, 1 + i * 3), "bitflip")
    for name, data in _modes():
        add(f"modes/{name}", data, "good")
        if not small:
            for cut in (0.3, 0.8):
                add(f"modes/cut{int(cut * 100)}-{name}", data[: int(len(data) * cut)], "truncated")
            for i in range(5):
                add(f"modes/flip{i}-{name}", _flip(data, rng, 1 + i * 5), "bitflip")
    for name, data in _documents():
        add(f"documents/{name}", data, "document")
    for name, make in _bombs(small):
        add(f"bombs/{name}", make(), "bomb")
    photo = _jpeg(_pixels(rng, (64, 48)))
    for name in _odd_names():
        add(b"names/" + name, photo, "name")
    entries += _links_and_specials(root, photo)
    return entries


# --- images ---------------------------------------------------------------------------------


def _pixels(rng: random.Random, size: tuple[int, int]) -> Image.Image:
    """A smooth picture with some noise: compresses like a photo, decodes fast."""
    w, h = size
    y, x = np.mgrid[0:h, 0:w]
    noise = np.random.default_rng(rng.randrange(1 << 30)).integers(0, 40, (h, w, 3))
    base = np.stack([x * 255 // max(w, 1), y * 255 // max(h, 1), (x + y) % 256], axis=-1)
    return Image.fromarray(np.clip(base + noise, 0, 255).astype(np.uint8))


def _encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def _jpeg(image: Image.Image, **params: object) -> bytes:
    return _encode(image, "JPEG", quality=90, **params)


def _ext(fmt: str) -> str:
    return {"JPEG": "jpg", "JPEG2000": "jp2", "TIFF": "tif", "MPO": "jpg"}.get(fmt, fmt.lower())


def _encoded_formats(rng: random.Random) -> list[tuple[str, bytes]]:
    """A small photo in every format this Pillow writes and reads (but PDF, a document)."""
    Image.init()
    photo = _pixels(rng, (160, 120))
    found: list[tuple[str, bytes]] = []
    for fmt in sorted(set(Image.SAVE) & (set(Image.OPEN) | {"MPO"})):
        for mode in ("RGB", "L", "1", "F"):
            try:
                image = photo.convert(mode)
                if fmt == "MPO":
                    data = _encode(image, fmt, save_all=True, append_images=[image.rotate(90)])
                else:
                    data = _encode(image, fmt)
                with Image.open(io.BytesIO(data)) as check:
                    check.load()
            except Exception:  # this format cannot take this mode (or cannot write here)
                continue
            found.append((fmt, data))
            break
    return found


def _flip(data: bytes, rng: random.Random, count: int) -> bytes:
    flipped = bytearray(data)
    for _ in range(count):
        position = rng.randrange(len(flipped))
        flipped[position] ^= 1 << rng.randrange(8)
    return bytes(flipped)


def _modes() -> list[tuple[str, bytes]]:
    """The supported formats in the modes that need care, and EXIF cases."""
    rng = random.Random(1)
    rgb = _pixels(rng, (120, 90))
    deep = Image.fromarray(np.asarray(rgb.convert("L"), dtype=np.uint16) * 257)
    found = [
        ("grey16.png", _encode(deep, "PNG")),
        ("grey16.tif", _encode(deep, "TIFF")),
        ("grey16-trns.png", _encode(deep, "PNG", transparency=257 * 30)),
        ("int32.tif", _encode(rgb.convert("L").convert("I"), "TIFF")),
        ("float.tif", _encode(rgb.convert("F"), "TIFF")),
        ("cmyk.jpg", _jpeg(rgb.convert("CMYK"))),
        ("cmyk.tif", _encode(rgb.convert("CMYK"), "TIFF")),
        ("palette.png", _encode(rgb.convert("P"), "PNG")),
        ("palette-trns.png", _encode(rgb.convert("P"), "PNG", transparency=0)),
        ("palette.gif", _encode(rgb.convert("P"), "GIF")),
        ("la.png", _encode(rgb.convert("LA"), "PNG")),
        ("rgba.png", _encode(rgb.convert("RGBA"), "PNG")),
        ("rgba.webp", _encode(rgb.convert("RGBA"), "WEBP")),
        ("bilevel.tif", _encode(rgb.convert("1"), "TIFF")),
        ("bilevel.png", _encode(rgb.convert("1"), "PNG")),
        ("ycbcr.tif", _encode(rgb, "TIFF", compression="jpeg")),
        ("animated.gif", _encode(rgb, "GIF", save_all=True, append_images=[rgb.rotate(90)] * 3)),
        ("animated.webp", _encode(rgb, "WEBP", save_all=True, append_images=[rgb.rotate(90)])),
        ("pages.tif", _encode(rgb, "TIFF", save_all=True, append_images=[rgb.convert("L")])),
        ("liar-10000.jpg", _jpeg_claiming(_jpeg(_pixels(rng, (16, 16))), 10000, 10000)),
        ("corrupt-exif.jpg", _corrupt_exif(_jpeg(rgb, exif=_exif(6)))),
        ("progressive.jpg", _jpeg(rgb, progressive=True)),
        ("big-exif.jpg", _jpeg(rgb, exif=_exif(1, padding=60_000))),
    ]
    for orientation in range(1, 9):
        found.append((f"orientation{orientation}.jpg", _jpeg(rgb, exif=_exif(orientation))))
    return found


def _exif(orientation: int, padding: int = 0) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    if padding:
        exif[0x010E] = "x" * padding  # ImageDescription
    return exif.tobytes()


def _corrupt_exif(data: bytes) -> bytes:
    """Claim many more IFD entries than there are: Pillow warns "Corrupt EXIF data"."""
    damaged = bytearray(data)
    tiff = damaged.find(b"Exif\x00\x00") + 6
    little = damaged[tiff : tiff + 2] == b"II"
    damaged[tiff + 8 : tiff + 10] = b"\x50\x00" if little else b"\x00\x50"
    return bytes(damaged)


def _jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """A JPEG whose frame header (SOF0) claims another size than its data holds."""
    patched = bytearray(data)
    sof = patched.find(b"\xff\xc0")
    struct.pack_into(">HH", patched, sof + 5, height, width)
    return bytes(patched)


# --- documents and bombs --------------------------------------------------------------------


def _documents() -> list[tuple[str, bytes]]:
    pdf = _encode(Image.new("RGB", (20, 20), "red"), "PDF")
    zipped = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(zipped, "w") as archive:
        archive.writestr("a.txt", "hello" * 100)
    executable = Path(shutil.which("true") or "/bin/true")
    return [
        ("report.pdf.jpg", pdf),
        ("page.jpg", b"<!DOCTYPE html><html><body><img src=x></body></html>\n"),
        ("archive.png", zipped.getvalue()),
        ("program.gif", executable.read_bytes()[:200_000] if executable.exists() else b"\x7fELF"),
        ("notes.jpeg", b"Photos from the trip: see the other folder.\n" * 50),
        ("data.webp", b'{"image": "not really"}'),
        ("empty.jpg", b""),
        ("one-byte.png", b"\x89"),
        ("zeros.bmp", b"\0" * 4096),
        ("random.tif", os.urandom(4096)),
        ("svg.png", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>'),
        ("jpeg-magic-only.jpg", b"\xff\xd8\xff\xe0" + b"\0" * 100),
        ("png-magic-only.png", b"\x89PNG\r\n\x1a\n"),
        ("gif-magic-only.gif", b"GIF89a"),
    ]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def _png(width: int, height: int, depth: int, colour: int, *, data: bool = True) -> bytes:
    """A PNG of zeros (small however large), written row by row: Pillow could not even
    create some of these images in memory."""
    header = _png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0))
    out = [b"\x89PNG\r\n\x1a\n", header]
    if data:
        channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
        row = b"\0" * (1 + (width * channels * depth + 7) // 8)
        packer = zlib.compressobj(9)
        parts = []
        rows_per_chunk = max(1, (1 << 22) // len(row))
        for start in range(0, height, rows_per_chunk):
            parts.append(packer.compress(row * min(rows_per_chunk, height - start)))
        parts.append(packer.flush())
        out.append(_png_chunk(b"IDAT", b"".join(parts)))
    out.append(_png_chunk(b"IEND", b""))
    return b"".join(out)


def _bombs(small: bool) -> list[tuple[str, Callable[[], bytes]]]:
    jpeg = _jpeg(Image.new("RGB", (16, 16)))
    headers: list[tuple[str, Callable[[], bytes]]] = [
        ("claims-100000x100000.png", lambda: _png(100_000, 100_000, 8, 2, data=False)),
        ("claims-65000x65000.jpg", lambda: _jpeg_claiming(jpeg, 65000, 65000)),
        (
            "claims-65535x65535.gif",
            lambda: b"GIF89a" + struct.pack("<HH", 65535, 65535) + b"\0" * 20,
        ),
        (
            "claims-50000x50000.bmp",
            lambda: (
                b"BM"
                + struct.pack("<IHHI", 54, 0, 0, 54)
                + struct.pack("<IiiHHIIiiII", 40, 50000, 50000, 1, 24, 0, 0, 0, 0, 0, 0)
            ),
        ),
        ("claims-1x4000000000.png", lambda: _png(1, 4_000_000_000, 8, 0, data=False)),
    ]
    if small:
        return [
            *headers,
            ("grey16-4000.png", lambda: _png(4000, 4000, 16, 0)),
            ("thin-1x3000000.png", lambda: _png(1, 3_000_000, 8, 0)),
        ]
    return [
        *headers,
        ("zeros-20000x20000.png", lambda: _png(20_000, 20_000, 8, 0)),  # 400 MP
        ("grey16-10900.png", lambda: _png(10_900, 10_900, 16, 0)),
        ("grey16-7000.png", lambda: _png(7000, 7000, 16, 0)),
        ("thin-1x100000000.png", lambda: _png(1, 100_000_000, 8, 0)),
        ("wide-100000000x1.png", lambda: _png(100_000_000, 1, 8, 0)),
        ("rgba-8000x8000.png", lambda: _png(8000, 8000, 8, 6)),
        ("rgb-10000x10000.png", lambda: _png(10_000, 10_000, 8, 2)),
        ("rgb16-6000x6000.png", lambda: _png(6000, 6000, 16, 2)),
        ("jpeg-8000x8000.jpg", lambda: _jpeg(Image.new("RGB", (8000, 8000), "grey"))),
    ]


# --- names, links, special files --------------------------------------------------------------


def _odd_names() -> list[bytes]:
    names = [
        b"bad\xff.jpg",
        b"latin1-caf\xe9.jpg",
        b"\xfe\xfe\xfe.jpg",
        b"half-utf8-\xe2\x82.jpg",
        b"overlong-\xc0\xaf.jpg",
        b"surrogate-\xed\xa0\x80.jpg",
        "emoji-\U0001f600.jpg".encode(),
        "rtl-\u202etxt.jpg".encode(),
        "combining-e\u0301.jpg".encode(),
        "nfc-\u00e9.jpg".encode(),
        "cjk-\u5199\u771f.jpg".encode(),
        "zero-width-\u200b.jpg".encode(),
        b"new\nline.jpg",
        b"tab\there.jpg",
        b"carriage\rreturn.jpg",
        b"escape\x1b[31mred.jpg",
        b"bell\x07.jpg",
        b" leading space.jpg",
        b"trailing space .jpg",
        b"-dash-first.jpg",
        b"--db.jpg",
        b"quote'single.jpg",
        b'quote"double.jpg',
        b"back\\slash.jpg",
        b"percent%20_under_score.jpg",
        b"glob*?[].jpg",
        b"semi;colon&amp$(x)`y`.jpg",
        b"UPPER.JPG",
        b"mixed.JpEg",
        b"double.jpg.jpg",
        b"no-extension-but-dot.",
        b"a" * 251 + b".jpg",
        ("\u00e9" * 125 + ".jpg").encode(),  # 254 bytes
        b"dir with spaces/inner.jpg",
        b"deep/" * 20 + b"deep.jpg",
    ]
    return names


def _links_and_specials(root: Path, photo: bytes) -> list[Entry]:
    folder = root / "links"
    folder.mkdir()
    outside = root.parent / (root.name + "-outside")
    outside.mkdir(exist_ok=True)
    (outside / "escaped.jpg").write_bytes(photo)
    (outside / "inner").mkdir(exist_ok=True)
    (outside / "inner" / "x.jpg").write_bytes(photo)
    (folder / "real.jpg").write_bytes(photo)
    made: list[tuple[str, str]] = []

    def link(name: str, target: str | Path, kind: str = "link") -> None:
        (folder / name).symlink_to(target)
        made.append((name, kind))

    link("good-link.jpg", "real.jpg")
    link("broken.jpg", "missing.jpg")
    link("broken-absolute.png", "/nonexistent/nowhere.png")
    link("self-loop.jpg", "self-loop.jpg")
    link("loop-a.jpg", "loop-b.jpg")
    link("loop-b.jpg", "loop-a.jpg")
    link("chain.jpg", "good-link.jpg")
    link("escape-file.jpg", outside / "escaped.jpg")
    link("escape-etc.jpg", "/etc/hostname")
    link("escape-dir", outside / "inner")
    link("parent-dir", "..")
    link("to-dev-null.jpg", "/dev/null")
    link("to-dev-zero.png", "/dev/zero")
    link("through-file.jpg", "real.jpg/child")
    os.mkfifo(folder / "pipe.jpg")
    made.append(("pipe.jpg", "special"))
    os.mkfifo(folder / "pipe-without-extension")
    made.append(("pipe-without-extension", "special"))
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(folder / "socket.jpg"))
            made.append(("socket.jpg", "special"))
        except OSError:  # path too long for AF_UNIX: no socket then
            pass
    (folder / ".hidden.jpg").write_bytes(photo)
    made.append((".hidden.jpg", "hidden"))
    hidden = folder / ".hidden-folder"
    hidden.mkdir()
    (hidden / "inside.jpg").write_bytes(photo)
    locked = folder / "unreadable.jpg"
    locked.write_bytes(photo)
    locked.chmod(0)
    made.append(("unreadable.jpg", "special"))
    entries = [Entry(str(folder / name), kind) for name, kind in made]
    entries.append(Entry(str(hidden / "inside.jpg"), "hidden"))
    entries.append(Entry(str(folder / "real.jpg"), "good"))
    return entries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to create")
    parser.add_argument("--small", action="store_true")
    args = parser.parse_args()
    entries = make_corpus(args.out, small=args.small)
    kinds: dict[str, int] = {}
    for entry in entries:
        kinds[entry.kind] = kinds.get(entry.kind, 0) + 1
    print(f"{len(entries)} entries in {args.out}: {kinds}")


if __name__ == "__main__":
    main()
