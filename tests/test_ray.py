"""Indexing on a local Ray (the runner of ``lookalike index --ray``): the same results and
guarantees as the local indexer."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from tests.conftest import make_image


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A small local Ray: two CPUs, a small object store."""
    try:
        import ray

        import lookalike.pipeline.ray_runner  # noqa: F401  (the ray extra)
    except ImportError as exc:
        if os.environ.get("LOOKALIKE_REQUIRE_RAY") == "1":
            raise
        pytest.skip(f"the ray extra is not installed: {exc}")
    ray.init(
        num_cpus=2,
        object_store_memory=100 * 1024 * 1024,
        include_dashboard=False,
        log_to_driver=False,
    )
    yield
    ray.shutdown()


def _folder(tmp_path: Path) -> Path:
    folder = tmp_path / "imgs"
    for i in range(14):
        make_image(folder / f"{i:02}.jpg", seed=i)
    (folder / "bad.jpg").write_bytes(b"not an image at all")
    (folder / "empty.png").write_bytes(b"")
    return folder


def test_ray_indexes_like_the_local_indexer(
    local_ray: None, db: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    folder = _folder(tmp_path)
    with Collection.open(tmp_path / "local.db") as local:
        expected = local.add([folder], batch_size=4)
        expected_ids, expected_vectors = local.store.load_vectors()
        expected_paths = local.store.paths(expected_ids)
    with Collection.open(db) as collection:
        report = collection.add([folder], batch_size=4, ray="")
        assert (report.added, report.updated, report.unchanged) == (14, 0, 0)
        assert sorted(report.skipped) == sorted(expected.skipped)
        assert {Path(s.path).name for s in collection.store.skipped_files()} == {
            "bad.jpg",
            "empty.png",
        }
        ids, vectors = collection.store.load_vectors()
        paths = collection.store.paths(ids)
        # the same vectors for the same files (float16 in PostgreSQL)
        by_path = dict(
            zip([expected_paths[i] for i in expected_ids], expected_vectors, strict=True)
        )
        for i, vector in zip(ids, vectors, strict=True):
            np.testing.assert_allclose(vector, by_path[paths[int(i)]], atol=2e-3)
        # ids follow the plan's order: the files were written in order, batch by batch
        assert [paths[int(i)] for i in ids] == sorted(paths.values())
        # unchanged files are not sent to Ray again; a changed one is
        make_image(folder / "03.jpg", seed=99)
        os.utime(folder / "03.jpg", ns=(1, 1))
        again = collection.add([folder], batch_size=4, ray="")
        # the two bad files are remembered, not decoded again
        assert (again.added, again.updated, again.unchanged, again.skipped_before) == (0, 1, 13, 2)
    # Ray Data's own reports (each dataset's plan, start, end) stay out of the console
    err = capfd.readouterr().err
    for notice in ("Starting execution", "Execution plan", "execution finished", "Progress bars"):
        assert notice not in err, err[-2000:]


class _Crash(Exception):
    pass


def test_a_crashed_ray_job_resumes_without_redoing_committed_batches(
    local_ray: None, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    written: list[int] = []

    def crash_after_two_batches(done: int) -> None:
        written.append(done)
        if len(written) == 2:
            raise _Crash  # the driver dies after its second commit

    with Collection.open(tmp_path / "c.db") as collection:
        with pytest.raises(_Crash):
            collection.add([folder], batch_size=4, ray="", progress=crash_after_two_batches)
        committed = collection.store.file_states()
        assert len(committed) == 8  # two whole batches of four, nothing of the third
        report = collection.add([folder], batch_size=4, ray="")
        assert report.unchanged == 8
        assert report.added + len(report.skipped) == 16 - 8
        assert len(collection) == 14
