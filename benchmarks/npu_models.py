"""Schedule every shared model and every onnx "light" model on the modeled NPUs.

Prints, per model: layers, MACs, host-placed layers, latency, energy, TOPS/W and the time the
mapper + scheduler took; then int8 vs fp16 vs fp32 energy (Horowitz 45 nm table) for two models
on the edge-int8 design.

    python benchmarks/npu_models.py [--arch eyeriss] [--dataflow rs]
"""
from __future__ import annotations

from graphopt.testing import sample_models_dir
import argparse
import sys
import time
from pathlib import Path

import onnx

from graphopt.npu import Scheduler, load_arch
from graphopt.npu.entry import optimized_graph

SHARED = sample_models_dir()
LIGHT = Path(onnx.__file__).parent / "backend/test/data/light"
DTYPE_MODELS = ("resnet18.onnx", "mobilenet_v2.onnx")


def models() -> list[Path]:
    return sorted(SHARED.glob("*.onnx")) + sorted(LIGHT.glob("*.onnx"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="eyeriss")
    parser.add_argument("--dataflow", default=None)
    args = parser.parse_args()
    arch = load_arch(args.arch)
    print(f"arch {arch.name}, dataflow {args.dataflow or arch.dataflow}, objective energy")
    print(f"{'model':<28} {'layers':>6} {'MAC':>6} {'host':>4} {'GMACs':>8} {'ms':>9} "
          f"{'mJ':>9} {'TOPS/W':>7} {'map s':>6}")
    failed = 0
    for path in models():
        start = time.perf_counter()
        try:
            graph = optimized_graph(str(path))
            report = Scheduler(arch, args.dataflow, "energy").run(graph)
        except Exception as err:  # report and go on: the point is to see every model
            failed += 1
            print(f"{path.name:<28} FAILED: {type(err).__name__}: {err}")
            continue
        took = time.perf_counter() - start
        t = report.totals()
        kinds = [lr.kind for lr in report.layers]
        print(f"{path.name:<28} {len(kinds):>6} {kinds.count('mac'):>6} {kinds.count('host'):>4} "
              f"{t['macs'] / 1e9:>8.3f} {t['latency_s'] * 1e3:>9.2f} {t['energy_j'] * 1e3:>9.3f} "
              f"{t['tops_per_w']:>7.3f} {took:>6.1f}")
    edge = load_arch("edge-int8")
    print(f"\nword type vs energy on {edge.name} (horowitz45 table), objective energy")
    print(f"{'model':<22} {'dtype':<6} {'mJ':>9} {'ms':>8} {'TOPS/W':>7}   mac / rf / noc / glb / "
          "dram (mJ)")
    for name in DTYPE_MODELS:
        graph = optimized_graph(str(SHARED / name))
        for dtype in ("int8", "fp16", "fp32"):
            report = Scheduler(edge.with_datatype(dtype), None, "energy").run(graph)
            t = report.totals()
            levels = report.energy_by_level()
            print(f"{name:<22} {dtype:<6} {t['energy_j'] * 1e3:>9.3f} {t['latency_s'] * 1e3:>8.2f} "
                  f"{t['tops_per_w']:>7.3f}   " + " / ".join(
                      f"{levels[k] * 1e-9:.3f}" for k in ("mac", "rf", "noc", "glb", "dram")))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
