"""Layout: transpose sinking/cancelling for `optimize` (standard ONNX out), the model's boundary
layout (`--io-layout`), and the `--explain-layout` report."""
from graphopt.layout.io_layout import IO_LAYOUTS, io_layout_steps, set_io_layout
from graphopt.layout.report import layout_report
from graphopt.layout.sink import sink_transposes

__all__ = ["IO_LAYOUTS", "io_layout_steps", "layout_report", "set_io_layout", "sink_transposes"]
