"""Peer agreement: graphopt's NPU model vs SCALE-Sim 3.0.0 on systolic arrays.

For 32x32 and 128x128 arrays and the ws / os / is dataflows, every conv layer of resnet18 and of
onnx's light_bvlc_alexnet is run through SCALE-Sim (in its own venv, created here on first use:
benchmarks/out/scalesim-venv) and through graphopt's mapper (objective latency), and the
per-layer compute cycles are printed side by side with SCALE-Sim's COMPUTE_REPORT "Total Cycles",
followed by the max / mean |deviation| per configuration.

SCALE-Sim models neither padding nor groups, so each layer is given to it with the padded input
extent (P - 1) * stride + (R - 1) * dilation + 1 and one topology row per group (cycles summed).
It runs in CALC bandwidth mode (no memory stalls); graphopt runs the tpu presets with DRAM and
buffer bandwidth lifted (65536 banks), so the latency objective sees compute cycles only.
SCALE-Sim reports the index of the last cycle (0-based), one less than a count; the table shows
the raw numbers.

Run time. SCALE-Sim builds its per-cycle demand matrices by repeated concatenation and services
them one cycle at a time, so a layer takes seconds to a minute. Two legitimate savings: its own
`save_disk_space` option (no SRAM / DRAM trace CSVs are written), and one SCALE-Sim process per
(configuration, distinct layer shape) run `--jobs` at a time, longest first (a multi-layer run
also keeps every finished layer's matrices in memory). Each result is cached in
benchmarks/out/scalesim-cache.json as soon as it arrives, so an interrupted run resumes and a
rerun only prints. The layers of the two models have 16 distinct shapes; a cold run of all six
configurations took 12 minutes on 2 busy cores.

    python benchmarks/npu_vs_scalesim.py [--arrays 32,128] [--dataflows ws,os,is] [--jobs 2]
                                         [--cache FILE]
"""
from __future__ import annotations

from graphopt.testing import sample_models_dir
import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path

import onnx

from graphopt.npu import Mapper, build_layers, load_arch
from graphopt.npu.entry import optimized_graph

from _common import format_table

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
VENV = OUT / "scalesim-venv"
CACHE = OUT / "scalesim-cache.json"
MODELS = {
    "resnet18": sample_models_dir() / "resnet18.onnx",
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


TOPOLOGY_HEADER = ("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                   "Channels, Num Filter, Strides,")


def simulate_one(python: Path, size: int, dataflow: str, shape: tuple[int, ...]) -> list[int]:
    """[Total Cycles, Stall Cycles] of one topology row from its own SCALE-Sim process."""
    with tempfile.TemporaryDirectory(prefix="scalesim-") as tmp:
        tmpdir = Path(tmp)
        (tmpdir / "cfg.cfg").write_text(CONFIG.format(name="run", rows=size, cols=size,
                                                      dataflow=dataflow))
        (tmpdir / "topo.csv").write_text(
            f"{TOPOLOGY_HEADER}\nl0, " + ", ".join(map(str, shape)) + ",\n")
        (tmpdir / "layout.csv").write_text("Layer name,\n")
        subprocess.run([str(python), "-c", DRIVER, str(tmpdir / "cfg.cfg"),
                        str(tmpdir / "topo.csv"), str(tmpdir / "layout.csv"),
                        str(tmpdir / "out")], check=True, stdout=subprocess.DEVNULL)
        with (tmpdir / "out" / "run" / "COMPUTE_REPORT.csv").open() as handle:
            header, record = list(csv.reader(handle, skipinitialspace=True))[:2]
        return [int(record[header.index("Total Cycles")]),
                int(record[header.index("Stall Cycles")])]


def save_cache(cache: dict, path: Path) -> None:
    """Write the cache atomically (a killed run never leaves a truncated file)."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cache, indent=1))
    os.replace(tmp, path)


def run_scalesim(python: Path, todo: list[tuple[int, str, tuple[int, ...], float]],
                 cache: dict, cache_path: Path, jobs: int) -> None:
    """Simulate every (size, dataflow, shape, cost) of `todo` not yet cached, longest first,
    `jobs` SCALE-Sim processes at a time; each result is cached as soon as it arrives."""
    missing = [t for t in todo
               if json.dumps(list(t[2])) not in cache.get(f"{t[0]}x{t[0]}/{t[1]}", {})]
    missing.sort(key=lambda t: -t[3])
    if not missing:
        return
    print(f"SCALE-Sim: {len(missing)} layer runs to do, {jobs} at a time ...", flush=True)
    start = time.monotonic()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(simulate_one, python, size, df, shape): (size, df, shape)
                   for size, df, shape, _ in missing}
        for done, future in enumerate(as_completed(futures), 1):
            size, df, shape = futures[future]
            cache.setdefault(f"{size}x{size}/{df}", {})[json.dumps(list(shape))] = future.result()
            save_cache(cache, cache_path)
            print(f"  [{done}/{len(missing)}] {size}x{size} {df} {shape}: "
                  f"{future.result()[0]:,} cycles ({time.monotonic() - start:.0f} s)", flush=True)


def lifted_arch(size: int):
    """The tpu preset with DRAM and buffer bandwidth lifted: latency = compute cycles."""
    arch = load_arch(f"tpu-{size}x{size}")
    return replace(arch, dram=replace(arch.dram, bandwidth_gbps=1e6),
                   global_buffer=replace(arch.global_buffer, banks=1 << 16))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arrays", default="32,128")
    parser.add_argument("--dataflows", default="ws,os,is")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="SCALE-Sim processes at a time (default: the CPU count)")
    parser.add_argument("--cache", type=Path, default=CACHE,
                        help=f"SCALE-Sim results file (default: {CACHE.relative_to(HERE.parent)})")
    args = parser.parse_args()
    python = ensure_venv()
    args.cache.parent.mkdir(parents=True, exist_ok=True)
    cache = json.loads(args.cache.read_text()) if args.cache.exists() else {}
    layers = {name: conv_rows(path) for name, path in MODELS.items()}
    configs = [(int(size), df) for size in args.arrays.split(",")
               for df in args.dataflows.split(",")]

    # Our side first (seconds); its cycle counts also order the SCALE-Sim runs, longest first.
    ours: dict[tuple[int, str], list] = {}
    todo: dict[tuple, float] = {}
    for size, df in configs:
        mapper = Mapper(lifted_arch(size), df, "latency")
        rows = []
        for model, entries in layers.items():
            for layer, groups, shape in entries:
                result = mapper.map(layer)
                rows.append((model, layer, groups, shape, result))
                cost = result.evaluation.compute_cycles / groups * size
                todo[(size, df, shape)] = max(todo.get((size, df, shape), 0.0), cost)
        ours[(size, df)] = rows
    run_scalesim(python, [(*key, cost) for key, cost in todo.items()], cache, args.cache,
                 args.jobs)

    summary = []
    failures = total = 0
    for size, df in configs:
        known = cache[f"{size}x{size}/{df}"]
        print(f"\n{size}x{size} {df}: {'model':<9} {'layer':<34} {'groups':>6} "
              f"{'SCALE-Sim':>11} {'stalls':>6} {'graphopt':>11} {'diff %':>7}  mapping")
        diffs = []
        for model, layer, groups, shape, result in ours[(size, df)]:
            theirs, stalls = (groups * v for v in known[json.dumps(list(shape))])
            mine = result.evaluation.compute_cycles
            diff = 100.0 * (mine - theirs) / theirs
            diffs.append(abs(diff))
            print(f"{'':13}{model:<9} {layer.name[-34:]:<34} {groups:>6} {theirs:>11,} "
                  f"{stalls:>6} {mine:>11,.0f} {diff:>+7.3f}  {result.mapping.describe()}")
        total += len(diffs)
        failures += sum(d > 100 * TOLERANCE for d in diffs)
        summary.append((f"{size}x{size} {df}", len(diffs), f"{max(diffs):.4f}",
                        f"{sum(diffs) / len(diffs):.4f}"))
    print("\nper configuration (|graphopt - SCALE-Sim| / SCALE-Sim over the conv layers):")
    print(format_table(("config", "layers", "max |diff| %", "mean |diff| %"), summary))
    print(f"\n{total} layer x config comparisons; {failures} outside {100 * TOLERANCE:.0f}%")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
