"""Where a model runs: CUDA for fp32 models when ONNX Runtime offers it, the CPU otherwise,
chosen in one place and overridden by LOOKALIKE_PROVIDER. The sessions are real ONNX
Runtime ones; no GPU is needed (on a machine with one, the CUDA cases run for real)."""

from __future__ import annotations

import onnxruntime as ort
import pytest

from lookalike.encode.models import CPU, CUDA, Embedder, builtin_spec, choose_providers
from lookalike.errors import ModelError

WITH_GPU = ["TensorrtExecutionProvider", CUDA, CPU]


def test_auto_takes_cuda_for_fp32_only_and_keeps_the_cpu_last() -> None:
    assert choose_providers("fp32", "auto", WITH_GPU) == [CUDA, CPU]
    assert choose_providers("int8", "auto", WITH_GPU) == [CPU]
    assert choose_providers("fp32", "auto", [CPU]) == [CPU]
    assert choose_providers("fp32", "cpu", WITH_GPU) == [CPU]
    assert choose_providers("int8", "cuda", WITH_GPU) == [CUDA, CPU]  # asked for: measured


def test_cuda_asked_for_without_it_says_what_to_install() -> None:
    with pytest.raises(ModelError, match="onnxruntime-gpu"):
        choose_providers("fp32", "cuda", ["AzureExecutionProvider", CPU])
    with pytest.raises(ModelError, match="auto, cpu or cuda"):
        choose_providers("fp32", "gpu", WITH_GPU)


def test_sessions_run_where_the_choice_says(monkeypatch: pytest.MonkeyPatch) -> None:
    available = ort.get_available_providers()
    spec = builtin_spec("lite0", "fp32")
    monkeypatch.delenv("LOOKALIKE_PROVIDER", raising=False)
    assert Embedder(spec).providers == choose_providers("fp32", "auto", available)
    assert Embedder(spec.with_precision("int8")).providers == [CPU]
    monkeypatch.setenv("LOOKALIKE_PROVIDER", "cpu")
    assert Embedder(spec).providers == [CPU]
    monkeypatch.setenv("LOOKALIKE_PROVIDER", "cuda")
    if CUDA in available:
        assert Embedder(spec).providers[0] == CUDA
    else:
        with pytest.raises(ModelError, match="onnxruntime-gpu"):
            Embedder(spec)
