"""Shared test set-up: a private cache and data folder, and small images made on the fly."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike

SAMPLE = Path(lookalike.__file__).parent / "sample"


@pytest.fixture(autouse=True, scope="session")
def _private_dirs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Keep built model graphs and default collections out of the user's home."""
    patch = pytest.MonkeyPatch()
    patch.setenv("LOOKALIKE_CACHE", str(tmp_path_factory.mktemp("cache")))
    patch.setenv("XDG_DATA_HOME", str(tmp_path_factory.mktemp("data")))
    patch.delenv("LOOKALIKE_DB", raising=False)
    yield
    patch.undo()


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """A copy of the bundled sample collection: 30 real photos in six category folders."""
    target = tmp_path / "photos"
    shutil.copytree(SAMPLE / "collection", target)
    return target


@pytest.fixture
def panda_query() -> Path:
    return SAMPLE / "queries" / "query_panda.jpg"


def make_image(path: Path, seed: int, size: tuple[int, int] = (96, 64), fmt: str = "JPEG") -> Path:
    """A random-noise image: distinct per seed, decodable, cheap."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, format=fmt)
    return path
