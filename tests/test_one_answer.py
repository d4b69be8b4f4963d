"""One answer through every door: the same query gets the same results, in the same order,
with the same scores, from the CLI, the Python API, HTTP (batched uploads and the direct
"more like this"), and ``eval``, on SQLite and on PostgreSQL (issue 22)."""

from __future__ import annotations

import contextlib
import csv
import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageDraw

from lookalike import Collection, Region, Text
from lookalike.cli import main
from lookalike.search.engine import QueryOutcome
from lookalike.service import ServiceSettings, create_app
from lookalike.store.postgres import split_uri
from tests.conftest import SAMPLE

# Every test here reads the `worlds` fixture, which starts PostgreSQL (asked for lazily, so
# conftest's marking by fixture cannot see it).
pytestmark = pytest.mark.integration

K = 5
BOX = (0.2, 0.15, 0.8, 0.85)
#: Search modes and the flags each door takes for them.
MODES = {
    "plain": {"cli": [], "api": {}, "http": {}, "eval": "model=lite0"},
    "by_category": {
        "cli": ["--by-category"],
        "api": {"by_category": True},
        "http": {"by_category": True},
        "eval": "bycat=1",
    },
    "rerank": {
        "cli": ["--rerank"],
        "api": {"rerank": True},
        "http": {"rerank": True},
        "eval": "rerank=1",
    },
}


@dataclass(frozen=True)
class Answer:
    """What a door answered for one query: result ids (paths across stores), scores, and
    where the object was found in the query photo."""

    ids: list[int]
    paths: list[str]
    scores: list[float]
    query_box: list[float] | None = None


def framed_on_wall(photo: Path, out: Path) -> Path:
    """A framed print of ``photo`` hung on a big plain wall, photographed straight on."""
    picture = Image.open(photo).convert("RGB").resize((300, 220))
    wall = Image.new("RGB", (900, 700), (214, 206, 190))
    draw = ImageDraw.Draw(wall)
    draw.rectangle((280, 220, 620, 480), fill=(40, 30, 25))  # the frame
    wall.paste(picture, (300, 240))
    wall.save(out, "JPEG", quality=92)
    return out


@dataclass(frozen=True)
class World:
    db: str
    photos: Path
    client: TestClient
    name: str
    #: query label -> (file searched, the indexed image it shows, region or None)
    uploads: dict[str, tuple[Path, Path, tuple[float, float, float, float] | None]]
    #: query label -> (an indexed file, region or None): "more like this"
    indexed: dict[str, tuple[Path, tuple[float, float, float, float] | None]]


def _queries(base: Path, photos: Path) -> tuple[dict, dict]:
    queries = base / "queries"
    queries.mkdir()
    clean = SAMPLE / "queries" / "query_panda.jpg"
    cup = photos / "cup" / "image_0004.jpg"
    flipped = queries / "cup_flipped.jpg"
    Image.open(cup).convert("RGB").transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(flipped)
    sunflower = photos / "sunflower" / "image_0003.jpg"
    wall = framed_on_wall(sunflower, queries / "sunflower_on_wall.jpg")
    airplane = photos / "airplanes" / "image_0005.jpg"
    wall2 = framed_on_wall(airplane, queries / "airplane_on_wall.jpg")
    uploads = {
        "clean": (clean, photos / "panda" / "image_0002.jpg", None),
        "clean_flipped": (flipped, cup, None),
        "wall": (wall, sunflower, None),
        "wall_airplane": (wall2, airplane, None),
        "wall_region": (wall, sunflower, BOX),
    }
    indexed = {
        "indexed": (photos / "chair" / "image_0003.jpg", None),
        "indexed_region": (photos / "starfish" / "image_0004.jpg", (0.1, 0.1, 0.7, 0.9)),
    }
    return uploads, indexed


@pytest.fixture(scope="module")
def worlds(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, World]]:
    """One labelled collection of the sample photos in each store, served over HTTP."""
    built: dict[str, World] = {}
    with contextlib.ExitStack() as stack:
        for store in ("sqlite", "postgres"):
            base = tmp_path_factory.mktemp(f"doors-{store}")
            photos = base / "photos"
            shutil.copytree(SAMPLE / "collection", photos)
            if store == "sqlite":
                db, name = str(base / "doors.db"), "doors"
            else:
                db = f"{request.getfixturevalue('postgres_server')}#doors"
                name = split_uri(db)[1]
            index = ["index", str(photos), "--db", db, "--categories-from-folders", "--json"]
            assert main(index) == 0
            uploads, indexed = _queries(base, photos)
            settings = ServiceSettings(collections_dir=base / "collections", db=db)
            client = stack.enter_context(TestClient(create_app(settings)))
            built[store] = World(db, photos, client, name, uploads, indexed)
        yield built


def _box_text(box: tuple[float, ...]) -> str:
    return ",".join(str(v) for v in box)


def _from_dicts(results: list[dict], query_box: list[float] | None) -> Answer:
    return Answer(
        [r["id"] for r in results],
        [r["path"] for r in results],
        [r["score"] for r in results],
        query_box,
    )


def cli_answers(
    world: World, capsys: pytest.CaptureFixture[str], mode: str, queries: dict
) -> dict[str, Answer]:
    out: dict[str, Answer] = {}
    for label, (path, *rest) in queries.items():
        box = rest[-1]
        args = ["search", str(path), "--db", world.db, "-k", str(K), "--json"]
        args += MODES[mode]["cli"] + ([] if box is None else ["--box", _box_text(box)])
        capsys.readouterr()
        assert main(args) == 0
        line = json.loads(capsys.readouterr().out)
        out[label] = _from_dicts(line["results"], line.get("query_box"))
    return out


def _answer_of(outcome: QueryOutcome) -> Answer:
    """What the Python API answered for one query."""
    box = outcome.query_box
    return Answer(
        [r.id for r in outcome.results],
        [r.path for r in outcome.results],
        [r.score for r in outcome.results],
        None if box is None else [round(v, 4) for v in box],
    )


def api_answers(world: World, mode: str, queries: dict) -> dict[str, Answer]:
    with Collection.open(world.db, create=False) as collection:
        asked = [
            str(path) if rest[-1] is None else Region(str(path), rest[-1])
            for path, *rest in queries.values()
        ]
        outcomes = collection.search_detailed(asked, k=K, **MODES[mode]["api"])
    return {label: _answer_of(o) for label, o in zip(queries, outcomes, strict=True)}


def http_batched(world: World, mode: str) -> dict[str, Answer]:
    out: dict[str, Answer] = {}
    for label, (path, _, box) in world.uploads.items():
        params: dict[str, object] = {"k": K, **MODES[mode]["http"]}
        if box is not None:
            params["box"] = _box_text(box)
        response = world.client.post(
            f"/collections/{world.name}/search",
            params=params,
            files={"file": (path.name, path.read_bytes())},
        )
        assert response.status_code == 200, response.text
        body = response.json()
        box_found = body["query_box"]
        out[label] = _from_dicts(
            body["results"], None if box_found is None else [round(v, 4) for v in box_found]
        )
    return out


def http_direct(world: World, mode: str) -> dict[str, Answer]:
    with Collection.open(world.db, create=False) as collection:
        ids = {
            label: collection.store.lookup(str(path)) for label, (path, _) in world.indexed.items()
        }
    out: dict[str, Answer] = {}
    for label, (_, box) in world.indexed.items():
        found = ids[label]
        assert found is not None
        params: dict[str, object] = {"k": K, **MODES[mode]["http"]}
        if box is not None:
            params["box"] = _box_text(box)
        response = world.client.get(
            f"/collections/{world.name}/images/{found[0]}/similar", params=params
        )
        assert response.status_code == 200, response.text
        out[label] = _from_dicts(response.json()["results"], None)
    return out


def eval_answers(
    world: World, capsys: pytest.CaptureFixture[str], tmp_path: Path, mode: str
) -> dict[str, Answer]:
    """``lookalike eval --db DB --queries Q.csv --per-query OUT``: every query, each with the
    indexed image it shows as its source."""
    table = tmp_path / "queries.csv"
    other = world.photos / "panda" / "image_0003.jpg"  # an indexed query's "source"
    rows = [(path, source, label, box) for label, (path, source, box) in world.uploads.items()]
    rows += [(path, other, label, box) for label, (path, box) in world.indexed.items()]
    with table.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_path", "source_path", "kind", "box"])
        for path, source, label, box in rows:
            writer.writerow([path, source, label, "" if box is None else _box_text(box)])
    out_file = tmp_path / f"per-query-{mode}.jsonl"
    capsys.readouterr()
    args = ["eval", "--db", world.db, "--queries", str(table), "--per-query", str(out_file)]
    code = main([*args, "-k", str(K), "--json", "--compare", MODES[mode]["eval"]])
    assert code == 0, capsys.readouterr().err
    out: dict[str, Answer] = {}
    for line in map(json.loads, out_file.read_text().splitlines()):
        out[line["kind"]] = _from_dicts(line["results"], line.get("query_box"))
    return out


def assert_same(expected: dict[str, Answer], found: dict[str, Answer], door: str) -> None:
    for label, want in expected.items():
        got = found[label]
        where = f"{door}, {label}"
        assert got.ids == want.ids, where
        assert got.scores == pytest.approx(want.scores, abs=1e-4), where
        if got.query_box is not None or door != "http direct":
            assert got.query_box == want.query_box, where


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_every_door_gives_the_same_answer(
    worlds: dict[str, World],
    store: str,
    mode: str,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    world = worlds[store]
    uploads = cli_answers(world, capsys, mode, world.uploads)
    indexed = cli_answers(world, capsys, mode, world.indexed)
    assert all(len(a.ids) >= K - 1 for a in (*uploads.values(), *indexed.values()))
    # the framed photos were localized: the object's box comes back
    assert uploads["wall"].query_box is not None
    assert_same(uploads, api_answers(world, mode, world.uploads), "python")
    assert_same(indexed, api_answers(world, mode, world.indexed), "python")
    assert_same(uploads, http_batched(world, mode), "http batched")
    assert_same(indexed, http_direct(world, mode), "http direct")
    assert_same({**uploads, **indexed}, eval_answers(world, capsys, tmp_path, mode), "eval")


@pytest.mark.parametrize("mode", list(MODES))
def test_sqlite_and_postgres_give_the_same_answer(
    worlds: dict[str, World], mode: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """The same photos, labels and queries in each store: the same images, order, scores."""
    answers = {}
    for store, world in worlds.items():
        queries = {**world.uploads, **world.indexed}
        found = cli_answers(world, capsys, mode, queries)
        answers[store] = {
            label: (
                [str(Path(p).relative_to(world.photos)) for p in a.paths],
                a.scores,
                a.query_box,
            )
            for label, a in found.items()
        }
    for label, (paths, scores, query_box) in answers["sqlite"].items():
        got_paths, got_scores, got_box = answers["postgres"][label]
        assert got_paths == paths, label
        assert got_scores == pytest.approx(scores, abs=1e-4), label
        assert got_box == query_box, label


#: Queries of words (issue 21): label -> (words, match, photo searched with them or None).
WORDS = {
    "label": ("starfish", "all", None),
    "imagenet": ("daisy", "all", None),
    "any": ("chair, daisy", "any", None),
    "all": ("cup + starfish", "all", None),
    "photo": ("sunflower", "all", "wall"),
}


def _words_photo(world: World, photo: str | None) -> Path | None:
    return None if photo is None else world.uploads[photo][0]


def cli_words(world: World, capsys: pytest.CaptureFixture[str]) -> dict[str, Answer]:
    out: dict[str, Answer] = {}
    for label, (words, match, photo) in WORDS.items():
        path = _words_photo(world, photo)
        args = ["search", "--text", words, "--db", world.db, "-k", str(K), "--json"]
        args += (["--any"] if match == "any" else []) + ([] if path is None else [str(path)])
        capsys.readouterr()
        assert main(args) == 0
        line = json.loads(capsys.readouterr().out)
        out[label] = _from_dicts(line["results"], line.get("query_box"))
    return out


def api_words(world: World) -> dict[str, Answer]:
    with Collection.open(world.db, create=False) as collection:
        asked = [
            Text(words, match, like=None if photo is None else str(_words_photo(world, photo)))  # type: ignore[arg-type]
            for words, match, photo in WORDS.values()
        ]
        outcomes = collection.search_detailed(asked, k=K)
    return {label: _answer_of(o) for label, o in zip(WORDS, outcomes, strict=True)}


def http_words(world: World) -> dict[str, Answer]:
    out: dict[str, Answer] = {}
    for label, (words, match, photo) in WORDS.items():
        path = _words_photo(world, photo)
        files = None if path is None else {"file": (path.name, path.read_bytes())}
        response = world.client.post(
            f"/collections/{world.name}/search",
            params={"k": K, "text": words, "match": match},
            files=files,
        )
        assert response.status_code == 200, response.text
        body = response.json()
        box_found = body["query_box"]
        out[label] = _from_dicts(
            body["results"], None if box_found is None else [round(v, 4) for v in box_found]
        )
    return out


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_words_give_the_same_answer_through_every_door(
    worlds: dict[str, World], store: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Words alone, several combined, and words with a photo: the CLI, the Python API and
    HTTP (the batcher) agree. (``eval`` takes photo queries only.)"""
    world = worlds[store]
    expected = cli_words(world, capsys)
    assert all(len(a.ids) == K for a in expected.values())
    assert expected["photo"].query_box is not None  # the photo was localized as alone
    assert_same(expected, api_words(world), "python")
    assert_same(expected, http_words(world), "http batched")


def test_words_give_the_same_answer_in_sqlite_and_postgres(
    worlds: dict[str, World], capsys: pytest.CaptureFixture[str]
) -> None:
    answers = {}
    for store, world in worlds.items():
        answers[store] = {
            label: ([str(Path(p).relative_to(world.photos)) for p in a.paths], a.scores)
            for label, a in cli_words(world, capsys).items()
        }
    for label, (paths, scores) in answers["sqlite"].items():
        got_paths, got_scores = answers["postgres"][label]
        assert got_paths == paths, label
        assert got_scores == pytest.approx(scores, abs=1e-4), label
