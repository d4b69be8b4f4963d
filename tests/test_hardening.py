"""Hostile files and careless operators: odd names, links, FIFOs, model errors, damaged or
full collection files. Each test here failed before the fix it guards."""

from __future__ import annotations

import io
import json
import os
import shutil
import sqlite3
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lookalike import Collection
from lookalike.cli import main
from lookalike.encode.models import Embedder
from tests.conftest import make_image

BAD_NAME = b"bad\xff.jpg"  # Latin-1 "bad\xff", not UTF-8


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    """The real command, with a real UTF-8 stdout (not pytest's capture)."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", "LC_ALL": "C.UTF-8"}
    return subprocess.run(
        [sys.executable, "-m", "lookalike.cli", *args],
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="strict",  # what the command prints must be valid UTF-8
        env=env,
        timeout=300,
        check=False,
    )


def _odd_folder(tmp_path: Path) -> tuple[Path, str]:
    folder = tmp_path / "photos"
    make_image(folder / "a.jpg", seed=1)
    make_image(folder / "b.jpg", seed=2)
    odd = os.fsencode(folder) + b"/" + BAD_NAME
    shutil.copyfile(folder / "a.jpg", odd)
    with open(odd, "ab") as file:  # other bytes than a.jpg: not a duplicate
        file.write(b"\0")
    return folder, os.fsdecode(odd)


def test_a_name_that_is_not_utf8_is_indexed_searched_and_removed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder, odd = _odd_folder(tmp_path)
    db = str(tmp_path / "c.db")

    first = _cli("index", str(folder), "--db", db)
    assert first.returncode == 0, first.stderr
    assert "added 3," in first.stdout
    again = _cli("index", str(folder), "--db", db)
    assert "unchanged 3," in again.stdout and "added 0," in again.stdout

    shown = _cli("search", odd, str(folder / "b.jpg"), "--db", db, "-k", "3")
    assert shown.returncode == 0, shown.stderr
    assert "bad\\xff.jpg" in shown.stdout  # readable, escaped
    assert shown.stdout.count("\n  ") == 4  # both queries answered (each is left out)

    assert main(["search", odd, str(folder / "b.jpg"), "--db", db, "-k", "3", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["query"] for line in lines] == [odd, str(folder / "b.jpg")]
    assert odd in {hit["path"] for hit in lines[1]["results"]}  # JSON keeps the exact name
    with Collection.open(db) as collection:
        assert sorted(collection.store.file_states()) == sorted(
            [odd, str(folder / "a.jpg"), str(folder / "b.jpg")]
        )
        assert collection.remove([odd]) == 1
        assert len(collection) == 2


def test_links_fifos_and_loops_are_reported_with_a_reason(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    make_image(folder / "good.jpg", seed=1)
    (folder / "broken.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (folder / "loop.jpg").symlink_to(folder / "loop.jpg")
    os.mkfifo(folder / "pipe.jpg")
    (tmp_path / "elsewhere").mkdir()
    (folder / "more").symlink_to(tmp_path / "elsewhere")
    with Collection.open(tmp_path / "c.db") as collection:
        report = collection.add([folder])  # must not block on the FIFO
        reasons = {Path(path).name: reason for path, reason in report.skipped}
        assert report.added == 1
        assert reasons.keys() == {"broken.jpg", "loop.jpg", "pipe.jpg", "more"}
        assert "broken symbolic link" in reasons["broken.jpg"]
        assert "loop" in reasons["loop.jpg"]
        assert "FIFO" in reasons["pipe.jpg"]
        assert "folder" in reasons["more"]
        # Not remembered as bad files: reported again, and indexed once they are fixed.
        assert collection.store.skipped_files() == []
        (folder / "broken.jpg").unlink()
        make_image(folder / "broken.jpg", seed=3)
        report = collection.add([folder])
        assert report.added == 1 and len(report.skipped) == 3


def test_a_model_error_is_reported_and_retried_next_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "photos"
    for i in range(6):
        make_image(folder / f"{i}.jpg", seed=i, size=(96, 64) if i != 3 else (77, 64))
    original = Embedder.describe

    def picky(self: Embedder, images: list[Image.Image]):  # type: ignore[no-untyped-def]
        if any(image.width == 77 for image in images):
            raise RuntimeError("simulated run-time failure")
        return original(self, images)

    monkeypatch.setattr(Embedder, "describe", picky)
    with Collection.open(tmp_path / "c.db") as collection:
        report = collection.add([folder], batch_size=8)
        # The batch is retried image by image: only the one image fails.
        assert report.added == 5
        assert [(Path(p).name, r) for p, r in report.skipped] == [
            ("3.jpg", "model error: simulated run-time failure")
        ]
        assert collection.store.skipped_files() == []
        monkeypatch.setattr(Embedder, "describe", original)
        assert collection.plan([folder]).todo[0].path == str(folder / "3.jpg")
        report = collection.add([folder])
        assert (report.added, report.unchanged, report.skipped) == (1, 5, [])


def test_a_permission_fault_is_not_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chmod does not change the mtime: a remembered "permission denied" never went away."""
    folder = tmp_path / "photos"
    make_image(folder / "a.jpg", seed=1)
    real_open = open

    def denied(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(path).endswith("a.jpg"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    from lookalike.image import decode

    monkeypatch.setattr(decode, "open", denied, raising=False)
    with Collection.open(tmp_path / "c.db") as collection:
        report = collection.add([folder])
        assert report.skipped == [(str(folder / "a.jpg"), "permission denied")]
        monkeypatch.undo()
        assert collection.add([folder]).added == 1


def _jpeg_claiming(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (200, 30, 30)).save(buffer, "JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, size[1], size[0])
    return bytes(data)


def test_the_stored_size_is_the_full_size_not_the_draft_scale(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    make_image(folder / "wide.jpg", seed=1, size=(2000, 1000))
    (folder / "liar.jpg").write_bytes(_jpeg_claiming((10000, 10000)))
    with Collection.open(tmp_path / "c.db") as collection:
        collection.add([folder])
        ids, _ = collection.store.load_vectors()
        sizes = {
            Path(r.path).name: (r.width, r.height) for r in collection.store.records(ids).values()
        }
    assert sizes == {"wide.jpg": (2000, 1000), "liar.jpg": (10000, 10000)}


def _corrupt_exif_jpeg(path: Path, seed: int) -> None:
    make_image(path, seed=seed)
    with Image.open(path) as image:
        pixels = image.copy()
    exif = Image.Exif()
    exif[0x010F] = "Camera"
    buffer = io.BytesIO()
    pixels.save(buffer, "JPEG", exif=exif.tobytes())
    data = bytearray(buffer.getvalue())
    tiff = data.find(b"Exif\x00\x00") + 6
    data[tiff + 8 : tiff + 10] = b"\x50\x00" if data[tiff : tiff + 2] == b"II" else b"\x00\x50"
    path.write_bytes(bytes(data))


def test_corrupt_exif_warnings_stay_off_stderr(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    for i in range(6):
        _corrupt_exif_jpeg(folder / f"{i}.jpg", seed=i)
    with pytest.warns(UserWarning, match="Corrupt EXIF"), Image.open(folder / "0.jpg") as image:
        image.load()  # the fixture really is damaged
    result = _cli("index", str(folder), "--db", str(tmp_path / "c.db"))
    assert result.returncode == 0, result.stderr
    assert "added 6," in result.stdout
    assert "EXIF" not in result.stderr
    assert "Warning" not in result.stderr


# --- the collection file ------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["jpeg", "folder", "damaged"])
def test_a_db_that_is_no_collection_gives_an_error_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    db = tmp_path / "c.db"
    if kind == "jpeg":
        make_image(db, seed=1)
    elif kind == "folder":
        db.mkdir()
    else:
        make_image(tmp_path / "photos" / "a.jpg", seed=1)
        assert main(["index", str(tmp_path / "photos"), "--db", str(db)]) == 0
        data = bytearray(db.read_bytes())
        data[100:1024] = b"\x5a" * 924
        db.write_bytes(bytes(data))
    for command in (["info"], ["search", str(tmp_path / "q.jpg")], ["index", str(tmp_path)]):
        capsys.readouterr()
        assert main([*command, "--db", str(db)]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and str(db) in err, err


_FILL = """
import os, resource, signal, sys
from lookalike.cli import main
if sys.argv[3] == "rlimit":  # no tmpfs: the kernel's file-size limit, EFBIG instead of ENOSPC
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (600_000, 600_000))
sys.exit(main(["index", sys.argv[1], "--db", sys.argv[2], "--batch-size", "4"]))
"""


def _small_filesystem(path: Path) -> bool:
    """Mount a 2 MiB tmpfs at ``path`` if allowed (root), else False."""
    path.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.mark.parametrize("how", ["tmpfs", "rlimit"])
def test_a_full_disk_gives_an_error_line_and_keeps_what_was_committed(
    tmp_path: Path, how: str
) -> None:
    """A real full filesystem (a 2 MiB tmpfs, where mounting is allowed: root), and the
    kernel's file-size limit (RLIMIT_FSIZE: writes fail with EFBIG), which needs no rights."""
    folder = tmp_path / "photos"
    for i in range(80):
        make_image(folder / f"{i:02}.jpg", seed=i)
    with Collection.open(tmp_path / "warm.db") as warm:  # builds the model cache first
        warm.add([folder / "00.jpg"])
    disk = tmp_path / "disk"
    tmpfs = how == "tmpfs" and _small_filesystem(disk)
    if how == "tmpfs" and not tmpfs:
        pytest.skip("mounting a tmpfs needs root; the rlimit case covers the failure")
    disk.mkdir(exist_ok=True)
    try:
        db = disk / "c.db"
        # a new collection takes about 210 KB (16 KiB pages) and as much in its write-ahead
        # log, 80 vectors about 230 KB more: room for that and a few batches, not 80 vectors
        if tmpfs:
            filler = disk / "filler"
            filler.write_bytes(b"\0" * (2 * 1024 * 1024 - 700_000))
        run = subprocess.run(
            [sys.executable, "-c", _FILL, str(folder), str(db), "tmpfs" if tmpfs else "rlimit"],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert run.returncode == 2, run.stderr
        assert run.stderr.startswith("error: "), run.stderr
        assert "Traceback" not in run.stderr
        if tmpfs:
            filler.unlink()
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
        with Collection.open(db) as collection:
            done = len(collection)
            assert 0 < done < 80, "the disk should have filled part-way"
            report = collection.add([folder])
            assert (report.unchanged, report.added) == (done, 80 - done)
    finally:
        if tmpfs and subprocess.run(["umount", str(disk)], check=False).returncode:
            subprocess.run(["umount", "-l", str(disk)], check=False)  # never leave it mounted


def test_big_decoded_images_are_embedded_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch never holds several big decoded images at once (three of 100 MP: 1.4 GB)."""
    from lookalike import config

    folder = tmp_path / "photos"
    for i in range(6):
        make_image(folder / f"{i}.png", seed=i, size=(300, 200) if i % 2 else (60, 40), fmt="PNG")
    monkeypatch.setattr(config, "BATCH_IMAGE_PIXELS", 10_000, raising=False)
    batches: list[list[int]] = []
    original = Embedder.describe

    def spy(self: Embedder, images: list[Image.Image]):  # type: ignore[no-untyped-def]
        batches.append([image.width for image in images])
        return original(self, images)

    monkeypatch.setattr(Embedder, "describe", spy)
    with Collection.open(tmp_path / "c.db") as collection:
        assert collection.add([folder], batch_size=8).added == 6
    assert sorted(batches) == [[60, 60, 60], [300], [300], [300]]
