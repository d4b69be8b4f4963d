"""Retrieval metrics on hand-checked examples."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.analysis.evaluate import average_precisions, leave_one_out, read_labels


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


def test_eval_config_parse() -> None:
    from lookalike.analysis.evaluate import EvalConfig

    config = EvalConfig.parse(
        "model=lite2,pool=gem,loc=mask,scales=160+320,pca=64,whiten=1,qe=2,bycat=1"
    )
    assert config == EvalConfig("lite2", "gem", (160, 320), "mask", 64, True, 2, True)
    assert EvalConfig.parse(config.name) == config
    with pytest.raises(ValueError):
        EvalConfig.parse("colour=blue")


def test_compare_configurations_and_plot(photos: Path, tmp_path: Path) -> None:
    from lookalike.analysis.evaluate import EvalConfig, compare, plot_precision_recall

    configs = [
        EvalConfig.parse(t) for t in ("model=lite0", "model=lite0,pca=8", "model=lite0,bycat=1")
    ]
    results = compare(photos, read_labels(photos), configs, cache_dir=tmp_path)
    assert [r.bytes_per_image for r in results] == [5120, 32, 5120]
    assert all(r.scores.queries == 30 for r in results)
    assert results[0].scores.mean_average_precision > 0.6
    # 24 training images per fold: often unsure, but it scans less than everything
    assert results[2].scanned_fraction is not None and results[2].scanned_fraction < 0.9
    assert results[2].classifier_accuracy is not None and results[2].classifier_accuracy >= 0.8
    assert len(results[0].scores.precision_at_recall) == 21
    plot_precision_recall(results, tmp_path / "pr.png", "sample")
    assert (tmp_path / "pr.png").stat().st_size > 10_000
