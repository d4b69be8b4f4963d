"""Query localization on plain backgrounds: crops only when the evidence is clear, and a
clean photo keeps its matches."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from lookalike import Collection
from lookalike.image.localization import find_object, fuse


def _iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - ix * iy
    return ix * iy / union


def on_wall(picture: Image.Image, box: tuple[int, int, int, int], seed: int = 0) -> Image.Image:
    """``picture`` in a dark frame on a lit, slightly noisy beige wall (640 x 480)."""
    rng = np.random.default_rng(seed)
    light = np.linspace(0.85, 1.1, 640)[None, :, None]
    wall = np.array([215.0, 205.0, 185.0])[None, None, :] * light
    wall = wall + rng.normal(0, 2.5, size=(480, 640, 1))
    scene = Image.fromarray(np.clip(np.broadcast_to(wall, (480, 640, 3)), 0, 255).astype(np.uint8))
    x0, y0, x1, y1 = box
    ImageDraw.Draw(scene).rectangle((x0 - 12, y0 - 12, x1 + 11, y1 + 11), fill=(40, 30, 25))
    scene.paste(picture.resize((x1 - x0, y1 - y0)), (x0, y0))
    return scene


def test_finds_a_framed_picture_on_a_wall() -> None:
    rng = np.random.default_rng(3)  # a busy picture: nothing inside it looks like background
    picture = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    box = (200, 120, 420, 330)
    found = find_object(on_wall(picture, box))
    assert found is not None
    truth = (box[0] / 640, box[1] / 480, box[2] / 640, box[3] / 480)
    assert _iou(found, truth) > 0.8  # the picture inside the frame, not the frame


def test_leaves_clean_and_cluttered_photos_alone(photos: Path) -> None:
    rng = np.random.default_rng(0)
    clutter = Image.fromarray(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8))
    assert find_object(clutter) is None  # no plain border: no background to model
    plain = Image.new("RGB", (320, 240), (200, 200, 200))
    assert find_object(plain) is None  # nothing differs from the background
    filled = Image.new("RGB", (320, 240), (200, 200, 200))
    ImageDraw.Draw(filled).rectangle((4, 4, 315, 235), fill=(30, 90, 160))
    assert find_object(filled) is None  # the object covers over 90% of the photo


def test_fuse_keeps_each_id_at_its_better_score() -> None:
    whole = (np.array([[5, 3, 9]]), np.array([[0.9, 0.5, 0.4]], np.float32))
    crop = (np.array([[3, 7, -1]]), np.array([[0.8, 0.6, -np.inf]], np.float32))
    ids, scores = fuse(whole, crop, 4)
    assert ids.tolist() == [[5, 3, 7, 9]]
    np.testing.assert_allclose(scores, [[0.9, 0.8, 0.6, 0.4]])


def test_default_query_localization_finds_a_picture_on_a_wall(photos: Path, tmp_path: Path) -> None:
    """Searched by a photo of one of its images hanging on a wall, the collection returns
    that image first with the default localization; the same photo left whole does worse,
    and a clean copy of an image still finds it first at the same score."""
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
        target = sorted((photos / "starfish").iterdir())[0]
        scene = on_wall(Image.open(target).convert("RGB"), (260, 180, 400, 300))
        data = io.BytesIO()
        scene.save(data, "JPEG", quality=90)
        outcome = collection.search_detailed([data.getvalue()], k=30)[0]
        assert outcome.query_box is not None
        assert outcome.results[0].path == str(target)
        whole = collection.search_detailed([data.getvalue()], k=30, localize="none")[0]
        assert whole.query_box is None
        rank_whole = [r.path for r in whole.results].index(str(target))
        assert outcome.results[0].score > whole.results[rank_whole].score

        clean = target.read_bytes()
        default = collection.search_detailed([clean], k=3)[0].results
        off = collection.search_detailed([clean], k=3, localize="none")[0].results
        assert default[0].path == off[0].path == str(target)
        assert default[0].score == off[0].score
