"""Retrieval metrics on hand-checked examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.evaluate import average_precisions, leave_one_out, read_labels


def test_average_precision_by_hand() -> None:
    # relevant at ranks 1 and 3 of 4, two relevant in all: AP = (1/1 + 2/3) / 2
    relevant = np.array([[True, False, True, False]])
    assert average_precisions(relevant, np.array([2]))[0] == pytest.approx((1 + 2 / 3) / 2)
    # a relevant item never ranked still counts: AP = (1/1) / 2
    assert average_precisions(np.array([[True, False]]), np.array([2]))[0] == pytest.approx(0.5)


def test_leave_one_out_perfect_and_distractors() -> None:
    vectors = np.array([[1, 0], [1, 0], [0, 1], [0, 1], [0.6, 0.8]], dtype=np.float32)
    labels = ["a", "a", "b", "b", "noise"]
    scores = leave_one_out(vectors, labels, distractors=frozenset({"noise"}))
    assert scores.queries == 4 and scores.database == 5
    assert scores.top1_accuracy == 1.0
    assert scores.mean_average_precision == pytest.approx(1.0)
    # p@10 counts the 10 slots: only 1 relevant neighbour exists
    assert scores.precision_at_10 == pytest.approx(0.1)


def test_leave_one_out_detects_bad_ranking() -> None:
    vectors = np.array([[1, 0], [0, 1], [0.9, 0.1], [0.1, 0.9]], dtype=np.float32)
    scores = leave_one_out(vectors, ["a", "a", "b", "b"])
    assert scores.top1_accuracy == 0.0
    # the a's find their partner at rank 3 (AP 1/3), the b's at rank 2 (AP 1/2)
    assert scores.mean_average_precision == pytest.approx((1 / 3 + 1 / 3 + 1 / 2 + 1 / 2) / 4)


def test_read_labels_from_csv_and_folders(tmp_path: Path) -> None:
    (tmp_path / "x" / "cat").mkdir(parents=True)
    (tmp_path / "x" / "cat" / "1.jpg").write_bytes(b"")
    (tmp_path / "labels.csv").write_text("path,class_name\nx/cat/1.jpg,feline\n")
    assert read_labels(tmp_path, tmp_path / "labels.csv") == {
        str(tmp_path / "x" / "cat" / "1.jpg"): "feline"
    }
    assert read_labels(tmp_path / "x") == {str(tmp_path / "x" / "cat" / "1.jpg"): "cat"}
