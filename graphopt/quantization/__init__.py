"""INT8 quantization: calibration, `Value.quant` annotations, QDQ export, accuracy reports.

Modules, one job each: `rounding` (the one rounding policy), `params` (scales and zero points),
`histogram` (streaming histograms and range methods), `data` (calibration/evaluation samples),
`calibrate` (onnxruntime runs), `scheme` (what gets quantized), `qdq` (export as QDQ ONNX),
`dynamic` (run-time activation quantization), `accuracy` and `report` (what it cost), `api`.
See docs/QUANTIZATION.md.
"""
from __future__ import annotations

from typing import Any


def quantize(*args: Any, **kwargs: Any) -> Any:
    """See graphopt.quantization.api.quantize (imported lazily: the exporter imports this package)."""
    from graphopt.quantization.api import quantize as _quantize

    return _quantize(*args, **kwargs)


__all__ = ["quantize"]
