"""Streaming histograms of activations and the range each calibration method picks from them.

Calibration never stores activations: each tensor keeps one `StreamingHistogram` (min, max and
`BINS` counts over a symmetric range [-R, R]) updated sample by sample. When a sample exceeds R,
R doubles and neighbouring bins merge pairwise, which is exact because the bin edges of the wider
histogram are a subset of the old ones (BINS is a multiple of 4). Memory per tensor is constant
(BINS float64 counts), whatever the number of samples.

Methods (each returns the range [lo, hi] to quantize):
- minmax: the observed extremes;
- percentile: the `percentile` and 100-`percentile` quantiles (clips rare outliers);
- entropy: the threshold t minimizing the KL divergence between the |x| distribution and its
  128-level quantization (TensorRT's calibration), applied as [max(min, -t), min(max, t)].
"""
from __future__ import annotations

import numpy as np

BINS = 2048
METHODS = ("minmax", "percentile", "entropy")


class StreamingHistogram:
    """Counts of one tensor's values over [-R, R], with R growing by doubling as needed."""

    def __init__(self, bins: int = BINS):
        if bins % 4:
            raise ValueError("bins must be a multiple of 4 so that doubling merges bins exactly")
        self.bins = bins
        self.counts = np.zeros(bins, np.float64)
        self.radius = 0.0
        self.lo = np.inf
        self.hi = -np.inf

    def update(self, values: np.ndarray) -> None:
        """Add one sample's values (any shape)."""
        values = np.asarray(values, dtype=np.float32).reshape(-1)
        if values.size == 0:
            return
        lo, hi = float(values.min()), float(values.max())
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        extent = max(abs(lo), abs(hi))
        if self.radius == 0.0:
            self.radius = extent if extent > 0 else 1.0
        while extent > self.radius:
            self._double()
        width = 2.0 * self.radius / self.bins
        index = np.floor((values.astype(np.float64) + self.radius) / width).astype(np.int64)
        np.clip(index, 0, self.bins - 1, out=index)
        self.counts += np.bincount(index, minlength=self.bins)

    def _double(self) -> None:
        """Double the radius: old bin i lands in new bin bins/4 + i//2 (edges line up exactly)."""
        merged = self.counts.reshape(-1, 2).sum(axis=1)
        counts = np.zeros(self.bins, np.float64)
        quarter = self.bins // 4
        counts[quarter:quarter + merged.size] = merged
        self.counts = counts
        self.radius *= 2.0

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(-self.radius, self.radius, self.bins + 1)

    @property
    def empty(self) -> bool:
        return not np.isfinite(self.lo)

    def range(self, method: str, percentile: float = 99.99) -> tuple[float, float]:
        """The [lo, hi] the calibration method picks."""
        if self.empty:
            return 0.0, 0.0
        if method == "minmax":
            return self.lo, self.hi
        if method == "percentile":
            return self._percentile_range(percentile)
        if method == "entropy":
            t = self._entropy_threshold()
            return max(self.lo, -t), min(self.hi, t)
        raise ValueError(f"unknown calibration method {method!r}; choose one of {METHODS}")

    def _percentile_range(self, percentile: float) -> tuple[float, float]:
        cdf = np.cumsum(self.counts) / self.counts.sum()
        edges = self.edges
        tail = (100.0 - percentile) / 100.0
        lo = edges[int(np.searchsorted(cdf, tail, side="right"))]
        hi = edges[int(np.searchsorted(cdf, 1.0 - tail, side="left")) + 1]
        return max(self.lo, float(lo)), min(self.hi, float(hi))

    def _entropy_threshold(self, levels: int = 128) -> float:
        """KL-optimal clipping threshold of |x| (TensorRT's entropy calibration)."""
        half = self.bins // 2
        magnitude = self.counts[half:] + self.counts[:half][::-1]
        width = self.radius / half
        best_t, best_kl = float(max(-self.lo, self.hi)), np.inf
        nonzero = int(np.flatnonzero(magnitude)[-1]) + 1 if magnitude.any() else 0
        if nonzero <= levels:
            return best_t
        for stop in range(levels, nonzero + 1, max(1, (nonzero - levels) // 256)):
            kl = _kl_of_clipping(magnitude, stop, levels)
            if kl < best_kl:
                best_kl, best_t = kl, stop * width
        return best_t


def _kl_of_clipping(magnitude: np.ndarray, stop: int, levels: int) -> float:
    """KL(P || Q): P = histogram clipped at `stop` bins (outliers folded into the last bin),
    Q = P quantized into `levels` groups, each group's mass spread over its nonzero bins."""
    p = magnitude[:stop].copy()
    p[-1] += magnitude[stop:].sum()
    source = magnitude[:stop]
    bounds = np.linspace(0, stop, levels + 1).astype(np.int64)
    occupied = (source > 0).astype(np.float64)
    mass = np.add.reduceat(source, bounds[:-1])
    filled = np.add.reduceat(occupied, bounds[:-1])
    group = np.repeat(np.arange(levels), np.diff(bounds))
    q = occupied * (mass / np.maximum(filled, 1.0))[group]
    p_sum, q_sum = p.sum(), q.sum()
    if p_sum == 0 or q_sum == 0:
        return np.inf
    p, q = p / p_sum, q / q_sum
    mask = p > 0
    with np.errstate(divide="ignore"):
        return float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
