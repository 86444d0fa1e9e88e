"""Small architectures for the NPU tests."""
from __future__ import annotations

from graphopt.npu import arch_from_dict


def make_arch(rows: int = 2, cols: int = 2, kind: str = "spatial", glb_kb: float = 64,
              rf: "tuple[int, int, int] | dict" = (16, 16, 16), **extra):
    """A small architecture; `rf` is (weights, inputs, outputs) entries or a register_files
    table."""
    data = {"name": f"test-{rows}x{cols}-{kind}", "clock_mhz": 100, "datatype": "int16",
            "pe_array": {"rows": rows, "cols": cols, "kind": kind},
            "register_files": rf if isinstance(rf, dict)
            else dict(zip(("weights", "inputs", "outputs"), rf)),
            "global_buffer": {"size_kb": glb_kb, "banks": 4, "bank_width_bits": 64},
            "dram": {"bandwidth_gbps": 1000.0}, "energy": {"table": "normalized"}}
    data.update(extra)
    return arch_from_dict(data, "test")
