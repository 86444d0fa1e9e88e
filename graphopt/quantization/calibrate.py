"""Calibration: stream samples through onnxruntime and histogram the activations to quantize.

The float model is exported once with every activation to calibrate added as a graph output
(the *calibration model*), then run one sample at a time; each output updates that tensor's
`StreamingHistogram` and is dropped. Memory is one sample's activations plus a fixed-size
histogram per tensor, whatever the number of samples.

Why onnxruntime and not graphopt's C backend: ORT runs every model graphopt can import today
(the C backend's kernels are being rewritten), it is the reference the rest of graphopt checks
against, and it is what will run the QDQ output, so ranges come from the same float arithmetic the
quantized model is judged against. The C backend can become a second calibration engine later;
both must then give the same ranges (histograms are order-independent apart from float rounding).
"""
from __future__ import annotations

import logging
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from graphopt.ir.graph import Graph, Value
from graphopt.onnx_io.exporter import export_model, value_info
from graphopt.quantization.data import SampleSet
from graphopt.quantization.histogram import StreamingHistogram
from graphopt.progress import track

log = logging.getLogger(__name__)


def exposing_model(graph: Graph, values: Sequence[Value]) -> onnx.ModelProto:
    """The float model (annotations ignored) with `values` added as outputs."""
    saved = {v.name: v.quant for v in graph.values() if v.quant is not None}
    for value in graph.values():
        value.quant = None
    try:
        model = export_model(graph)
    finally:
        for value in graph.values():
            value.quant = saved.get(value.name)
    present = {o.name for o in model.graph.output} | {i.name for i in model.graph.input}
    model.graph.output.extend(value_info(v) for v in values if v.name not in present)
    return model


SESSION_LEVELS = ("none", "basic", "all")


def session(model: onnx.ModelProto, level: str = "basic") -> "object":
    """An onnxruntime CPU session. `level`: graph optimizations "none", "basic" (keeps every
    requested output: calibration) or "all" (fuses QDQ groups into integer kernels)."""
    import onnxruntime as ort

    levels = dict(zip(SESSION_LEVELS, (ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
                                       ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                       ort.GraphOptimizationLevel.ORT_ENABLE_ALL)))
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = levels[level]
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


def stream_activations(graph: Graph, values: Sequence[Value], samples: Iterable[Mapping],
                       ) -> Iterator[dict[str, np.ndarray]]:
    """For each sample, the float activations of `values` (graph inputs read from the feeds)."""
    model = exposing_model(graph, values)
    sess = session(model)
    outputs = [o.name for o in model.graph.output]
    wanted = {v.name for v in values}
    for feeds in samples:
        results = dict(zip(outputs, sess.run(outputs, dict(feeds))))
        yield {name: (results[name] if name in results else feeds[name]) for name in wanted}


def calibrate(graph: Graph, values: Sequence[Value], samples: SampleSet,
              show_progress: bool = False) -> dict[str, StreamingHistogram]:
    """A histogram per value over every sample of `samples`."""
    histograms = {v.name: StreamingHistogram() for v in values}
    stream = stream_activations(graph, values, samples)
    for activations in track(stream, len(samples), "calibrating", show_progress):
        for name, array in activations.items():
            histograms[name].update(array)
    log.info("calibrated %d tensors on %d samples", len(values), len(samples))
    return histograms
