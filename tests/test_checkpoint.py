"""The torch-free checkpoint reader, on files written by torch 2.13.0 and on the real weights."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from lookalike.encode.checkpoint import CheckpointError, load_state_dict
from lookalike.encode.models import _checkpoint_path

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("name", ["tiny_legacy.pth", "tiny_zip.pth"])
def test_reads_both_torch_formats(name: str) -> None:
    state = load_state_dict(FIXTURES / name)
    base = np.arange(24, dtype=np.float32).reshape(4, 6)
    np.testing.assert_array_equal(state["weight"], base)
    np.testing.assert_array_equal(state["transposed"], base.T)  # strided view
    np.testing.assert_array_equal(state["row"], base[2])  # storage offset
    assert state["count"].shape == () and int(state["count"]) == 7
    assert state["half"].dtype == np.float16
    np.testing.assert_array_equal(state["half"], [1.5, -2.0])


def test_reads_packaged_lite0_checkpoint() -> None:
    state = load_state_dict(_checkpoint_path("efficientnet-lite0"))
    assert len(state) == 296
    assert state["_conv_stem.weight"].shape == (32, 3, 3, 3)
    assert state["_fc.weight"].shape == (1000, 1280)
    assert state["_conv_stem.weight"].dtype == np.float32
    assert np.isfinite(state["_fc.weight"]).all()


def test_refuses_code_in_pickle(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):  # type: ignore[no-untyped-def]
            import os

            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as f:
        for header in (0x1950A86A20F9469CFC6C, 1001, {}):
            pickle.dump(header, f)
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(CheckpointError, match="not allowed"):
        load_state_dict(path)


def test_truncated_checkpoint_is_an_error(tmp_path: Path) -> None:
    data = (FIXTURES / "tiny_legacy.pth").read_bytes()
    path = tmp_path / "cut.pth"
    path.write_bytes(data[: len(data) - 40])
    with pytest.raises(CheckpointError):
        load_state_dict(path)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "junk.pth"
    path.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CheckpointError):
        load_state_dict(path)
