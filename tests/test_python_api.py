"""The library as a new user meets it: the README's example, ``~``, and clear errors."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from lookalike import Collection, DecodeError
from lookalike.errors import (
    EmptyCollectionError,
    MissingPathError,
    NoCollectionError,
    NotInCollectionError,
)
from tests.conftest import SAMPLE

README = Path(__file__).parent.parent / "README.md"


def readme_python_example() -> str:
    text = README.read_text()
    start = text.index("From Python:")
    match = re.search(r"```python\n(.*?)```", text[start:], re.S)
    assert match, "README.md has no Python example after 'From Python:'"
    return match.group(1)


def test_the_readme_example_runs_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # As in a fresh clone: run from the repository's root, whose sample photos it uses.
    clone = tmp_path / "clone"
    shutil.copytree(SAMPLE, clone / "src" / "lookalike" / "sample")
    monkeypatch.chdir(clone)
    exec(compile(readme_python_example(), str(README), "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "30 added, 0 skipped"
    hits = [line.split(maxsplit=1) for line in lines[1:6]]
    assert len(hits) == 5 and all("/panda/" in path for _, path in hits[:3]), lines
    assert all(0 < float(score) <= 1 for score, _ in hits)
    with Collection.open(clone / "catalogue.db") as catalogue:  # the example's remove worked
        assert len(catalogue) == 25


def test_add_expands_the_home_folder(
    photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    with Collection.open(tmp_path / "c.db") as collection:
        report = collection.add(["~/photos/panda"])
        assert (report.added, report.skipped) == (5, [])
        assert collection.search("~/photos/panda/image_0002.jpg", k=1)[0].score > 0
        assert collection.remove(["~/photos/panda/image_0002.jpg"]) == 1
        assert len(collection) == 4


def test_adding_a_folder_that_does_not_exist_names_it(photos: Path, tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such folder"
    with Collection.open(tmp_path / "c.db") as collection:
        with pytest.raises(MissingPathError, match=re.escape(str(missing))) as caught:
            collection.add([photos, missing])
        assert isinstance(caught.value, FileNotFoundError)
        assert len(collection) == 0  # nothing half-done


def test_searching_an_empty_collection_raises(tmp_path: Path, panda_query: Path) -> None:
    with (
        Collection.open(tmp_path / "c.db") as collection,
        pytest.raises(EmptyCollectionError, match="is empty"),
    ):
        collection.search(panda_query)


def test_k_below_one_is_refused(photos: Path, tmp_path: Path, panda_query: Path) -> None:
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos / "panda"])
        for k in (0, -1):
            with pytest.raises(ValueError, match="k must be at least 1"):
                collection.search(panda_query, k=k)


def test_removing_what_the_collection_does_not_hold_raises(photos: Path, tmp_path: Path) -> None:
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos])
        with pytest.raises(NotInCollectionError, match=r"nothing\.jpg"):
            collection.remove([photos / "cup", photos / "nothing.jpg"])
        assert len(collection) == 30  # nothing removed, not even the cups
        assert collection.remove([photos / "cup"]) == 5


def test_open_without_create_refuses_a_missing_collection(tmp_path: Path) -> None:
    where = tmp_path / "sub" / "c.db"
    with pytest.raises(NoCollectionError, match="lookalike index DIR"):
        Collection.open(where, create=False)
    assert not (tmp_path / "sub").exists()


def test_a_decode_error_names_the_file(photos: Path, tmp_path: Path) -> None:
    missing = tmp_path / "gone.jpg"
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([photos / "panda"])
        with pytest.raises(DecodeError) as caught:
            collection.search(missing)
    assert str(caught.value) == f"{missing}: file not found"
    assert caught.value.reason == "file not found"


def test_a_decode_error_of_a_name_that_is_not_utf8_can_be_printed(tmp_path: Path) -> None:
    import os

    from lookalike.image.decode import load_image

    name = os.fsdecode(b"bad\xff.jpg")
    (tmp_path / name).write_bytes(b"not an image")
    with pytest.raises(DecodeError) as caught:
        load_image(tmp_path / name)
    shown = str(caught.value)
    shown.encode("utf-8")  # printable, and JSON-encodable, whatever the name
    assert shown.endswith("bad\\xff.jpg: not a recognised image")
