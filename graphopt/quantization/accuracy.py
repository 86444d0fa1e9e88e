"""Measuring what quantization costs: per-output statistics and one quality figure for budgets.

`Evaluator` holds up to `max_samples` evaluation feeds and their float outputs (so many quantized
variants can be compared cheaply; memory is bounded by that cap). The quantized model runs in
onnxruntime with all graph optimizations on, i.e. with its QDQ groups fused into integer kernels:
the figures describe what a user of the file gets.

Quality, in points (percent), used by `--max-drop`:
- with labels: top-1 accuracy of the first output against them;
- else, for a classifier-shaped first output ([batch, classes]): top-1 agreement with float;
- else: 100 x the mean cosine similarity of the outputs to float.
"""
from __future__ import annotations

from dataclasses import dataclass
from itertools import islice
from typing import Sequence

import numpy as np
import onnx

from graphopt.quantization.calibrate import session
from graphopt.quantization.data import SampleSet


@dataclass(frozen=True)
class OutputStats:
    """How one output of the quantized model compares with float."""

    name: str
    max_abs_error: float
    mean_cosine: float
    top1_agreement: float | None  # fraction, classifier-shaped outputs only
    accuracy: float | None = None  # fraction, first output with labels only
    float_accuracy: float | None = None


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors (1.0 when both are zero)."""
    a, b = a.astype(np.float64).reshape(-1), b.astype(np.float64).reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def _is_classifier(array: np.ndarray) -> bool:
    return array.ndim == 2 and array.shape[-1] > 1


class Evaluator:
    """Float reference outputs on a fixed set of evaluation samples."""

    def __init__(self, float_model: onnx.ModelProto, samples: SampleSet, max_samples: int = 64):
        stream = iter(samples)
        self.feeds = list(islice(stream, max_samples))
        stream.close()  # closes the .npz it stopped in
        self.labels = None
        if samples.labels_key is not None:
            self.labels = samples.labels()[:len(self.feeds)].astype(np.int64)
        self.names = [o.name for o in float_model.graph.output]
        self.reference = self.run(float_model, optimize=False)

    def run(self, model: onnx.ModelProto, optimize: bool = True) -> list[list[np.ndarray]]:
        """Outputs per sample (onnxruntime; `optimize` lets it fuse QDQ into integer kernels)."""
        sess = session(model, "all" if optimize else "none")
        return [sess.run(self.names, feeds) for feeds in self.feeds]

    def stats(self, outputs: Sequence[Sequence[np.ndarray]]) -> list[OutputStats]:
        """Per-output comparison of `outputs` (from `run`) with the float reference."""
        table = []
        for k, name in enumerate(self.names):
            want = [ref[k] for ref in self.reference]
            got = [out[k] for out in outputs]
            max_abs = max(float(np.max(np.abs(g.astype(np.float64) - w), initial=0.0))
                          for w, g in zip(want, got))
            cos = float(np.mean([cosine(w, g) for w, g in zip(want, got)]))
            agree = acc = float_acc = None
            if _is_classifier(want[0]):
                top_w = np.concatenate([w.argmax(-1) for w in want])
                top_g = np.concatenate([g.argmax(-1) for g in got])
                agree = float(np.mean(top_w == top_g))
                if k == 0 and self.labels is not None and top_w.shape == self.labels.shape:
                    acc = float(np.mean(top_g == self.labels))
                    float_acc = float(np.mean(top_w == self.labels))
            table.append(OutputStats(name, max_abs, cos, agree, acc, float_acc))
        return table

    def drop(self, outputs: Sequence[Sequence[np.ndarray]]) -> float:
        """Quality lost against float, in points (see the module docstring)."""
        table = self.stats(outputs)
        first = table[0]
        if first.accuracy is not None:
            return 100.0 * (first.float_accuracy - first.accuracy)
        if first.top1_agreement is not None:
            return 100.0 * (1.0 - first.top1_agreement)
        return 100.0 * (1.0 - float(np.mean([s.mean_cosine for s in table])))

    def distance(self, outputs: Sequence[Sequence[np.ndarray]]) -> float:
        """A continuous error for ranking: mean (1 - cosine) over outputs and samples."""
        return float(np.mean([1.0 - s.mean_cosine for s in self.stats(outputs)]))
