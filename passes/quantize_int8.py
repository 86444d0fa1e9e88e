"""INT8 quantization as a pass: calibrate on `calib`, set `Value.quant`, export writes QDQ.

    graphopt optimize m.onnx -o q.onnx --passes "quantize-int8{calib=data.npz:calib=input}"

The same as `graphopt quantize` and `graphopt.quantize(...)` (graphopt.quantization.api); options are
the CLI flags. `exclude` is a `;`-separated list of node names or op types (`,` separates pass
options). Level 0: it needs data, so it joins no -O preset.
"""
from __future__ import annotations

import logging

from graphopt import Graph, PassResult, register_pass
from graphopt.quantization.api import QuantizeOptions, quantize_graph

log = logging.getLogger(__name__)


@register_pass("quantize-int8", level=0)
def quantize_int8(graph: Graph, *, calib: str = "", method: str = "minmax",
                  percentile: float = 99.99, per_channel: bool = False, exclude: str = "",
                  activation_type: str = "u8", reduce_range: str = "auto", dynamic: bool = False,
                  max_drop: float = -1.0, eval: str = "", eval_labels: str = "") -> PassResult:
    """Quantize to INT8 (static QDQ from calibration data, or dynamic for MatMuls)."""
    options = QuantizeOptions(method=method, percentile=percentile, per_channel=per_channel,
                              exclude=[e for e in exclude.split(";") if e],
                              activation_type=activation_type,
                              reduce_range=None if reduce_range == "auto" else
                              reduce_range.lower() in ("1", "true", "yes", "on"),
                              dynamic=dynamic, max_drop=max_drop if max_drop >= 0 else None,
                              eval_labels=eval_labels or None)
    report = quantize_graph(graph, calib or None, eval or None, options)
    for line in report.lines():
        log.info("%s", line)
    return PassResult(report.quantized > 0, {"quantized": report.quantized,
                                             "float_layers": len(report.fallback)})
