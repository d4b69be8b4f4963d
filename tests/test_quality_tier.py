"""The quality tier (``--model lite0+lite2``) and instance benchmarks in ``lookalike eval``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageEnhance

from lookalike import Collection
from lookalike.analysis.evaluate import EvalConfig, compare_instances, read_instance_queries
from lookalike.cli import main
from lookalike.encode.encoders import CompositeEncoder, load_encoder
from lookalike.encode.models import ModelSpec, builtin_models, builtin_name, builtin_spec
from lookalike.errors import InvalidInput, ModelError
from lookalike.image.decode import load_image

TIER = "efficientnet-lite0+efficientnet-lite2"


def test_composite_spec_names_its_parts() -> None:
    spec = builtin_spec("lite0+lite2", "fp32")
    assert spec.name == TIER and TIER in builtin_models()
    assert [(p.name, p.input_size) for p in spec.parts] == [
        ("efficientnet-lite0", 224),
        ("efficientnet-lite2", 260),
    ]
    assert all(p.precision == "fp32" and p.pooling == spec.pooling for p in spec.parts)
    assert [p.precision for p in spec.with_precision("int8").parts] == ["int8", "int8"]
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert builtin_name("efficientnet-lite0+lite2") == TIER
    assert builtin_spec("lite0").parts == ()
    assert builtin_spec("lite0+lite2").precision == "int8"  # in config.INT8_BY_DEFAULT
    for bad in ("lite0+resnet", "lite0+lite0"):
        assert builtin_name(bad) is None
        with pytest.raises(ModelError, match="unknown model"):
            builtin_spec(bad)


def _pictures(folder: Path, count: int) -> list[Path]:
    """Distinct smooth pictures (PNG, so that no decoder shortcut differs between models)."""
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        small = rng.integers(0, 256, (4, 5, 3), dtype=np.uint8)
        image = Image.fromarray(small).resize((250, 200), Image.Resampling.BICUBIC)
        paths.append(folder / f"picture_{i}.png")
        image.save(paths[-1])
    return paths


def test_tier_vector_is_the_two_models_side_by_side(tmp_path: Path) -> None:
    paths = _pictures(tmp_path / "db", 3)
    spec = builtin_spec("lite0+lite2", "fp32")
    encoder = load_encoder(spec, threads=1)
    assert isinstance(encoder, CompositeEncoder)
    assert encoder.decode_side == 260  # one decode, at the side the larger model needs
    images = [load_image(p, min_side=encoder.decode_side) for p in paths]
    tier = encoder.embed_images(images)
    lite0 = load_encoder(builtin_spec("lite0", "fp32"), threads=1).embed_images(images)
    lite2 = load_encoder(builtin_spec("lite2", "fp32"), threads=1).embed_images(images)
    assert tier.shape == (3, 2560) and tier.dtype == np.float32
    expected = np.concatenate([lite0, lite2], axis=1) / np.sqrt(2)
    np.testing.assert_allclose(tier, expected, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(tier, axis=1), 1.0, atol=1e-5)
    # the tier classifies with its first part's ImageNet head (lookalike classify)
    lite0_encoder = load_encoder(builtin_spec("lite0", "fp32"), threads=1)
    np.testing.assert_allclose(
        encoder.imagenet_probabilities(images), lite0_encoder.imagenet_probabilities(images)
    )


def test_tier_indexes_searches_and_refuses_other_models(tmp_path: Path) -> None:
    paths = _pictures(tmp_path / "db", 6)
    db = tmp_path / "tier.db"
    assert main(["index", str(tmp_path / "db"), "--db", str(db), "--model", "lite0+lite2"]) == 0
    with Collection.open(db) as collection:
        assert collection.spec.name == TIER and len(collection) == 6
        _, vectors = collection.store.load_vectors()
        assert vectors.shape == (6, 2560)
        # a brighter, cropped copy of a picture finds it first
        copy = Image.open(paths[4]).crop((10, 8, 240, 192))
        copy = ImageEnhance.Brightness(copy).enhance(1.2)
        copy.save(tmp_path / "copy.png")
        assert Path(collection.search(tmp_path / "copy.png", k=3)[0].path) == paths[4].resolve()
        precision = collection.spec.precision
    other = "fp32" if precision == "int8" else "int8"
    with pytest.raises(InvalidInput, match="never mixed"):
        Collection.open(db, model="lite0")
    with pytest.raises(InvalidInput, match="never mixed"):
        Collection.open(db, model=builtin_spec("lite0+lite2", other))  # type: ignore[arg-type]
    with Collection.open(db, model="lite0+lite2") as same:  # its own name, any precision
        assert len(same) == 6


def _instance_benchmark(tmp_path: Path) -> tuple[Path, Path, list[Path]]:
    """A database of pictures and two kinds of queries: edited copies, and pictures hung on
    a plain wall (a small picture in the middle of a grey photo)."""
    paths = _pictures(tmp_path / "db", 8)
    rows = []
    for i, path in enumerate(paths[:4]):
        picture = Image.open(path)
        copy = ImageEnhance.Contrast(picture.crop((12, 10, 238, 190))).enhance(1.3)
        copy.save(tmp_path / f"copy_{i}.png")
        wall = Image.new("RGB", (640, 480), (150, 148, 140))
        wall.paste(picture.resize((200, 160)), (220, 160))
        wall.save(tmp_path / f"wall_{i}.png")
        rows.append((f"copy_{i}.png", str(path), "copy", "pictures"))
        rows.append((f"wall_{i}.png", str(path), "wall", "pictures"))
    queries = tmp_path / "queries.csv"
    with queries.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["query_path", "source_path", "kind", "class_name"])
        writer.writerows(rows)
    listing = tmp_path / "collection.txt"
    listing.write_text("\n".join(f"db/{p.name}" for p in paths) + "\n")
    return listing, queries, paths


def test_eval_instances_through_the_search_path(tmp_path: Path) -> None:
    listing, queries_csv, _ = _instance_benchmark(tmp_path)
    queries = read_instance_queries(queries_csv)
    assert [q.kind for q in queries[:2]] == ["copy", "wall"]
    configs = [
        EvalConfig.parse(t)
        for t in ("model=lite0,qloc=none", "model=lite0,qloc=border", "model=lite0,rerank=1")
    ]
    assert configs[1].name.endswith("qloc=border")
    results = compare_instances(listing, queries, configs, cache_dir=tmp_path / "cache")
    none, border, reranked = (r.by_kind for r in results)
    assert results[2].config.name.endswith("rerank=1") and reranked["copy"][0] == 1.0
    assert set(none) == {"copy", "wall", "all"} and results[0].database == 8
    assert none["copy"][0] == border["copy"][0] == 1.0  # edited copies find their source
    assert none["wall"][2] == 4
    # the wall photos: the picture is found inside the plain wall, and never ranks lower
    assert border["wall"][0] == 1.0
    assert border["wall"][1] >= none["wall"][1]
    with pytest.raises(ValueError, match="not instance settings"):
        compare_instances(
            listing, queries, [EvalConfig.parse("heldout=1")], cache_dir=tmp_path / "cache"
        )


def test_eval_cli_instances_with_the_tier(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    listing, queries_csv, _ = _instance_benchmark(tmp_path)
    code = main(
        [
            "eval",
            str(listing),
            "--queries",
            str(queries_csv),
            "--json",
            "--compare",
            "model=lite0,pool=avg,pca=off,qloc=none",
            "model=lite0+lite2,prec=fp32",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["config"] for r in rows] == [
        "model=lite0,pool=avg,prec=int8,pca=off,qloc=none",
        "model=lite0+lite2,pool=gem",
    ]
    assert all(r["copy top1"] == 1.0 and r["all queries"] == 8 for r in rows)


def test_tier_over_http(tmp_path: Path) -> None:
    """The service creates tier collections by name and searches one given as --db."""
    from fastapi.testclient import TestClient

    from lookalike.service import ServiceSettings, create_app

    paths = _pictures(tmp_path / "db", 4)
    db = tmp_path / "tier.db"
    with Collection.open(db, model="lite0+lite2") as collection:
        collection.add([tmp_path / "db"])
    settings = ServiceSettings(collections_dir=tmp_path / "collections", db=db, roots=[tmp_path])
    with TestClient(create_app(settings)) as client:
        created = client.post("/collections", json={"name": "tier2", "model": "lite0+lite2"})
        assert created.status_code == 201 and created.json()["model"] == TIER
        bad = client.post("/collections", json={"name": "bad", "model": "lite0+nope"})
        assert bad.status_code == 422
        found = client.post(
            f"/collections/{db.stem}/search",
            params={"k": 2},
            files={"file": ("q.png", paths[2].read_bytes())},
        )
        assert found.status_code == 200, found.text
        assert Path(found.json()["results"][0]["path"]) == paths[2].resolve()
