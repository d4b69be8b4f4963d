"""The ONNX graph built without torch equals the torch reference model (fixtures made once
with torch 2.13.0 by scripts/make_torch_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lookalike.encode.checkpoint import load_state_dict
from lookalike.encode.efficientnet_lite import VARIANTS, block_specs, build_onnx
from lookalike.encode.models import Embedder, _checkpoint_path, builtin_spec

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_graph_matches_torch_reference(variant: str) -> None:
    ref = np.load(FIXTURES / f"torch_efficientnet_{variant}.npz", allow_pickle=False)
    spec = builtin_spec(variant, "fp32")  # the graph as trained (int8: tests/test_quantize.py)
    assert spec.input_size == int(ref["image_size"])
    embedder = Embedder(spec)
    pixels = (ref["input_uint8"].astype(np.float32) - 127.0) / 128.0
    embedding, logits = embedder.run(pixels, ["embedding", "logits"])
    np.testing.assert_allclose(embedding, ref["embedding"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(logits, ref["logits"], atol=1e-4, rtol=0)
    assert (logits.argmax(1) == ref["logits"].argmax(1)).all()


def test_lite0_preprocessing_is_the_tf_lite_normalisation() -> None:
    """Embedder.prepare on a 224x224 image gives exactly (x - 127) / 128."""
    from PIL import Image

    ref = np.load(FIXTURES / "torch_efficientnet_lite0.npz", allow_pickle=False)
    image = Image.fromarray(ref["input_uint8"][0].transpose(1, 2, 0))
    embedder = Embedder(builtin_spec("lite0"))
    prepared = embedder.model_input(embedder.prepare(image)[None])[0]
    expected = (ref["input_uint8"][0].astype(np.float32) - 127.0) / 128.0
    np.testing.assert_allclose(prepared, expected, atol=1e-6)


def test_block_counts_follow_compound_scaling() -> None:
    # Lite0: 1+2+2+3+3+4+1. Lite1/2: the middle five stages scaled by ceil(1.1 or 1.2 x r),
    # both giving 3+3+4+4+5; first and last stages unscaled.
    counts = {name: len(block_specs(v)) for name, v in VARIANTS.items()}
    assert counts == {"efficientnet-lite0": 16, "efficientnet-lite1": 21, "efficientnet-lite2": 21}


def test_wrong_variant_for_checkpoint_is_refused() -> None:
    state = load_state_dict(_checkpoint_path("efficientnet-lite0"))
    with pytest.raises(ValueError, match=r"blocks|match"):
        build_onnx(state, VARIANTS["efficientnet-lite2"])


def test_graph_accepts_other_input_sizes() -> None:
    """SAME_UPPER padding keeps the graph valid for any size (odd ones included)."""
    embedder = Embedder(builtin_spec("lite0"))
    for side in (97, 160, 301):
        (out,) = embedder.run(np.zeros((1, 3, side, side), np.float32), ["feature_map"])
        assert out.shape == (1, 1280, -(-side // 32), -(-side // 32))
