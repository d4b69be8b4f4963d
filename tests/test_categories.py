"""Category prediction, category-first search, PCA compression and query expansion."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from lookalike.analysis.evaluate import read_labels
from lookalike.cli import main
from lookalike.encode.models import normalize
from lookalike.index.pca import Pca, fit, is_stale
from lookalike.search.categories import CategoryModel, choose_categories, fit_classifier


def _blobs(n: int = 40, classes: int = 3, dim: int = 16) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(classes, dim)) * 4
    labels = [f"c{i % classes}" for i in range(n)]
    vectors = np.stack([centres[i % classes] + rng.normal(size=dim) for i in range(n)])
    return normalize(vectors), labels


def test_classifier_learns_and_round_trips() -> None:
    vectors, labels = _blobs()
    model = fit_classifier(vectors, labels)
    assert model.predict(vectors) == labels
    again = CategoryModel.from_bytes(model.to_bytes())
    np.testing.assert_allclose(again.predict_proba(vectors), model.predict_proba(vectors))
    two = fit_classifier(vectors[:20], ["a" if x == "c0" else "b" for x in labels[:20]])
    assert two.predict_proba(vectors[:3]).shape == (3, 2)
    with pytest.raises(ValueError):
        fit_classifier(vectors, ["same"] * len(vectors))


def test_choose_categories() -> None:
    assert choose_categories(np.array([0.9, 0.05, 0.05]), coverage=0.8) == [0]
    assert choose_categories(np.array([0.5, 0.35, 0.15]), coverage=0.8) == [0, 1]
    unsure = np.full(10, 0.1)
    assert choose_categories(unsure, coverage=0.8, max_categories=3) is None


@pytest.fixture
def labelled(photos: Path, tmp_path: Path) -> Collection:
    collection = Collection.open(tmp_path / "c.db")
    collection.add([photos])
    collection.set_labels(read_labels(photos))
    return collection


def test_category_first_search(labelled: Collection, panda_query: Path) -> None:
    assert labelled.categories() == {
        c: 5 for c in ("airplanes", "chair", "cup", "panda", "starfish", "sunflower")
    }
    assert labelled.classify(panda_query)[0][0] == "panda"
    for ranking in ("soft", "filter"):
        (outcome,) = labelled.search_detailed(
            [panda_query], k=5, by_category=True, category_ranking=ranking
        )
        assert outcome.searched == ["panda"]
        assert all(r.category == "panda" for r in outcome.results)
        assert labelled.scanned_fraction(outcome.searched) == pytest.approx(5 / 30)
    # an impossible coverage: unsure, so the filter searches the whole collection
    (unsure,) = labelled.search_detailed(
        [panda_query], k=30, by_category=True, coverage=1.1, category_ranking="filter"
    )
    assert unsure.searched is None and len(unsure.results) == 30


def test_classifier_is_retrained_when_labels_change(labelled: Collection, photos: Path) -> None:
    before = labelled.classifier()
    assert before is not None and "panda" in before.classes
    labelled.set_labels({str(p): "bear" for p in (photos / "panda").iterdir()})
    after = labelled.classifier()
    assert after is not None and "bear" in after.classes and "panda" not in after.classes


def test_unlabelled_collection_names_imagenet_classes(
    tmp_path: Path, photos: Path, panda_query: Path
) -> None:
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos / "cup"])
        name, probability = collection.classify(panda_query)[0]
    assert "giant panda" in name and probability > 0.5


def test_pca_compression(labelled: Collection, panda_query: Path) -> None:
    labelled.set_compression(8)
    pca = labelled.pca()
    assert pca is not None and pca.dims == 8
    assert labelled.index().vectors.shape == (30, 8)
    assert labelled.store.load_vectors()[1].shape == (30, 1280)  # stored full-size
    assert all("/panda/" in r.path for r in labelled.search(panda_query, k=3))
    labelled.set_compression(None)  # back to the default: centring, no reduction
    pca = labelled.pca()
    assert pca is not None and pca.dims == 0 and labelled.index().vectors.shape == (30, 1280)


def test_pca_fit_and_staleness() -> None:
    vectors, _ = _blobs(60)
    pca = fit(vectors, 4, whiten=True)
    out = pca.transform(vectors)
    assert out.shape == (60, 4)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    assert Pca.from_bytes(pca.to_bytes()).dims == 4
    assert not is_stale(pca, 64) and is_stale(pca, 70)


def test_query_expansion(labelled: Collection, panda_query: Path) -> None:
    cosine = {r.id: r.score for r in labelled.search(panda_query, k=len(labelled))}
    expanded = labelled.search_many([panda_query], k=5, expand=2)[0]
    assert all("/panda/" in r.path for r in expanded)
    # the expanded query orders the results; each scores its cosine with the query (issue 22)
    assert [r.score for r in expanded] == pytest.approx([cosine[r.id] for r in expanded])


def test_cli_categories(
    capsys: pytest.CaptureFixture[str], photos: Path, tmp_path: Path, panda_query: Path
) -> None:
    db = str(tmp_path / "c.db")
    assert main(["index", str(photos), "--db", db, "--categories-from-folders", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["categories"] == 6
    assert main(["search", str(panda_query), "--db", db, "--by-category", "--json", "-k", "3"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["searched_categories"] == ["panda"]
    assert [r["category"] for r in line["results"]] == ["panda"] * 3
    assert main(["classify", str(panda_query), "--db", db, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["predictions"][0]["category"] == "panda"
