"""Renderings of a ScheduleReport: a text table, JSON, a Chrome/Perfetto trace and a plot.

The report is data first (ScheduleReport.to_dict); everything here only formats it. Files are
written to a temporary name and renamed, so a failed run never leaves a partial output.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from graphopt.analysis import human
from graphopt.errors import BadInputError
from graphopt.npu.scheduler import ENERGY_LEVELS, ScheduleReport

TABLE_LEVELS = ("rf", "noc", "glb", "dram")


def _energy_unit(pj: float) -> tuple[float, str]:
    """The unit (scale in pJ, name) that prints `pj` with 1 to 3 digits before the point."""
    for scale, unit in ((1e12, "J"), (1e9, "mJ"), (1e6, "uJ"), (1e3, "nJ")):
        if abs(pj) >= scale:
            return scale, unit
    return 1.0, "pJ"


def _in_unit(pj: float, scale: float) -> str:
    return f"{pj / scale:.3g}" if pj else "0"


def format_table(report: ScheduleReport, show_all: bool = False) -> str:
    """Per-layer table (MAC, vector, copy and host layers; all layers with show_all) + totals.

    Counts use graphopt's one count format (analysis.human); every energy of the table is in
    one unit, named in the header, and the totals line in one unit too, so columns and the
    per-level breakdown read side by side without converting nJ to uJ by eye."""
    shown = [lr for lr in report.layers if show_all or lr.kind not in ("free", "const")]
    scale, unit = _energy_unit(max((lr.total_energy for lr in shown), default=0.0))
    header = (f"{'layer':<28} {'op':<12} {'MACs':>8} {'cycles':>9} {'util':>5} "
              + " ".join(f"{'acc.' + lvl:>9}" for lvl in TABLE_LEVELS) + " "
              + " ".join(f"{'E.' + lvl:>8}" for lvl in ("mac", *TABLE_LEVELS, "host"))
              + f" {'E.total':>8}  mapping   (energies in {unit})")
    lines = [header, "-" * len(header)]
    for lr in shown:
        name = lr.name if len(lr.name) <= 28 else "..." + lr.name[-25:]
        acc = " ".join(f"{human(lr.accesses.get(lvl, 0.0)):>9}" for lvl in TABLE_LEVELS)
        energy = " ".join(f"{_in_unit(lr.energy.get(lvl, 0.0), scale):>8}"
                          for lvl in ("mac", *TABLE_LEVELS, "host"))
        util = f"{100 * lr.utilization:4.0f}%" if lr.macs else "    -"
        where = lr.mapping or lr.note or lr.kind
        lines.append(f"{name:<28} {lr.op_type[:12]:<12} {human(lr.macs):>8} "
                     f"{human(lr.cycles):>9} {util} {acc} {energy} "
                     f"{_in_unit(lr.total_energy, scale):>8}  {where}")
    t = report.totals()
    by_level = report.energy_by_level()
    total_scale, total_unit = _energy_unit(report.energy_pj)
    lines += ["-" * len(header),
              f"arch {report.arch.name} ({report.arch.datatype}, {report.arch.clock_mhz:g} MHz), "
              f"dataflow {report.dataflow}, objective {report.objective}, batch {report.batch}",
              f"MACs {human(t['macs'])}  cycles {human(t['cycles'])}  latency "
              f"{t['latency_s'] * 1e3:.3f} ms  ({t['frames_per_s']:.1f} frames/s)",
              f"energy {_in_unit(report.energy_pj, total_scale)} {total_unit}  ("
              + ", ".join(f"{lvl} {_in_unit(by_level[lvl], total_scale)}"
                          for lvl in ENERGY_LEVELS) + f" {total_unit})",
              f"EDP {t['edp_js']:.3e} J*s  {t['tops']:.3f} TOPS  {t['tops_per_w']:.3f} TOPS/W",
              f"mapper: {report.evaluated} mappings evaluated; infeasible: "
              + (", ".join(f"{r} x{n}" for r, n in sorted(report.infeasible_reasons.items()))
                 or "none")]
    return "\n".join(lines)


def _atomic_write(path: "str | os.PathLike", write) -> None:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(report: ScheduleReport, path: "str | os.PathLike") -> None:
    data = json.dumps(report.to_dict(), indent=1).encode()
    _atomic_write(path, lambda handle: handle.write(data))


def trace_events(report: ScheduleReport) -> dict[str, Any]:
    """Chrome trace-event JSON (opens in Perfetto / chrome://tracing); times in microseconds."""
    us_per_cycle = 1.0 / report.arch.clock_mhz
    tracks = {"mac": (1, 1, "PE array"), "vector": (1, 2, "vector lanes"),
              "copy": (1, 3, "DMA"), "host": (2, 1, "host")}
    events: list[dict[str, Any]] = []
    for pid, tid, name in tracks.values():
        events.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                       "args": {"name": name}})
    events.append({"name": "process_name", "ph": "M", "pid": 1, "args": {"name": "NPU"}})
    events.append({"name": "process_name", "ph": "M", "pid": 2, "args": {"name": "host"}})
    for lr in report.layers:
        if lr.kind not in tracks or lr.cycles <= 0:
            continue
        pid, tid, _ = tracks[lr.kind]
        args = {"op": lr.op_type, "macs": lr.macs, "energy_pj": round(lr.total_energy, 3),
                "utilization": round(lr.utilization, 4), "mapping": lr.mapping}
        events.append({"name": lr.name, "cat": lr.kind, "ph": "X", "pid": pid, "tid": tid,
                       "ts": lr.start * us_per_cycle,
                       "dur": max(lr.cycles, 1.0) * us_per_cycle, "args": args})
        if lr.kind != "copy" and lr.dma_cycles > 0:
            events.append({"name": f"{lr.name} (DMA)", "cat": "dma", "ph": "X", "pid": 1,
                           "tid": 3, "ts": lr.start * us_per_cycle,
                           "dur": lr.dma_cycles * us_per_cycle,
                           "args": {"dram_bytes": lr.dram_bytes}})
    return {"traceEvents": events, "displayTimeUnit": "ns",
            "otherData": {"arch": report.arch.name, "dataflow": report.dataflow}}


def write_trace(report: ScheduleReport, path: "str | os.PathLike") -> None:
    data = json.dumps(trace_events(report)).encode()
    _atomic_write(path, lambda handle: handle.write(data))


def write_plot(report: ScheduleReport, path: "str | os.PathLike") -> None:
    """Per-layer energy by level (stacked bars) and a roofline of the MAC layers."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise BadInputError("--plot needs matplotlib: pip install 'graphopt[plot]'") from None
    layers = [lr for lr in report.layers if lr.kind in ("mac", "vector", "copy", "host")]
    fig, (ax_e, ax_r) = plt.subplots(1, 2, figsize=(14, 5))
    bottom = [0.0] * len(layers)
    for lvl in ENERGY_LEVELS:
        values = [lr.energy.get(lvl, 0.0) * 1e-6 for lr in layers]
        ax_e.bar(range(len(layers)), values, bottom=bottom, label=lvl)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax_e.set_xlabel("layer (schedule order)")
    ax_e.set_ylabel("energy (uJ)")
    ax_e.set_title(f"{report.arch.name} / {report.dataflow}: energy by level")
    ax_e.legend()
    arch = report.arch
    peak = 2 * arch.peak_macs_per_cycle * arch.clock_mhz * 1e6 / 1e9          # GOP/s
    bandwidth = arch.dram.bandwidth_gbps                                       # GB/s
    macs = [lr for lr in layers if lr.macs and lr.cycles]
    intensity = [2 * lr.macs / max(lr.dram_bytes, 1.0) for lr in macs]
    achieved = [2 * lr.macs / (lr.cycles / (arch.clock_mhz * 1e6)) / 1e9 for lr in macs]
    lo = min(intensity + [0.1]) / 2
    hi = max(intensity + [peak / bandwidth * 4])
    xs = [lo * (hi / lo) ** (i / 99) for i in range(100)]
    ax_r.plot(xs, [min(peak, x * bandwidth) for x in xs], "k-", label="roof")
    ax_r.scatter(intensity, achieved, s=12, label="MAC layers")
    ax_r.set_xscale("log")
    ax_r.set_yscale("log")
    ax_r.set_xlabel("operational intensity (ops / DRAM byte)")
    ax_r.set_ylabel("GOP/s")
    ax_r.set_title(f"roofline: peak {peak:.1f} GOP/s, DRAM {bandwidth:g} GB/s")
    ax_r.legend()
    fig.tight_layout()
    _atomic_write(path, lambda handle: fig.savefig(handle, format="png", dpi=110))
    plt.close(fig)
