"""Search by words (issue 21): matching words to the vocabulary (ImageNet concepts, the
collection's labels), unknown words, combining several, words with a photo, and the score,
on SQLite and PostgreSQL, from the CLI, the Python API and HTTP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from lookalike import Collection, Text, UnknownWords, config
from lookalike.cli import main
from lookalike.encode.imagenet import head_weights, imagenet_class_names
from lookalike.encode.models import builtin_spec
from lookalike.errors import InvalidInput
from lookalike.search.engine import SearchResult
from lookalike.search.words import Vocabulary
from lookalike.service import ServiceSettings, create_app
from tests.conftest import SAMPLE

HEAD = head_weights(builtin_spec("lite0"))


def folder(result: SearchResult) -> str:
    return Path(result.path).parent.name


@pytest.fixture(scope="module")
def vocabulary() -> Vocabulary:
    return Vocabulary.of(("cup", "sunflower"), imagenet_class_names(), HEAD)


# --- matching ------------------------------------------------------------------------------


def test_words_match_names_and_synonyms_whatever_their_case_and_spacing(
    vocabulary: Vocabulary,
) -> None:
    found = vocabulary.match("Golden_Retriever, laptop computer, soccer-ball")
    assert [[c.name for c in t.concepts] for t in found.terms] == [
        ["golden retriever"],
        ["laptop"],  # "laptop computer" is a synonym of "laptop"
        ["soccer ball"],
    ]
    assert all(c.source == "imagenet" for c in found.concepts)
    assert [c.name for c in vocabulary.match("pizzas").concepts] == ["pizza"]  # plural


def test_a_word_naming_several_concepts_finds_each(vocabulary: Vocabulary) -> None:
    (term,) = vocabulary.match("crane").terms
    assert len(term.concepts) == 2  # the bird and the machine
    assert {imagenet_class_names()[int(c.key)].split(",")[0] for c in term.concepts} == {"crane"}


def test_the_collections_own_label_wins_over_an_imagenet_concept(vocabulary: Vocabulary) -> None:
    (concept,) = vocabulary.match("Cup").concepts
    assert (concept.source, concept.key) == ("label", "cup")
    (concept,) = vocabulary.match("sunflower").concepts  # no ImageNet class of that name
    assert concept.source == "label"


def test_unknown_words_are_answered_with_the_nearest_known_names(vocabulary: Vocabulary) -> None:
    with pytest.raises(UnknownWords) as caught:
        vocabulary.match("golden retreiver, pizza, sunflowr")
    assert set(caught.value.suggestions) == {"golden retreiver", "sunflowr"}
    assert caught.value.suggestions["golden retreiver"][0] == "golden retriever"
    assert "sunflower" in caught.value.suggestions["sunflowr"]
    assert "nearest known names: golden retriever" in str(caught.value)
    assert "lookalike concepts" in str(caught.value)
    with pytest.raises(InvalidInput, match="no words"):
        vocabulary.match(" , ")
    with pytest.raises(InvalidInput, match="all or any"):
        vocabulary.match("pizza", "some")  # type: ignore[arg-type]


def test_a_model_without_a_head_knows_only_the_labels() -> None:
    labels_only = Vocabulary.of(("cup", "chair"), imagenet_class_names(), None)
    assert {c.source for c in labels_only.concepts} == {"label"}
    with pytest.raises(UnknownWords):
        labels_only.match("pizza")


# --- searching a collection ----------------------------------------------------------------


def index_sample(base: Path, db: str) -> tuple[str, Path]:
    """The 30 sample photos, without labels, in the collection ``db``."""
    photos = base / "photos"
    shutil.copytree(SAMPLE / "collection", photos)
    assert main(["index", str(photos), "--db", db, "--json"]) == 0
    return db, photos


@pytest.fixture(scope="module")
def sqlite_sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    base = tmp_path_factory.mktemp("words-sqlite")
    return index_sample(base, str(base / "words.db"))


@pytest.fixture(scope="module")
def postgres_sample(
    postgres_server: str, tmp_path_factory: pytest.TempPathFactory
) -> tuple[str, Path]:
    return index_sample(tmp_path_factory.mktemp("words-postgres"), f"{postgres_server}#words")


#: Both stores; PostgreSQL's tests are integration tests (a real server).
STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.integration)]


def sample(request: pytest.FixtureRequest, store: str) -> tuple[str, Path]:
    found: tuple[str, Path] = request.getfixturevalue(f"{store}_sample")
    return found


@pytest.mark.parametrize("store", STORES)
def test_words_find_the_images_of_their_concept_scored_as_the_module_says(
    request: pytest.FixtureRequest, store: str
) -> None:
    db, _ = sample(request, store)
    with Collection.open(db, create=False) as collection:
        (outcome,) = collection.search_detailed([Text("starfish")], k=5)
        assert outcome.concepts == ["imagenet:starfish"]
        assert outcome.weak_below == config.WEAK_WORDS
        assert [folder(r) for r in outcome.results] == ["starfish"] * 5
        scores = [r.score for r in outcome.results]
        assert scores == sorted(scores, reverse=True)
        # the score: cosine of the image and the head's row through the codec, common space
        snapshot = collection.snapshot()
        row = HEAD[imagenet_class_names().index("starfish, sea star")]
        direction = snapshot.codec.direction(row[None])[0]
        ids = np.array([r.id for r in outcome.results])
        stored = dict(zip(*collection.store.load_vectors(), strict=True))
        expected = snapshot.encode(np.stack([stored[i] for i in ids])) @ direction
        assert scores == pytest.approx(expected.tolist(), abs=2e-3)  # PostgreSQL: halfvec
        # min_score cuts on that same score
        cut = scores[2]
        (kept,) = collection.search_detailed([Text("starfish")], k=5, min_score=cut)
        assert [r.id for r in kept.results] == [r.id for r in outcome.results[:3]]


@pytest.mark.parametrize("store", STORES)
def test_several_words_combine_all_or_any(request: pytest.FixtureRequest, store: str) -> None:
    db, _ = sample(request, store)
    with Collection.open(db, create=False) as collection:
        size = len(collection)
        singles = {
            word: {r.id: r.score for r in collection.search(Text(word), k=size)}
            for word in ("starfish", "cup")
        }
        (anyone,) = collection.search_detailed([Text("starfish, cup", "any")], k=size)
        assert anyone.concepts == ["imagenet:starfish", "imagenet:cup"]
        for r in anyone.results:  # each image at its better concept
            best = max(singles["starfish"][r.id], singles["cup"][r.id])
            assert r.score == pytest.approx(best, abs=1e-5)
        top10 = {folder(r) for r in anyone.results[:10]}
        assert top10 == {"starfish", "cup"}
        both = collection.search(Text("starfish + cup", "all"), k=size)
        snapshot = collection.snapshot()
        names = imagenet_class_names()
        rows = HEAD[[names.index("starfish, sea star"), names.index("cup")]]
        units = snapshot.codec.direction(rows)
        direction = units.sum(axis=0) / np.linalg.norm(units.sum(axis=0))
        stored = dict(zip(*collection.store.load_vectors(), strict=True))
        expected = snapshot.encode(np.stack([stored[r.id] for r in both])) @ direction
        assert [r.score for r in both] == pytest.approx(expected.tolist(), abs=2e-3)
        # "all" ranks by both: its order is neither single word's
        assert [r.id for r in both] != sorted(singles["cup"], key=lambda i: -singles["cup"][i])


@pytest.mark.parametrize("store", STORES)
def test_a_photo_with_words_is_searched_among_what_the_words_find(
    request: pytest.FixtureRequest, store: str
) -> None:
    db, photos = sample(request, store)
    chair = str(photos / "chair" / "image_0003.jpg")
    with Collection.open(db, create=False) as collection:
        size = len(collection)
        plain = {r.id: r.score for r in collection.search(chair, k=size)}
        assert folder(collection.search(chair, k=1)[0]) == "chair"
        words = {r.id: r.score for r in collection.search(Text("cup"), k=size)}
        (outcome,) = collection.search_detailed([Text("cup", like=chair)], k=5)
        assert outcome.concepts == ["imagenet:cup"]
        assert outcome.weak_below == config.WEAK_MATCH  # scored as a photo query
        assert outcome.results and {folder(r) for r in outcome.results} == {"cup"}
        for r in outcome.results:
            assert r.score == pytest.approx(plain[r.id], abs=1e-5)  # the photo's cosine
            assert words[r.id] >= config.WEAK_WORDS  # among what the words find
        scores = [r.score for r in outcome.results]
        assert scores == sorted(scores, reverse=True)


def test_labels_are_words_too(tmp_path: Path, photos: Path) -> None:
    db = str(tmp_path / "labelled.db")
    assert main(["index", str(photos), "--db", db, "--categories-from-folders"]) == 0
    with Collection.open(db, create=False) as collection:
        names = {c.name for c in collection.concepts() if c.source == "label"}
        assert names == {"airplanes", "chair", "cup", "panda", "starfish", "sunflower"}
        (outcome,) = collection.search_detailed([Text("Sunflowers")], k=5)
        assert outcome.concepts == ["label:sunflower"]
        assert [folder(r) for r in outcome.results] == ["sunflower"] * 5
        (cup,) = collection.search_detailed([Text("cup")], k=5)
        assert cup.concepts == ["label:cup"]  # the label, not ImageNet's cup
        (mixed,) = collection.search_detailed([Text("chair, daisy", "any")], k=10)
        assert mixed.concepts == ["label:chair", "imagenet:daisy"]
        assert {folder(r) for r in mixed.results[:10]} == {"chair", "sunflower"}


# --- the CLI and HTTP ----------------------------------------------------------------------


def test_cli_searches_by_words_and_says_what_it_does_not_know(
    sqlite_sample: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    db, _ = sqlite_sample
    capsys.readouterr()
    assert main(["search", "--text", "starfish", "--db", db, "-k", "3", "--json"]) == 0
    line = json.loads(capsys.readouterr().out)
    assert line["concepts"] == ["imagenet:starfish"]
    assert [Path(r["path"]).parent.name for r in line["results"]] == ["starfish"] * 3
    assert all(r["weak"] == (r["score"] < config.WEAK_WORDS) for r in line["results"])
    assert main(["search", "--text", "golden retreiver", "--db", db]) == 2
    err = capsys.readouterr().err
    assert "golden retreiver" in err and "nearest known names: golden retriever" in err
    assert main(["search", "--db", db]) == 2
    assert "nothing to search for" in capsys.readouterr().err
    assert main(["concepts", "retriever", "--db", db, "--json"]) == 0
    listed = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert "golden retriever" in {c["name"] for c in listed}
    assert all("retriever" in " ".join([c["name"], *c["synonyms"]]) for c in listed)


def test_http_searches_by_words(tmp_path: Path, sqlite_sample: tuple[str, Path]) -> None:
    db, photos = sqlite_sample
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db)
    with TestClient(create_app(settings)) as client:
        name = "words"
        found = client.post(f"/collections/{name}/search", params={"text": "starfish", "k": 3})
        assert found.status_code == 200, found.text
        body = found.json()
        assert body["concepts"] == ["imagenet:starfish"]
        assert [Path(r["path"]).parent.name for r in body["results"]] == ["starfish"] * 3
        unknown = client.post(f"/collections/{name}/search", params={"text": "golden retreiver"})
        assert unknown.status_code == 422
        assert "nearest known names: golden retriever" in unknown.json()["detail"]
        nothing = client.post(f"/collections/{name}/search")
        assert nothing.status_code == 422
        chair = photos / "chair" / "image_0003.jpg"
        both = client.post(
            f"/collections/{name}/search",
            params={"text": "cup", "k": 5},
            files={"file": (chair.name, chair.read_bytes())},
        )
        assert both.status_code == 200, both.text
        assert {Path(r["path"]).parent.name for r in both.json()["results"]} == {"cup"}
        listed = client.get(f"/collections/{name}/concepts")
        assert listed.status_code == 200
        assert len(listed.json()) == 1000
        assert {
            "name": "laptop",
            "source": "imagenet",
            "synonyms": ["laptop", "laptop computer"],
        } in listed.json()


@pytest.mark.parametrize("whiten", [False, True])
def test_a_codec_turns_a_linear_score_into_a_query_vector_that_scores_as_it(whiten: bool) -> None:
    """q . transform(x) is w . (x - mean) on the kept components, over the transformed
    vector's length: the cosine that ranks as the linear score does (PCA, whitened or not,
    and centring only)."""
    from lookalike.index.pca import fit

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 16)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    w = rng.normal(size=16).astype(np.float32)
    for dims in (0, 6):
        codec = fit(vectors, dims, whiten=whiten)
        (q,) = codec.direction(w[None])
        assert np.linalg.norm(q) == pytest.approx(1.0, abs=1e-5)
        centred = vectors - codec.mean
        kept = centred @ codec.components.T * codec.scale if dims else centred
        basis = codec.components.T @ codec.components if dims else np.eye(16)
        linear = centred @ basis @ w
        cosine = codec.transform(vectors) @ q
        ratio = cosine * np.linalg.norm(kept, axis=1) / linear
        assert np.allclose(ratio, ratio[0], rtol=1e-3)  # one positive factor for every image
        assert ratio[0] > 0


def test_a_bad_word_fails_its_own_query_not_the_batch(sqlite_sample: tuple[str, Path]) -> None:
    """The query batcher describes the queries waiting together: words that name nothing
    fail their own search only, and the words of each collection are matched to its own
    vocabulary."""
    from PIL import Image

    from lookalike.search.engine import SearchOptions
    from lookalike.service.batcher import QueryBatcher, QueryOptions

    db, photos = sqlite_sample
    with Collection.open(db, create=False) as collection:
        batcher = QueryBatcher(collection.spec, collection.query_embedder(), workers=1, max_batch=8)
        try:
            big = Image.open(photos / "cup" / "image_0004.jpg").convert("RGB").resize((1600, 1200))
            options = QueryOptions(SearchOptions(k=3))
            busy = batcher.submit(collection, big, options)  # the worker is busy with it...
            chair = Image.open(photos / "chair" / "image_0003.jpg").convert("RGB")
            bad = batcher.submit(collection, Text("golden retreiver"), options)
            good = batcher.submit(collection, chair, options)  # ...these two wait together
            words = batcher.submit(collection, Text("starfish"), options)
            assert busy.result(timeout=60).results
            assert folder(good.result(timeout=60).results[0]) == "chair"
            assert [folder(r) for r in words.result(timeout=60).results] == ["starfish"] * 3
            with pytest.raises(UnknownWords):
                bad.result(timeout=60)
        finally:
            batcher.close()
