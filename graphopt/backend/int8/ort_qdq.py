"""onnxruntime's own static QDQ quantization of a float model (tests and benchmarks).

`quantize_with_onnxruntime` runs `onnxruntime.quantization.quantize_static` in QDQ format,
per-channel, uint8 activations and int8 weights, calibrated on a few given or random inputs. It
is the reference third-party producer of the QDQ files graphopt's `absorb-qdq` pass reads.
`reduce_range=True` (7-bit weights) keeps onnxruntime's own AVX2 u8 x s8 kernels (vpmaddubsw)
from saturating, so its integers are the exact ones on machines without VNNI.
"""
from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

import numpy as np
import onnx


def random_feeds(model: onnx.ModelProto, count: int, seed: int = 0,
                 dims: int = 1) -> list[dict[str, np.ndarray]]:
    """`count` random float32 feeds (uniform [0, 1)) for the model's inputs, symbolic dims = 1."""
    rng = np.random.default_rng(seed)
    initializers = {t.name for t in model.graph.initializer}
    feeds = []
    for _ in range(count):
        feed = {}
        for value in model.graph.input:
            if value.name in initializers:
                continue
            shape = [d.dim_value if d.HasField("dim_value") else dims
                     for d in value.type.tensor_type.shape.dim]
            feed[value.name] = rng.random(shape, dtype=np.float32)
        feeds.append(feed)
    return feeds


class _Reader:
    """onnxruntime's CalibrationDataReader over a list of feeds."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]):
        self._feeds = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_with_onnxruntime(model: onnx.ModelProto,
                              feeds: Sequence[dict[str, np.ndarray]] | None = None,
                              reduce_range: bool = True) -> onnx.ModelProto:
    """onnxruntime's static QDQ model of `model` (per-channel, u8 activations, s8 weights)."""
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    reader_type = type("Reader", (_Reader, CalibrationDataReader), {})
    feeds = list(feeds) if feeds is not None else random_feeds(model, 4)
    with tempfile.TemporaryDirectory() as tmp:
        source, target = os.path.join(tmp, "float.onnx"), os.path.join(tmp, "qdq.onnx")
        onnx.save(model, source)
        quantize_static(source, target, reader_type(feeds), quant_format=QuantFormat.QDQ,
                        per_channel=True, reduce_range=reduce_range,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
        return onnx.load(target)
