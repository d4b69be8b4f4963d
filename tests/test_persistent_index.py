"""Large-collection search: automatic exact/approximate choice, the index file beside the store,
following the store's changes, torn and foreign index files, category filters, --exact."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from lookalike import config
from lookalike.cli import main
from lookalike.collection import Collection
from lookalike.index import ann as ann_index
from lookalike.index import persistent as persistent_index
from lookalike.index.ann import AnnIndex
from lookalike.index.persistent import FollowedIndex, Target
from lookalike.index.refine import RefinedIndex
from lookalike.search import fitting
from lookalike.store.records import EmbeddedImage
from lookalike.store.sqlite import Store

CENTRES = 12


def vectors_like_images(n: int, seed: int = 0, dims: int = 1280) -> tuple[np.ndarray, np.ndarray]:
    """Clustered unit vectors (images of a few kinds) and the cluster of each."""
    rng = np.random.default_rng(seed)
    means = np.random.default_rng(99).normal(size=(CENTRES, dims))
    labels = rng.integers(0, CENTRES, n)
    vectors = means[labels] + 1.5 * rng.normal(size=(n, dims))
    return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32), labels


def write(collection: Collection, start: int, vectors: np.ndarray) -> None:
    collection.store.write_batch(
        [
            EmbeddedImage(f"/photos/{start + i:06}.jpg", 1, 1, 64, 48, v)
            for i, v in enumerate(vectors)
        ],
        [],
    )


@pytest.fixture
def small_threshold(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(config, "ANN_MIN_IMAGES", 1000)


def approximate_index(collection: Collection) -> AnnIndex:
    """The FAISS index under the refine step a large collection searches with."""
    index = collection.index()
    assert isinstance(index, RefinedIndex)
    return index.approximate


def recall_at_10(collection: Collection, queries: np.ndarray) -> float:
    approximate = collection.search_many(list(queries), k=10)
    exact = collection.search_many(list(queries), k=10, exact=True)
    return float(
        np.mean(
            [
                len({r.path for r in a} & {r.path for r in e}) / 10
                for a, e in zip(approximate, exact, strict=True)
            ]
        )
    )


def test_automatic_choice_persistence_and_following(
    tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "big.db"
    vectors, _ = vectors_like_images(1500)
    with Collection.open(db) as collection:
        write(collection, 0, vectors[:800])
        collection.refresh_models()
        collection.sync_index()
        assert collection.index_kind() == "exact"  # below the threshold
        assert not persistent_index.path_for(collection.store).exists()
        write(collection, 800, vectors[800:])
        collection.refresh_models()
        collection.sync_index()
        assert collection.index_kind() == config.ANN_KIND
        info = collection.index_info()
        assert info["approximate"] and info["dims"] == 256 and info["images"] == 1500
        assert 256 <= info["bytes_per_image"] < 700  # 8-bit codes of PCA-256 vectors, ids (graph)
        queries, _ = vectors_like_images(20, seed=1)
        assert recall_at_10(collection, queries) >= 0.9
        before = collection.search_many(list(queries), k=10)
    assert persistent_index.path_for(collection.store).exists()

    # A new process loads the saved index: no rebuild, the same answers.
    def no_rebuild(self: FollowedIndex) -> None:
        raise AssertionError("the saved index should have been used")

    monkeypatch.setattr(FollowedIndex, "rebuild", no_rebuild)
    with Collection.open(db) as collection:
        assert collection.search_many(list(queries), k=10) == before
        assert isinstance(approximate_index(collection), AnnIndex)
        # Another writer adds and removes images: searches follow without a rebuild.
        with Collection.open(db) as writer:
            write(writer, 5000, vectors[:1] * -1)  # an image unlike any other
            writer.store.remove(["/photos/000003.jpg"])
        (hit,) = collection.search_many([vectors[0] * -1], k=1)[0]
        assert hit.path == "/photos/005000.jpg"
        found = collection.search_many([vectors[3]], k=5)[0]
        assert "/photos/000003.jpg" not in {r.path for r in found}


def test_torn_or_foreign_index_file_is_rebuilt(tmp_path: Path, small_threshold: None) -> None:
    db = tmp_path / "c.db"
    vectors, _ = vectors_like_images(1200)
    with Collection.open(db) as collection:
        write(collection, 0, vectors)
        collection.set_index("hnsw")
        header_path = persistent_index.path_for(collection.store)
    header = json.loads(header_path.read_text())
    assert header["kind"] == "hnsw" and header["count"] == 1200
    data = tmp_path / header["index_file"]
    torn = data.read_bytes()[: data.stat().st_size // 2]  # a crash mid-write
    data.write_bytes(torn)
    with Collection.open(db) as collection:
        (hit,) = collection.search_many([vectors[7]], k=1)[0]
        assert hit.path == "/photos/000007.jpg"
        followed = collection.snapshots.followed()
        assert followed is not None and followed.build_seconds is not None  # rebuilt
        collection.sync_index()
    assert json.loads(header_path.read_text())["index_file"] != header["index_file"]
    assert ann_index.load(header_path) is not None  # the rebuilt index was saved whole

    # The index file of another collection, copied beside a new store of the same name.
    other = tmp_path / "other"
    other.mkdir()
    for f in tmp_path.glob("c.db.ann*"):
        shutil.copy(f, other / f.name)
    with Collection.open(other / "c.db") as collection:
        write(collection, 0, vectors[::-1].copy())
        collection.set_index("hnsw")
        (hit,) = collection.search_many([vectors[7]], k=1)[0]
        assert hit.path == f"/photos/{1199 - 7:06}.jpg"


def test_category_filter_inside_the_index(tmp_path: Path, small_threshold: None) -> None:
    vectors, labels = vectors_like_images(1500)
    with Collection.open(tmp_path / "c.db") as collection:
        write(collection, 0, vectors)
        collection.set_labels({f"/photos/{i:06}.jpg": f"kind{labels[i]}" for i in range(1500)})
        assert collection.index_kind() == config.ANN_KIND
        queries, query_labels = vectors_like_images(10, seed=3)
        outcomes = collection.search_detailed(list(queries), k=10, by_category=True)
        for outcome, label in zip(outcomes, query_labels, strict=True):
            assert outcome.searched == [f"kind{label}"]
            assert {r.category for r in outcome.results} == {f"kind{label}"}
            assert len(outcome.results) == 10
        # Query expansion reads the neighbours' vectors from the store.
        expanded = collection.search_many(list(queries[:2]), k=5, expand=2)
        assert all(len(r) == 5 for r in expanded)


def test_cli_index_choice_exact_search_and_info(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.conftest import make_image

    folder = tmp_path / "img"
    for i in range(6):
        make_image(folder / f"{i}.jpg", i)
    db = str(tmp_path / "c.db")
    assert main(["index", str(folder), "--db", db, "--index", "hnsw"]) == 0
    assert main(["info", "--db", db, "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    index = json.loads(lines[-1])["index"]
    assert index["kind"] == "hnsw" and index["setting"] == "hnsw" and index["images"] == 6
    query = str(folder / "2.jpg")
    assert main(["search", query, "--db", db, "--json", "-k", "3", "--exact"]) == 0
    exact = json.loads(capsys.readouterr().out)
    assert main(["search", query, "--db", db, "--json", "-k", "3"]) == 0
    approximate = json.loads(capsys.readouterr().out)
    assert [r["path"] for r in exact["results"]] == [r["path"] for r in approximate["results"]]
    assert main(["index", str(folder), "--db", db, "--index", "exact"]) == 0
    assert not Path(db + ".ann").exists()
    assert main(["info", "--db", db]) == 0
    assert "search index: exact (setting exact)" in capsys.readouterr().out


@pytest.mark.parametrize("auto", [False, True])
def test_large_collections_cluster_a_sample_then_assign_in_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, auto: bool
) -> None:
    monkeypatch.setattr(config, "CLUSTER_SAMPLE", 400)
    vectors, labels = vectors_like_images(1200, seed=4)
    with Collection.open(tmp_path / "c.db") as collection:
        write(collection, 0, vectors)
        collection.set_labels({f"/photos/{i:06}.jpg": f"kind{labels[i]}" for i in range(1200)})
        report = collection.cluster(CENTRES, auto=auto, min_cluster_size=10)
        assert report.images == 1200 and sum(report.sizes.values()) == 1200
        assert collection.clusters() == report.sizes  # every image got a cluster (or noise)
        assert report.quality is not None and report.quality.purity > 0.9
        assert report.noise < (840 if auto else 1)  # HDBSCAN leaves noisy images out


class HeldRebuilds:
    """Holds background rebuilds after they have read the store, until released: what is
    written meanwhile must be caught up when the new index is swapped in."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.built = threading.Event()
        self.release = threading.Event()
        real = FollowedIndex._build

        def build(index: FollowedIndex, target: Target):  # type: ignore[no-untyped-def]
            result = real(index, target)
            if threading.current_thread().name.startswith("rebuild-"):
                self.built.set()
                assert self.release.wait(60)
            return result

        monkeypatch.setattr(FollowedIndex, "_build", build)


def test_rebuild_for_tombstones_runs_in_the_background(
    tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c.db"
    vectors, _ = vectors_like_images(1200)
    with Collection.open(db) as collection:
        write(collection, 0, vectors)
        collection.set_index("hnsw")  # the kind that keeps tombstones
        collection.refresh_models()
        collection.sync_index()
        followed = collection.snapshots.followed()
        assert followed is not None and collection.index_kind() == "hnsw"
        held = HeldRebuilds(monkeypatch)
        # 400 images replaced by new versions: 400 tombstones in 1600 graph positions.
        updated, _ = vectors_like_images(400, seed=5)
        write(collection, 0, updated)
        collection.sync_index()  # the writer starts the rebuild and returns at once
        assert held.built.wait(60)
        old = approximate_index(collection)
        assert isinstance(old, AnnIndex) and old.positions == 1600 and old.needs_rebuild
        assert collection.index_info()["rebuilding"]
        # Writes and searches go on against the current index while the rebuild runs.
        write(collection, 5000, vectors[:1] * -1)
        collection.remove(["/photos/000900.jpg"])
        (hit,) = collection.search_many([vectors[0] * -1], k=1)[0]
        assert hit.path == "/photos/005000.jpg"
        (hit,) = collection.search_many([updated[10]], k=1)[0]
        assert hit.path == "/photos/000010.jpg"
        assert approximate_index(collection) is old
        held.release.set()
        followed.wait_for_rebuild()
        new = approximate_index(collection)
        assert new is not old and isinstance(new, AnnIndex)
        assert len(new) == 1200 and new.positions < 1210  # tombstones gone
        (hit,) = collection.search_many([vectors[0] * -1], k=1)[0]  # caught up
        assert hit.path == "/photos/005000.jpg"
        found = collection.search_many([vectors[900]], k=5)[0]
        assert "/photos/000900.jpg" not in {r.path for r in found}
        queries, _ = vectors_like_images(20, seed=1)
        assert recall_at_10(collection, queries) >= 0.9

    def no_rebuild(self: FollowedIndex) -> None:
        raise AssertionError("the rebuilt index should have been saved")

    monkeypatch.setattr(FollowedIndex, "rebuild", no_rebuild)
    with Collection.open(db) as collection:  # a new process loads the rebuilt index
        index = approximate_index(collection)
        assert isinstance(index, AnnIndex) and index.positions < 1210
        (hit,) = collection.search_many([vectors[0] * -1], k=1)[0]
        assert hit.path == "/photos/005000.jpg"


def test_codec_refit_rebuilds_in_the_background(
    tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c.db"
    vectors, _ = vectors_like_images(1200)
    with Collection.open(db) as collection:
        write(collection, 0, vectors)
        collection.refresh_models()
        collection.sync_index()
        followed = collection.snapshots.followed()
        assert followed is not None and collection.index().dims == 256  # type: ignore[attr-defined]
        held = HeldRebuilds(monkeypatch)
        collection.set_compression(128)
        collection.sync_index()
        assert held.built.wait(60)
        # Until the new index is ready, queries go through the codec of the index held.
        snapshot = collection.snapshot()
        assert snapshot.codec.dims == 256 and snapshot.index.dims == 256  # type: ignore[attr-defined]
        (hit,) = collection.search_many([vectors[7]], k=1)[0]
        assert hit.path == "/photos/000007.jpg"
        held.release.set()
        followed.wait_for_rebuild()
        snapshot = collection.snapshot()
        assert snapshot.codec.dims == 128 and snapshot.index.dims == 128  # type: ignore[attr-defined]
        (hit,) = collection.search_many([vectors[7]], k=1)[0]
        assert hit.path == "/photos/000007.jpg"


def test_reader_searches_an_index_of_an_earlier_codec_without_rebuilding(
    tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = tmp_path / "c.db"
    vectors, _ = vectors_like_images(1200)
    with Collection.open(db) as collection:
        write(collection, 0, vectors)
        collection.refresh_models()
        collection.sync_index()
    with Collection.open(db) as collection:  # the codec refitted, no index rebuilt yet
        fitting.set_codec(collection.store, {"dims": 128, "whiten": False})
        fitting.refresh(collection.store)

    def no_rebuild(self: FollowedIndex) -> None:
        raise AssertionError("a reader should search the saved index with its own codec")

    monkeypatch.setattr(FollowedIndex, "rebuild", no_rebuild)
    with Collection.open(db) as collection:
        (hit,) = collection.search_many([vectors[7]], k=1)[0]
        assert hit.path == "/photos/000007.jpg"
        assert collection.snapshot().codec.dims == 256  # type: ignore[attr-defined]
        followed = collection.snapshots.followed()
        kind = config.ANN_KIND
        assert followed is not None and followed.rebuild_reason() == f"{kind}:pca2 -> {kind}:pca4"


def test_writers_save_the_index_now_and_then_and_when_closing(
    tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A change is searchable at once, but the index file (the whole index) is not rewritten
    for every upload: a process that opens the collection meanwhile loads the last save and
    catches up from its cursor (no rebuild); closing saves what is left."""
    db = tmp_path / "c.db"
    vectors, _ = vectors_like_images(1200)
    odd = vectors[:1] * -1  # an image unlike any other
    with Collection.open(db) as writer:
        index_file = persistent_index.path_for(writer.store)
        write(writer, 0, vectors)
        writer.refresh_models()
        writer.sync_index()
        saved = index_file.read_bytes()  # the header, naming the data files of this save
        write(writer, 5000, odd)
        writer.sync_index()
        (hit,) = writer.search_many([odd[0]], k=1)[0]
        assert hit.path == "/photos/005000.jpg"
        assert index_file.read_bytes() == saved  # within ANN_SAVE_SECONDS: not written again

        def no_rebuild(self: FollowedIndex) -> None:
            raise AssertionError("the saved index should have been loaded and caught up")

        with monkeypatch.context() as patch:
            patch.setattr(FollowedIndex, "rebuild", no_rebuild)
            with Collection.open(db) as reader:  # like a process started now
                (hit,) = reader.search_many([odd[0]], k=1)[0]
                assert hit.path == "/photos/005000.jpg"
            assert index_file.read_bytes() == saved  # a reader closing saves nothing

        monkeypatch.setattr(config, "ANN_SAVE_SECONDS", 0.0)  # the interval has passed
        write(writer, 5001, odd * 0.5 + vectors[1:2])
        writer.sync_index()
        assert index_file.read_bytes() != saved
        saved = index_file.read_bytes()
        monkeypatch.setattr(config, "ANN_SAVE_SECONDS", 3600.0)
        writer.store.remove(["/photos/000003.jpg"])
        writer.sync_index()
        assert index_file.read_bytes() == saved
    assert index_file.read_bytes() != saved  # closing saved the removal
    with Collection.open(db) as again:
        assert json.loads(index_file.read_bytes())["generation"] == again.store.generation()


@pytest.mark.parametrize("setting", ["auto", "exact", "ivf", "hnsw"])
def test_every_documented_index_setting_leaves_the_collection_usable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], setting: str
) -> None:
    """``--index auto`` (documented) on a collection under the approximate threshold made every
    later command fail ("unknown index 'auto'"), ``info`` too."""
    from tests.conftest import make_image

    folder = tmp_path / "img"
    for i in range(4):
        make_image(folder / f"{i}.jpg", i)
    db = str(tmp_path / "c.db")
    assert main(["index", str(folder), "--db", db, "--index", setting]) == 0
    assert main(["info", "--db", db, "--json"]) == 0
    index = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["index"]
    assert index["setting"] == setting
    assert index["kind"] == ("exact" if setting == "auto" else setting)
    assert main(["search", str(folder / "1.jpg"), "--db", db, "--json", "-k", "2"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert len(found["results"]) == 2


def test_the_index_settings_are_one_list(tmp_path: Path) -> None:
    from lookalike.cli import build_parser
    from lookalike.index import registry

    parser = build_parser()
    index_command = parser._subparsers._group_actions[0].choices["index"]  # type: ignore[union-attr]
    (option,) = [a for a in index_command._actions if "--index" in a.option_strings]
    assert tuple(option.choices) == registry.INDEX_SETTINGS
    assert ("auto", *registry.INDEX_KINDS) == registry.INDEX_SETTINGS
    with Collection.open(tmp_path / "c.db") as collection:
        for setting in registry.INDEX_SETTINGS:
            collection.set_index(setting)  # each is accepted
        with pytest.raises(ValueError, match="unknown index"):
            collection.set_index("flat")


class CountingStore(Store):
    """The SQLite store, counting the whole-store scans (``vector_batches``) made through it."""

    scans = 0

    def vector_batches(self, batch_size: int = 20_000) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        CountingStore.scans += 1
        yield from super().vector_batches(batch_size)


def framed_photo(path: Path, seed: int) -> str:
    """A photo of an object on a plain background: border localization searches the object
    cut from it too (a second query vector, the object view)."""
    pixels = np.full((240, 320, 3), 255, dtype=np.uint8)
    pixels[60:180, 90:230] = np.random.default_rng(seed).integers(0, 256, (120, 140, 3))
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return str(path)


def test_search_exact_scans_the_store_once_for_all_queries(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``search --exact`` read the whole store once per query (and once more per object view):
    50 queries on a million images read over 200 GB. Now one scan serves every query of the
    call, with the results of one scan per query."""
    from lookalike.store.registry import register_store
    from tests.conftest import make_image

    register_store("counting", lambda target, create: CountingStore(target.split("://", 1)[1]))
    folder = tmp_path / "img"
    for i in range(12):
        make_image(folder / f"{i}.jpg", i)
    db = f"counting://{tmp_path / 'c.db'}"
    assert main(["index", str(folder), "--db", db, "--index", "hnsw"]) == 0
    queries = [str(folder / f"{i}.jpg") for i in (1, 4, 7, 10)]  # indexed: stored vectors
    queries += [framed_photo(tmp_path / "q" / f"{i}.jpg", 50 + i) for i in range(2)]
    queries.append(str(tmp_path / "missing.jpg"))  # not an image: its error, the rest go on
    capsys.readouterr()

    def search(query_files: list[str], *options: str) -> tuple[list[dict[str, object]], int]:
        CountingStore.scans = 0
        code = main(["search", *query_files, "--db", db, "--json", "-k", "5", *options])
        assert code == (1 if str(tmp_path / "missing.jpg") in query_files else 0)
        lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        return lines, CountingStore.scans

    together, scans = search(queries[:-1], "--exact")
    assert scans == 1
    with_error, scans = search(queries, "--exact")
    assert with_error[-1]["error"] and with_error[-1]["results"] == []
    assert with_error[:-1] == together
    assert scans <= 1 + int(np.ceil(np.log2(len(queries))))  # halved until it is alone
    one_by_one = []
    for query in queries[:-1]:
        (line,), scans = search([query], "--exact")
        assert scans == 1
        one_by_one.append(line)
    assert [[r["id"] for r in line["results"]] for line in together] == [
        [r["id"] for r in line["results"]] for line in one_by_one
    ]
    for a, b in zip(together, one_by_one, strict=True):
        assert np.allclose([r["score"] for r in a["results"]], [r["score"] for r in b["results"]])
    assert sum("query_box" in line for line in together) == 2  # the framed photos' objects
    expanded, scans = search(queries[:-1], "--exact", "--expand", "2")
    assert scans == 2  # the expanded queries need the first results: a second scan
    assert all(len(line["results"]) == 5 for line in expanded)
    approximate, scans = search(queries[:-1])
    assert scans == 0  # the approximate index, loaded from its file
    assert [line["results"][0]["id"] for line in approximate] == [
        line["results"][0]["id"] for line in one_by_one
    ]


def test_an_index_of_the_former_default_kind_keeps_serving_until_rebuilt(
    tmp_path: Path, small_threshold: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A collection saved while `auto` meant HNSW opens under the IVF default: its saved
    index is searched (refined) as it is, and a writer rebuilds it as IVF in the background."""
    db = tmp_path / "c.db"
    vectors, _ = vectors_like_images(1200)
    monkeypatch.setattr(config, "ANN_KIND", "hnsw")
    with Collection.open(db) as collection:
        write(collection, 0, vectors)
        collection.refresh_models()
        collection.sync_index()
        assert approximate_index(collection).kind == "hnsw"
    monkeypatch.setattr(config, "ANN_KIND", "ivf")

    def no_rebuild(self: FollowedIndex) -> None:
        raise AssertionError("the saved index should have been loaded")

    with monkeypatch.context() as patched:
        patched.setattr(FollowedIndex, "rebuild", no_rebuild)
        with Collection.open(db) as reader:
            assert reader.index_kind() == "ivf"
            assert approximate_index(reader).kind == "hnsw"  # the saved one, serving
            (hit,) = reader.search_many([vectors[7]], k=1)[0]
            assert hit.path == "/photos/000007.jpg"
            followed = reader.snapshots.followed()
            assert followed is not None and followed.rebuild_reason() is not None
            reader.sync_index()  # a writer: the rebuild as IVF starts in the background
            followed.wait_for_rebuild()
            assert approximate_index(reader).kind == "ivf"
            (hit,) = reader.search_many([vectors[7]], k=1)[0]
            assert hit.path == "/photos/000007.jpg"
