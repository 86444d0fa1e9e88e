"""Peer agreement: graphopt's NPU model vs SCALE-Sim 3.0.0 on systolic arrays.

For 32x32 and 128x128 arrays and the ws / os / is dataflows, every conv layer of resnet18 and of
onnx's light_bvlc_alexnet is run through SCALE-Sim (in its own venv, created here on first use:
benchmarks/out/scalesim-venv) and through graphopt's mapper (objective latency), and the
per-layer compute cycles are printed side by side with SCALE-Sim's COMPUTE_REPORT "Total Cycles".

SCALE-Sim models neither padding nor groups, so each layer is given to it with the padded input
extent (P - 1) * stride + (R - 1) * dilation + 1 and one topology row per group (cycles summed).
It runs in CALC bandwidth mode (no memory stalls); graphopt runs the tpu presets with DRAM and
buffer bandwidth lifted (65536 banks), so the latency objective sees compute cycles only. SCALE-Sim reports the index of the last cycle
(0-based), one less than a count; the table shows the raw numbers.

    python benchmarks/npu_vs_scalesim.py [--arrays 32,128] [--dataflows ws,os,is]
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import onnx

from graphopt.npu import Mapper, build_layers, load_arch
from graphopt.npu.entry import optimized_graph

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
VENV = OUT / "scalesim-venv"
CACHE = OUT / "scalesim-cache.json"
MODELS = {
    "resnet18": Path("/work/shared/models/resnet18.onnx"),
    "alexnet": Path(onnx.__file__).parent / "backend/test/data/light/light_bvlc_alexnet.onnx",
}
TOLERANCE = 0.05

CONFIG = """[general]
run_name = {name}

[architecture_presets]
ArrayHeight: {rows}
ArrayWidth: {cols}
IfmapSramSzkB: 8192
FilterSramSzkB: 8192
OfmapSramSzkB: 8192
IfmapOffset: 0
FilterOffset: 10000000
OfmapOffset: 20000000
Dataflow: {dataflow}
Bandwidth: 10
ReadRequestBuffer: 32
WriteRequestBuffer: 32

[layout]
IfmapCustomLayout: False
IfmapSRAMBankBandwidth: 10
IfmapSRAMBankNum: 10
IfmapSRAMBankPort: 2
FilterCustomLayout: False
FilterSRAMBankBandwidth: 10
FilterSRAMBankNum: 10
FilterSRAMBankPort: 2

[sparsity]
SparsitySupport: false
SparseRep: ellpack_block
OptimizedMapping: false
BlockSize: 8
RandomNumberGeneratorSeed: 40

[run_presets]
InterfaceBandwidth: CALC
UseRamulatorTrace: False
"""

DRIVER = """
import sys
from scalesim.scale_sim import scalesim
sim = scalesim(save_disk_space=True, verbose=False, config=sys.argv[1], topology=sys.argv[2],
               layout=sys.argv[3])
sim.run_scale(top_path=sys.argv[4])
"""


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        print(f"creating {VENV} (scalesim 3.0.0, numpy<2.4) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "scalesim==3.0.0",
                        "numpy<2.4"], check=True)
    return python


def conv_rows(model: Path) -> list[tuple[str, int, tuple[int, ...]]]:
    """(layer name, groups, SCALE-Sim row: H, W, R, S, C, M, stride) for every Conv layer."""
    graph = optimized_graph(str(model))
    rows = []
    for layer in build_layers(graph):
        if layer.op_type != "Conv" or layer.kind != "mac":
            continue
        g, _, m, c, p, q, r, s = layer.sizes
        (sh, sw), (dh, dw) = layer.stride, layer.dilation
        h = (p - 1) * sh + (r - 1) * dh + 1
        w = (q - 1) * sw + (s - 1) * dw + 1
        eff_r, eff_s = (r - 1) * dh + 1, (s - 1) * dw + 1
        rows.append((layer, g, (h, w, eff_r, eff_s, c, m, sh)))
    return rows


def run_scalesim(python: Path, rows: int, cols: int, dataflow: str,
                 shapes: list[tuple[int, ...]], cache: dict) -> dict[tuple, int]:
    """Total Cycles per distinct topology row, from one SCALE-Sim run (results cached)."""
    key = f"{rows}x{cols}/{dataflow}"
    known = cache.setdefault(key, {})
    todo = sorted({s for s in shapes if json.dumps(s) not in known})
    if todo:
        with tempfile.TemporaryDirectory() as tmp:
            tmpdir = Path(tmp)
            (tmpdir / "cfg.cfg").write_text(CONFIG.format(name="run", rows=rows, cols=cols,
                                                          dataflow=dataflow))
            lines = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                     "Channels, Num Filter, Strides,"]
            lines += [f"l{i}, " + ", ".join(map(str, s)) + "," for i, s in enumerate(todo)]
            (tmpdir / "topo.csv").write_text("\n".join(lines) + "\n")
            (tmpdir / "layout.csv").write_text("Layer name,\n")
            (tmpdir / "out").mkdir()
            print(f"  SCALE-Sim {key}: {len(todo)} layers ...", flush=True)
            subprocess.run([str(python), "-c", DRIVER, str(tmpdir / "cfg.cfg"),
                            str(tmpdir / "topo.csv"), str(tmpdir / "layout.csv"),
                            str(tmpdir / "out")], check=True, stdout=subprocess.DEVNULL)
            report = tmpdir / "out" / "run" / "COMPUTE_REPORT.csv"
            with report.open() as handle:
                records = list(csv.reader(handle, skipinitialspace=True))
            header = records[0]
            col = header.index("Total Cycles")
            stall = header.index("Stall Cycles")
            for shape, record in zip(todo, records[1:]):
                known[json.dumps(shape)] = [int(record[col]), int(record[stall])]
        CACHE.write_text(json.dumps(cache, indent=1))
    return {s: known[json.dumps(s)] for s in shapes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrays", default="32,128")
    parser.add_argument("--dataflows", default="ws,os,is")
    args = parser.parse_args()
    python = ensure_venv()
    OUT.mkdir(parents=True, exist_ok=True)
    cache = json.loads(CACHE.read_text()) if CACHE.exists() else {}
    layers = {name: conv_rows(path) for name, path in MODELS.items()}
    worst = 0.0
    failures = 0
    total = 0
    for size in (int(x) for x in args.arrays.split(",")):
        arch = load_arch(f"tpu-{size}x{size}")
        arch = replace(arch, dram=replace(arch.dram, bandwidth_gbps=1e6),
                       global_buffer=replace(arch.global_buffer, banks=1 << 16))
        for dataflow in args.dataflows.split(","):
            shapes = [row for rows in layers.values() for _, _, row in rows]
            sim = run_scalesim(python, size, size, dataflow, shapes, cache)
            mapper = Mapper(arch, dataflow, "latency")
            print(f"\n{size}x{size} {dataflow}: {'model':<9} {'layer':<34} {'groups':>6} "
                  f"{'SCALE-Sim':>11} {'stalls':>6} {'graphopt':>11} {'diff %':>7}  mapping")
            for model, rows in layers.items():
                for layer, groups, shape in rows:
                    theirs = groups * sim[shape][0]
                    stalls = groups * sim[shape][1]
                    result = mapper.map(layer)
                    ours = result.evaluation.compute_cycles
                    diff = 100.0 * (ours - theirs) / theirs
                    worst = max(worst, abs(diff))
                    total += 1
                    failures += abs(diff) > 100 * TOLERANCE
                    print(f"{'':13}{model:<9} {layer.name[-34:]:<34} {groups:>6} {theirs:>11,} "
                          f"{stalls:>6} {ours:>11,.0f} {diff:>+7.3f}  "
                          f"{result.mapping.describe()}")
    print(f"\n{total} layer x config comparisons; worst |diff| {worst:.3f}%; "
          f"{failures} outside {100 * TOLERANCE:.0f}%")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
