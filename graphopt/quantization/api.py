"""`graphopt.quantization`: calibrate, annotate `Value.quant`, explain the accuracy, fall back to float.

The steps are separate modules; this one sequences them:
  scheme.find_targets -> data.SampleSet -> calibrate.calibrate -> scheme.apply
  -> accuracy.Evaluator (outputs, per-tensor errors, per-layer sensitivity) -> fallback (--max-drop)
Dynamic quantization (`dynamic=True`) replaces calibration and annotation by `dynamic.quantize_dynamic`.
"""
from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import onnx

from graphopt.errors import BadInputError
from graphopt.ir.graph import Graph
from graphopt.ir.types import QuantParams
from graphopt.onnx_io.exporter import export_model
from graphopt.quantization import scheme
from graphopt.quantization.accuracy import Evaluator
from graphopt.quantization.calibrate import calibrate, stream_activations
from graphopt.quantization.data import DataSource, SampleSet
from graphopt.quantization.dynamic import dynamic_targets, quantize_dynamic
from graphopt.quantization.histogram import METHODS
from graphopt.progress import track
from graphopt.quantization.params import ACTIVATION_DTYPES, weight_params
from graphopt.quantization.report import FallbackStep, LayerReport, QuantizeReport, TensorReport
from graphopt.quantization.rounding import fake_quantize

log = logging.getLogger(__name__)


@dataclass
class QuantizeOptions:
    """Everything `quantize` can be told (the CLI flags and the pass options map onto these)."""

    method: str = "minmax"
    percentile: float = 99.99
    per_channel: bool = False
    exclude: Sequence[str] = ()
    activation_type: str = "u8"
    reduce_range: bool | None = None  # None: 7-bit weights for static, 8-bit for dynamic
    dynamic: bool = False
    max_drop: float | None = None
    eval_labels: str | None = None
    eval_samples: int = 64
    sensitivity: bool = False  # rank layers by their output effect (one session per layer)
    sensitivity_samples: int = 8
    show_progress: bool = False

    def check(self) -> None:
        if self.method not in METHODS:
            raise BadInputError(f"unknown calibration method {self.method!r}; choose one of "
                                f"{', '.join(METHODS)}")
        if self.activation_type not in ACTIVATION_DTYPES:
            raise BadInputError(f"activation type {self.activation_type!r}: choose u8 or s8")
        if not 50.0 < self.percentile <= 100.0:
            raise BadInputError(f"percentile {self.percentile} must be in (50, 100]")
        if self.max_drop is not None and self.max_drop < 0:
            raise BadInputError(f"--max-drop {self.max_drop} must be >= 0 (points)")


@dataclass
class QuantizeResult:
    """The annotated graph (export it for the QDQ model) and what quantizing cost."""

    graph: Graph
    report: QuantizeReport = field(repr=False)

    def export(self) -> onnx.ModelProto:
        return export_model(self.graph)


def quantize(model: "str | os.PathLike | onnx.ModelProto | Graph", calib: DataSource | None = None,
             *, eval: DataSource | None = None, output: "str | os.PathLike | None" = None,
             **options: object) -> QuantizeResult:
    """Quantize `model` to INT8 (options: see QuantizeOptions) and optionally save the QDQ model.

    A Graph passed in is quantized in place; paths and ModelProtos are imported first.
    """
    from graphopt import onnx_io

    graph = onnx_io.load(model)
    report = quantize_graph(graph, calib, eval_data=eval, options=QuantizeOptions(**options))
    result = QuantizeResult(graph, report)
    if output is not None:
        onnx_io.save_model(result.export(), output)
    return result


def quantize_graph(graph: Graph, calib: DataSource | None, eval_data: DataSource | None = None,
                   options: QuantizeOptions | None = None) -> QuantizeReport:
    """Quantize `graph` in place and return the accuracy report."""
    options = options or QuantizeOptions()
    options.check()
    scheme.clear(graph)
    float_model = export_model(graph)
    if options.max_drop is not None and eval_data is None:
        raise BadInputError("--max-drop needs --eval DATA to measure the drop on")
    calib_set = SampleSet(calib, graph.inputs) if calib is not None else None
    eval_set = (SampleSet(eval_data, graph.inputs, labels=options.eval_labels,
                          what="evaluation data") if eval_data is not None else calib_set)
    if options.dynamic:
        variant: _Variant = _Dynamic(graph, options)
        report = QuantizeReport(method="dynamic", calib_samples=0, eval_source="",
                                targets=len(variant.targets))
    else:
        if calib_set is None:
            raise BadInputError("static quantization needs calibration data (--calib DATA); "
                                "or use --dynamic")
        variant = _Static(graph, calib_set, options)
        report = QuantizeReport(method=options.method, calib_samples=len(calib_set),
                                eval_source="", targets=len(variant.targets))
    targets = variant.targets
    params = variant.params()
    if eval_set is None:  # dynamic without data: nothing to measure against
        report.tensors = _tensor_errors(graph, targets, params, None)
        variant.commit(targets)
        report.quantized = len(targets)
        return report
    report.eval_source = ("evaluation data" if eval_data is not None
                          else "calibration samples")
    evaluator = Evaluator(float_model, eval_set, options.eval_samples)
    report.tensors = _tensor_errors(graph, targets, params, evaluator)
    if options.sensitivity or options.max_drop is not None:
        report.layers = _sensitivity(variant, evaluator, options.sensitivity_samples,
                                     options.show_progress)
    outputs = evaluator.run(variant.model(targets))
    report.outputs, report.drop = evaluator.stats(outputs), evaluator.drop(outputs)
    enabled = list(targets)
    if options.max_drop is not None and report.drop > options.max_drop:
        report.fallback, enabled = _fall_back(variant, report.layers, evaluator,
                                              options.max_drop, report.drop)
        outputs = evaluator.run(variant.model(enabled))
        report.outputs, report.drop = evaluator.stats(outputs), evaluator.drop(outputs)
    variant.commit(enabled)
    report.quantized = len(enabled)
    return report


class _Variant(ABC):
    """How a subset of targets becomes a model: the one thing static and dynamic differ in."""

    targets: list[scheme.Target]

    @abstractmethod
    def model(self, enabled: Sequence[scheme.Target]) -> onnx.ModelProto:
        """The exported model with only `enabled` quantized (the graph may change meanwhile)."""

    @abstractmethod
    def commit(self, enabled: Sequence[scheme.Target]) -> None:
        """Leave the graph quantized exactly at `enabled`."""

    @abstractmethod
    def params(self) -> dict[str, QuantParams]:
        """Value name -> parameters, for every tensor quantized when all targets are."""

    def groups(self) -> list[list[scheme.Target]]:
        """The units that go back to float together (one target each unless they share state)."""
        return [[t] for t in self.targets]


class _Static(_Variant):
    """Calibrated QDQ: annotations on the graph, recomputed for each subset."""

    def __init__(self, graph: Graph, calib_set: SampleSet, options: QuantizeOptions):
        self.graph, self.options = graph, options
        self.targets = scheme.find_targets(graph, options.exclude)
        values = scheme.activation_values(self.targets)
        histograms = calibrate(graph, values, calib_set, options.show_progress)
        self.ranges = {name: h.range(options.method, options.percentile)
                       for name, h in histograms.items()}

    def commit(self, enabled: Sequence[scheme.Target]) -> None:
        reduce_range = True if self.options.reduce_range is None else self.options.reduce_range
        scheme.apply(self.graph, enabled, self.ranges, self.options.per_channel,
                     ACTIVATION_DTYPES[self.options.activation_type], reduce_range)

    def model(self, enabled: Sequence[scheme.Target]) -> onnx.ModelProto:
        self.commit(enabled)
        return export_model(self.graph)

    def groups(self) -> list[list[scheme.Target]]:
        return _groups(self.targets)  # a shared activation has one QuantizeLinear

    def params(self) -> dict[str, QuantParams]:
        self.commit(self.targets)
        return {v.name: v.quant for t in self.targets for v in t.tensors if v.quant is not None}


class _Dynamic(_Variant):
    """Run-time activation quantization: a rewrite of a float copy for each subset."""

    def __init__(self, graph: Graph, options: QuantizeOptions):
        self.graph, self.options = graph, options
        self.float_graph = graph.copy()
        self.targets = dynamic_targets(graph, options.exclude)

    def _rewrite(self, graph: Graph, enabled: Sequence[scheme.Target]) -> None:
        quantize_dynamic(graph, self.options.exclude, self.options.per_channel,
                         bool(self.options.reduce_range), only={t.name for t in enabled})

    def params(self) -> dict[str, QuantParams]:
        axis = 1 if self.options.per_channel else None
        return {t.weight.name: weight_params(t.weight.const, axis, bool(self.options.reduce_range))
                for t in self.targets}

    def commit(self, enabled: Sequence[scheme.Target]) -> None:
        if self.graph.op_counts().get("DynamicQuantizeLinear"):
            raise BadInputError("the graph is already dynamically quantized")
        self._rewrite(self.graph, enabled)

    def model(self, enabled: Sequence[scheme.Target]) -> onnx.ModelProto:
        graph = self.float_graph.copy()
        self._rewrite(graph, enabled)
        return export_model(graph)


def _squared_error(x: np.ndarray, fq: np.ndarray) -> tuple[float, float]:
    """(sum (fq - x)^2, sum x^2) in float64."""
    x64 = x.astype(np.float64)
    return float(np.sum((fq - x64) ** 2)), float(np.sum(x64 ** 2))


def _tensor_errors(graph: Graph, targets: Sequence[scheme.Target],
                   params: Mapping[str, QuantParams],
                   evaluator: Evaluator | None) -> list[TensorReport]:
    """Relative RMS error ||QDQ(x) - x|| / ||x|| of every quantized tensor: activations on (up
    to 16) evaluation samples, weights and biases directly. `params` maps value names to the
    parameters each tensor is quantized with."""
    sums: dict[str, list[float]] = {}
    activations = [v for v in scheme.activation_values(targets) if v.name in params]
    if evaluator is not None and activations:
        for sample in stream_activations(graph, activations, evaluator.feeds[:16]):
            for value in activations:
                q = params[value.name]
                fq = fake_quantize(sample[value.name], q.scale, q.zero_point)
                acc = sums.setdefault(value.name, [0.0, 0.0])
                for i, part in enumerate(_squared_error(sample[value.name], fq)):
                    acc[i] += part
    rows, seen = [], set()
    for target in targets:
        for value in target.tensors:
            if value.name in seen or value.name not in params:
                continue
            seen.add(value.name)
            q = params[value.name]
            if value.is_const:
                err, ref = _squared_error(value.const, fake_quantize(value.const, q.scale,
                                                                     q.zero_point, q.axis))
            elif value.name in sums:
                err, ref = sums[value.name]
            else:
                continue
            kind = ("activation" if not value.is_const else
                    "bias" if value is target.bias else "weight")
            rel = float(np.sqrt(err / ref)) if ref > 0 else 0.0
            rows.append(TensorReport(value.name, kind, target.name, scheme.describe(q), rel))
    return rows


def _groups(targets: Sequence[scheme.Target]) -> list[list[scheme.Target]]:
    """Targets joined when they read a common quantized activation (it is int8 as long as any
    reader is, so they go back to float together), in graph order."""
    parent = list(range(len(targets)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first_reader: dict[str, int] = {}
    for i, target in enumerate(targets):
        for value in target.activations:
            j = first_reader.setdefault(value.name, i)
            parent[root(i)] = root(j)
    groups: dict[int, list[scheme.Target]] = {}
    for i, target in enumerate(targets):
        groups.setdefault(root(i), []).append(target)
    return list(groups.values())


def _sensitivity(variant: _Variant, evaluator: Evaluator, samples: int,
                 show_progress: bool = False) -> list[LayerReport]:
    """Quantize one group of layers at a time; its output distance (mean 1 - cosine) is its
    sensitivity."""
    saved = evaluator.feeds, evaluator.reference
    evaluator.feeds, evaluator.reference = saved[0][:samples], saved[1][:samples]
    groups = variant.groups()
    layers = []
    try:
        for group in track(groups, len(groups), "sensitivity", show_progress):
            distance = evaluator.distance(evaluator.run(variant.model(group)))
            layers.append(LayerReport(tuple(t.name for t in group), group[0].node.op_type,
                                      distance))
    finally:
        evaluator.feeds, evaluator.reference = saved
    for rank, layer in enumerate(sorted(layers, key=lambda l: -l.sensitivity), start=1):
        layer.rank = rank
    return layers


def _fall_back(variant: _Variant, layers: Sequence[LayerReport], evaluator: Evaluator,
               budget: float, drop: float) -> tuple[list[FallbackStep], list[scheme.Target]]:
    """Return the most sensitive layers to float, one group at a time, until the drop fits
    `budget`. Returns the steps taken and the targets left quantized."""
    enabled = list(variant.targets)
    steps: list[FallbackStep] = []
    for layer in sorted(layers, key=lambda l: l.rank):
        if drop <= budget or not enabled:
            break
        enabled = [t for t in enabled if t.name not in layer.members]
        new_drop = evaluator.drop(evaluator.run(variant.model(enabled)))
        steps.append(FallbackStep(layer.name, layer.op, drop, new_drop))
        log.info("kept %s in float: drop %.3f -> %.3f points", layer.name, drop, new_drop)
        drop = new_drop
    return steps, enabled
