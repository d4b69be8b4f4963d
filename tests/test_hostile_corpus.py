"""`lookalike index` over the small hostile-file corpus (benchmarks/hostile_corpus.py):
no crash, every file indexed or reported with a reason, nothing modified, a quiet re-run.
The full corpus, with memory figures, is benchmarks/bench_hostile.py."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from benchmarks.hostile_corpus import make_corpus
from lookalike import Collection
from lookalike.cli import main
from lookalike.image.files import IMAGE_EXTENSIONS


def _fingerprint(folder: Path) -> dict[bytes, tuple[object, ...]]:
    found: dict[bytes, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(os.fsencode(folder)):
        for name in dirs + files:
            path = os.path.join(top, name)
            info = os.lstat(path)
            content: object = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
            if stat.S_ISREG(info.st_mode) and os.access(path, os.R_OK):
                with open(path, "rb") as file:
                    content = file.read()
            found[path] = (info.st_mode, info.st_size, info.st_mtime_ns, content)
    return found


def _considered(path: str) -> bool:
    if any(part.startswith(".") for part in Path(path).parts[1:]):
        return False
    if os.path.islink(path) and os.path.isdir(path):
        return True
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def test_index_over_the_hostile_corpus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus = tmp_path / "corpus"
    entries = make_corpus(corpus, small=True)
    assert len(entries) >= 200
    before = {**_fingerprint(corpus), **_fingerprint(tmp_path / "corpus-outside")}
    db = str(tmp_path / "c.db")

    assert main(["index", str(corpus), "--db", db, "--json"]) == 0
    out, err = capsys.readouterr()
    summary = json.loads(out)
    assert "Traceback" not in err
    reasons = {item["path"]: item["reason"] for item in summary["skipped"]}
    assert all(reasons.values())
    assert not [r for r in reasons.values() if "unexpected" in r]
    with Collection.open(db) as collection:
        states = collection.store.file_states()
    expected = {e.path for e in entries if _considered(e.path)}
    assert set(states) | set(reasons) == expected
    indexed = {p for p, s in states.items() if not s.skipped}
    assert summary["added"] == len(indexed) > 50
    assert {e.path for e in entries if e.kind == "bomb"} <= set(reasons) | indexed
    name = os.fsdecode(os.fsencode(corpus) + b"/names/bad\xff.jpg")
    assert name in indexed

    assert main(["index", str(corpus), "--db", db, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert (again["added"], again["updated"], again["removed"]) == (0, 0, 0)
    assert again["unchanged"] == len(indexed)
    assert again["unchanged"] + again["skipped_before"] == len(states)
    after = {**_fingerprint(corpus), **_fingerprint(tmp_path / "corpus-outside")}
    assert after == before
