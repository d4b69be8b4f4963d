"""A collection's model is checked when it is opened: the message says what differs."""

from __future__ import annotations

from pathlib import Path

import pytest

from lookalike.cli import main
from tests.conftest import make_image


def test_a_pooling_mismatch_says_what_differs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    photo = make_image(tmp_path / "p" / "a.jpg", seed=1)
    db = str(tmp_path / "c.db")
    assert main(["index", str(photo.parent), "--db", db]) == 0
    capsys.readouterr()
    assert main(["index", str(photo.parent), "--db", db, "--pooling", "avg"]) == 2
    err = capsys.readouterr().err
    assert "pooling gem, not avg" in err, err
