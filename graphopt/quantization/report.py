"""The accuracy report of a quantization run: data first, then rendered as text tables."""
from __future__ import annotations

from dataclasses import dataclass, field

from graphopt.quantization.accuracy import OutputStats


@dataclass(frozen=True)
class TensorReport:
    """One quantized tensor: its parameters and the relative RMS error ||QDQ(x) - x|| / ||x||."""

    name: str
    kind: str  # activation, weight or bias
    layer: str  # the first layer that reads it in int8
    params: str
    error: float


@dataclass
class LayerReport:
    """One quantized layer, or layers sharing a quantized input (Q/K/V projections reading one
    LayerNorm output: that input stays int8 while any of them is), and its sensitivity: the
    output's mean (1 - cosine) when only this group is int8 (rank 1 = most sensitive)."""

    members: tuple[str, ...]
    op: str
    sensitivity: float
    rank: int = 0

    @property
    def name(self) -> str:
        extra = len(self.members) - 1
        return self.members[0] + (f" (+{extra} sharing its input)" if extra else "")


@dataclass(frozen=True)
class FallbackStep:
    """A layer returned to float by --max-drop, and the quality drop before and after."""

    layer: str
    op: str
    drop_before: float
    drop_after: float

    @property
    def cost(self) -> float:
        """The points this layer cost in int8 (what keeping it in float won back)."""
        return self.drop_before - self.drop_after


@dataclass
class QuantizeReport:
    method: str
    calib_samples: int
    eval_source: str
    targets: int
    quantized: int = 0
    outputs: list[OutputStats] = field(default_factory=list)
    tensors: list[TensorReport] = field(default_factory=list)
    layers: list[LayerReport] = field(default_factory=list)
    fallback: list[FallbackStep] = field(default_factory=list)
    drop: float | None = None

    @property
    def ranked_tensors(self) -> list[TensorReport]:
        """Tensors by the error they add, largest first (their sensitivity rank)."""
        return sorted(self.tensors, key=lambda t: -t.error)

    @property
    def float_layers(self) -> list[str]:
        return [s.layer for s in self.fallback]

    def lines(self, max_rows: int = 20) -> list[str]:
        """The report as text: summary, outputs, layers by sensitivity, tensors, fallback."""
        out = [f"quantized {self.quantized} of {self.targets} layers ({self.method}"
               + (f", {self.calib_samples} calibration samples" if self.calib_samples else "")
               + ")"]
        if self.outputs:
            out.append(f"outputs vs float (on {self.eval_source}):")
            out.append(f"  {'output':32s} {'max abs err':>12s} {'cosine':>9s} {'top-1 agree':>12s}"
                       f" {'accuracy int8/fp32':>19s}")
            for s in self.outputs:
                agree = "-" if s.top1_agreement is None else f"{100 * s.top1_agreement:.2f}%"
                acc = ("-" if s.accuracy is None else
                       f"{100 * s.accuracy:.2f}% / {100 * s.float_accuracy:.2f}%")
                out.append(f"  {_clip(s.name, 32):32s} {s.max_abs_error:12.4g} "
                           f"{s.mean_cosine:9.5f} {agree:>12s} {acc:>19s}")
            if self.drop is not None:
                out.append(f"  quality drop: {self.drop:.3f} points")
        if self.layers:
            out.append("layers by sensitivity (output 1 - cosine with only this layer in int8):")
            layers = sorted(self.layers, key=lambda l: l.rank)
            out += _ranked([f"{_clip(l.name, 56):56s} {l.op:10s} {l.sensitivity:.3e}"
                            for l in layers], max_rows)
        if self.tensors:
            out.append("tensors by error added (sensitivity rank; relative RMS of QDQ(x) - x):")
            out += _ranked([f"{_clip(t.name, 48):48s} {t.kind:10s} {t.error:9.3e}  {t.params}"
                            for t in self.ranked_tensors], max_rows)
        if self.fallback:
            out.append("kept in float by --max-drop (drop before -> after, points won back):")
            for s in self.fallback:
                out.append(f"  {_clip(s.layer, 56):56s} {s.op:10s} {s.drop_before:.3f} -> "
                           f"{s.drop_after:.3f}  ({s.cost:+.3f})")
        return out


def _ranked(rows: list[str], max_rows: int) -> list[str]:
    """Numbered rows (rank 1 first), cut at `max_rows` with a count of the rest."""
    lines = [f"  {rank:3d}. {row}" for rank, row in enumerate(rows[:max_rows], start=1)]
    if len(rows) > max_rows:
        lines.append(f"  ... {len(rows) - max_rows} more")
    return lines


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]
