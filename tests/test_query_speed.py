"""The query path's speed-ups change no result: the photo and the object cut from it go
through the network in one batch with the vectors they get alone, the border test's cached
grids leak nothing between images, and the top-k product runs on one BLAS thread."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from threadpoolctl import threadpool_info

from lookalike.encode.models import Embedder, builtin_spec
from lookalike.image.localization import crop_to, find_object
from lookalike.index import blas
from lookalike.search.engine import describe_queries
from lookalike.types import Description

from .test_localization import on_wall


class _Counting:
    """A real encoder that records the batches it is asked to describe."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.decode_side = embedder.decode_side
        self.batches: list[int] = []

    def describe(self, images: list[Image.Image]) -> Description:
        self.batches.append(len(images))
        return self.embedder.describe(images)


def test_photo_and_object_in_one_run_with_their_own_vectors(photos: Path) -> None:
    embedder = Embedder(builtin_spec("lite0"))
    counting = _Counting(embedder)
    clean = Image.open(sorted((photos / "starfish").iterdir())[0]).convert("RGB")
    scene = on_wall(clean, (260, 180, 400, 300))
    described = describe_queries([scene, clean], lambda: counting, None, object_views=True)
    assert counting.batches == [3]  # two photos and one object, one network run
    box = find_object(scene)
    assert box is not None and described.boxes == [box, None]
    assert list(described.views) == [0]
    alone = embedder.describe([scene]).vectors[0], embedder.describe([clean]).vectors[0]
    np.testing.assert_array_equal(described.vectors, np.stack(alone))
    crop = embedder.describe([crop_to(scene, box)]).vectors[0]
    np.testing.assert_array_equal(described.views[0], crop)


def test_border_test_gives_the_same_box_whatever_came_before() -> None:
    rng = np.random.default_rng(1)
    picture = Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8))
    scenes = [
        on_wall(picture, (200, 120, 420, 330)),
        on_wall(picture, (60, 50, 300, 260), seed=2).resize((320, 240)),
        on_wall(picture, (300, 200, 560, 420), seed=3).convert("L").convert("RGB"),
    ]
    first = [find_object(scene) for scene in scenes]
    assert all(box is not None for box in first)
    assert [find_object(scene) for scene in reversed(scenes)] == first[::-1]
    assert len(set(first)) == 3


def _numpy_blas_threads() -> list[int]:
    """Threads of the BLAS that NumPy's products use (the one in NumPy's wheel)."""
    return [
        int(info["num_threads"])
        for info in threadpool_info()
        if info["user_api"] == "blas" and "numpy" in Path(info["filepath"]).parent.name
    ]


def test_one_blas_thread_inside_and_the_limit_restored_after_the_last_block() -> None:
    before = _numpy_blas_threads()
    assert before, "NumPy's BLAS is visible to threadpoolctl"
    with blas.one_thread():
        assert _numpy_blas_threads() == [1]
        with blas.one_thread():  # nested (as two searches at once): still one thread
            assert _numpy_blas_threads() == [1]
        assert _numpy_blas_threads() == [1]  # the outer block still runs
    assert _numpy_blas_threads() == before


def test_starting_a_search_or_an_index_run_does_not_import_onnx() -> None:
    """onnx (protobuf, ml_dtypes: 0.3 s or more) is needed only to build a graph once."""
    import subprocess
    import sys

    code = (
        "import sys; from lookalike import cli; from lookalike.encode.models import builtin_spec; "
        "builtin_spec('lite0'); builtin_spec('lite2', 'fp32'); print('onnx' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
