"""Default energy-per-access tables for the NPU model.

Two tables ship, chosen by `[energy] table = ...` in an architecture file:

* ``normalized`` -- the cost of moving one word relative to one MAC at the same word width, as in
  the Eyeriss survey (Sze et al., Proc. IEEE 2017, Fig. 8; Chen et al., ISCA 2016, Table IV):
  register file 1x, PE-to-PE / array NoC 2x, global buffer 6x, DRAM 200x. They are turned into
  picojoules by multiplying with the MAC energy of the architecture's datatype (below), so totals
  and TOPS/W stay in absolute units.
* ``horowitz45`` -- absolute 45 nm figures from M. Horowitz, "Computing's energy problem",
  ISSCC 2014: int8 add 0.03 pJ, mult 0.2 pJ; fp16 add 0.4 pJ, mult 1.1 pJ; fp32 add 0.9 pJ,
  mult 3.7 pJ; a 64-bit SRAM read costs 10 pJ (8 KB array), 20 pJ (32 KB), 100 pJ (1 MB); a 64-bit
  DRAM access costs 1.3-2.6 nJ. All memory figures here are kept in their 64-bit form and scaled
  to the word width (`bits / 64`); we never mix them with the per-32-bit variants of the same talk.

Assumptions (documented in docs/NPU.md): int16 (no Horowitz figure) is estimated by scaling the
int8 multiplier quadratically and the adder linearly with width; SRAM energy is interpolated
log-log between the three Horowitz points and extrapolated along the 8 KB-32 KB slope for
register files smaller than 8 KB; DRAM uses the low end, 1.3 nJ per 64 bits; the PE-to-PE NoC
hop costs twice a register-file access, the survey's ratio.
"""
from __future__ import annotations

import math

# (add pJ, mult pJ) per datatype, Horowitz ISSCC 2014 (45 nm).
HOROWITZ_ARITH_PJ: dict[str, tuple[float, float]] = {
    "int8": (0.03, 0.2),
    "int16": (0.03 * 2, 0.2 * 4),  # estimate: adder ~ width, multiplier ~ width^2
    "fp16": (0.4, 1.1),
    "fp32": (0.9, 3.7),
}
# 64-bit SRAM read energy (pJ) at array sizes in bytes.
HOROWITZ_SRAM_64B_PJ: tuple[tuple[int, float], ...] = (
    (8 * 1024, 10.0), (32 * 1024, 20.0), (1024 * 1024, 100.0))
HOROWITZ_DRAM_64B_PJ = 1300.0  # 1.3 nJ per 64-bit access (range 1.3-2.6 nJ)

NORMALIZED = {"mac": 1.0, "rf": 1.0, "noc": 2.0, "glb": 6.0, "dram": 200.0}

DATATYPE_BITS = {"int8": 8, "int16": 16, "fp16": 16, "fp32": 32}


def mac_energy_pj(datatype: str) -> float:
    """One multiply-accumulate at `datatype` (an add plus a multiply), Horowitz 45 nm."""
    add, mult = HOROWITZ_ARITH_PJ[datatype]
    return add + mult


def sram_energy_64b_pj(size_bytes: float) -> float:
    """Energy of one 64-bit SRAM read for an array of `size_bytes`, log-log interpolated."""
    points = HOROWITZ_SRAM_64B_PJ
    size = max(float(size_bytes), 1.0)
    if size <= points[0][0]:
        (s0, e0), (s1, e1) = points[0], points[1]
    elif size >= points[-1][0]:
        (s0, e0), (s1, e1) = points[-2], points[-1]
    else:
        i = next(k for k in range(1, len(points)) if size <= points[k][0])
        (s0, e0), (s1, e1) = points[i - 1], points[i]
    slope = math.log(e1 / e0) / math.log(s1 / s0)
    return e0 * (size / s0) ** slope


def default_energies(table: str, datatype: str, rf_bytes: float, glb_bytes: float
                     ) -> dict[str, float]:
    """pJ per word access at each level (keys mac, rf, noc, glb, dram) for one table."""
    mac = mac_energy_pj(datatype)
    if table == "normalized":
        return {level: ratio * mac for level, ratio in NORMALIZED.items()}
    bits = DATATYPE_BITS[datatype]
    scale = bits / 64.0
    rf = sram_energy_64b_pj(rf_bytes) * scale
    return {"mac": mac, "rf": rf, "noc": 2.0 * rf,
            "glb": sram_energy_64b_pj(glb_bytes) * scale,
            "dram": HOROWITZ_DRAM_64B_PJ * scale}
