"""Accelerator description: a TOML or JSON file parsed into frozen, validated dataclasses.

The file describes *what the hardware is*, nothing about how a layer is mapped onto it:

    name, clock_mhz, datatype, psum_bits
    dataflow          the default dataflow (ws, os, is, rs, nlr)
    [pe_array]        rows, cols, kind ("spatial" NoC array or "systolic"), multicast
    [register_files]  per-PE scratchpad entries (words) per operand; 0 = no scratchpad, only a
                      one-word pipeline register (the operand streams through the PE);
                      streamed_reads (MACs read streamed operands from the RF, see RegisterFiles)
    [global_buffer]   size_kb, banks, bank_width_bits, keep (operands it stores), double_buffered,
                      resident_fraction (share that may hold tensors between layers)
    [noc]             words_per_cycle from the global buffer into the array
    [dram]            bandwidth_gbps
    [vector]          lanes (pooling / elementwise ops per cycle; default rows*cols)
    [host]            link_gbps, gops, pj_per_byte, pj_per_op (ops the NPU cannot run)
    [energy]          table ("normalized" or "horowitz45") and optional pJ overrides per level

Every field is checked on load; an error names the file and the dotted field and says what is
allowed (graphopt.errors.NPUConfigError). Objects are complete when constructed.
"""
from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Mapping

from graphopt.errors import NPUConfigError
from graphopt.npu.energy_tables import DATATYPE_BITS, default_energies

PRESET_DIR = Path(__file__).parent / "presets"
OPERANDS = ("weights", "inputs", "outputs")
DATAFLOWS = ("ws", "os", "os_a", "os_c", "is", "rs", "nlr")
LEVELS = ("mac", "rf", "noc", "glb", "dram")


@dataclass(frozen=True)
class PEArray:
    rows: int
    cols: int
    kind: str = "spatial"      # "spatial" (multicast NoC) or "systolic" (neighbour links)
    multicast: bool = True

    @property
    def num_pes(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class RegisterFiles:
    """Per-PE scratchpad entries (words) for each operand; 0 means no scratchpad.

    `streamed_reads`: a MAC reads even the input operands the dataflow does not keep (they
    arrive over the NoC every use) out of the PE's register file, one RF access per use -- the
    Eyeriss analysis framework's a*b*c*d x EC(RF) term with RF reuse d = 1. When false they pass
    a pipeline register at no RF cost (a systolic PE). A PE without any scratchpad (all entries
    0, no-local-reuse) has no register file to read from either way.
    """

    weights: int
    inputs: int
    outputs: int
    streamed_reads: bool = False

    def entries(self, operand: str) -> int:
        return getattr(self, operand)

    @property
    def present(self) -> bool:
        return self.weights + self.inputs + self.outputs > 0


@dataclass(frozen=True)
class GlobalBuffer:
    size_kb: float
    banks: int = 1
    bank_width_bits: int = 64
    keep: tuple[str, ...] = OPERANDS
    double_buffered: bool = True
    resident_fraction: float = 0.5

    @property
    def size_bytes(self) -> int:
        return int(self.size_kb * 1024)


@dataclass(frozen=True)
class NoC:
    words_per_cycle: int = 0   # 0 = derived from the global buffer's banks and width


@dataclass(frozen=True)
class DRAM:
    bandwidth_gbps: float


@dataclass(frozen=True)
class Host:
    link_gbps: float = 8.0
    gops: float = 20.0
    pj_per_byte: float = 100.0
    pj_per_op: float = 50.0


@dataclass(frozen=True)
class Energy:
    table: str = "normalized"
    overrides: tuple[tuple[str, float], ...] = ()


@dataclass(frozen=True)
class Arch:
    name: str
    clock_mhz: float
    datatype: str
    pe_array: PEArray
    register_files: RegisterFiles
    global_buffer: GlobalBuffer
    dram: DRAM
    noc: NoC = NoC()
    host: Host = Host()
    energy: Energy = Energy()
    vector_lanes: int = 0
    psum_bits: int = 0
    dataflow: str = "ws"       # the default dataflow when none is asked for
    description: str = ""
    source: str = ""
    energy_pj: Mapping[str, float] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        rf_bytes = max(self.register_files.weights, self.register_files.inputs,
                       self.register_files.outputs, 1) * self.word_bytes
        table = default_energies(self.energy.table, self.datatype, rf_bytes,
                                 self.global_buffer.size_bytes)
        table.update(dict(self.energy.overrides))
        object.__setattr__(self, "energy_pj", table)

    # --- derived quantities ----------------------------------------------------------------
    @property
    def bits(self) -> int:
        return DATATYPE_BITS[self.datatype]

    @property
    def word_bytes(self) -> float:
        return self.bits / 8

    @property
    def psum_width(self) -> int:
        return self.psum_bits or self.bits

    @property
    def lanes(self) -> int:
        return self.vector_lanes or self.pe_array.num_pes

    @property
    def dram_bytes_per_cycle(self) -> float:
        return self.dram.bandwidth_gbps * 1e9 / (self.clock_mhz * 1e6)

    @property
    def glb_words_per_cycle(self) -> float:
        gb = self.global_buffer
        return gb.banks * gb.bank_width_bits / self.bits

    @property
    def noc_words_per_cycle(self) -> float:
        return self.noc.words_per_cycle or self.glb_words_per_cycle

    @property
    def peak_macs_per_cycle(self) -> int:
        return self.pe_array.num_pes

    def with_datatype(self, datatype: str) -> "Arch":
        """The same hardware at another word type (energies re-derived unless overridden)."""
        if datatype not in DATATYPE_BITS:
            raise NPUConfigError(f"datatype '{datatype}' is not supported; use one of "
                                 f"{', '.join(DATATYPE_BITS)}")
        return replace(self, datatype=datatype)

    def with_storage(self, rf: RegisterFiles | None = None, glb_kb: float | None = None) -> "Arch":
        """The same hardware with other scratchpad / global-buffer sizes (area studies)."""
        gb = self.global_buffer if glb_kb is None else replace(self.global_buffer, size_kb=glb_kb)
        return replace(self, register_files=rf or self.register_files, global_buffer=gb)


# --- loading -------------------------------------------------------------------------------------
class _Fields:
    """Reads one table of the file, checking types and ranges and rejecting unknown keys."""

    def __init__(self, table: Any, path: str, where: str):
        if not isinstance(table, dict):
            raise NPUConfigError(f"{where}: '{path}' must be a table, got {type(table).__name__}")
        self.table, self.path, self.where = table, path, where
        self.used: set[str] = set()

    def _name(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def _fail(self, key: str, message: str) -> NPUConfigError:
        return NPUConfigError(f"{self.where}: field '{self._name(key)}' {message}")

    def get(self, key: str, kind: type, default: Any = None, *, required: bool = False,
            positive: bool = False, non_negative: bool = False, choices: tuple = ()) -> Any:
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self._fail(key, "is missing")
            return default
        value = self.table[key]
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise self._fail(key, f"must be {kind.__name__}, got {value!r}")
        if positive and value <= 0:
            raise self._fail(key, f"must be positive, got {value!r}")
        if non_negative and value < 0:
            raise self._fail(key, f"must not be negative, got {value!r}")
        if choices and value not in choices:
            raise self._fail(key, f"must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value

    def sub(self, key: str, required: bool = True) -> "_Fields":
        self.used.add(key)
        if key not in self.table:
            if required:
                raise self._fail(key, "is missing (a table)")
            return _Fields({}, self._name(key), self.where)
        return _Fields(self.table[key], self._name(key), self.where)

    def done(self) -> None:
        unknown = sorted(set(self.table) - self.used)
        if unknown:
            raise self._fail(unknown[0], "is not a known field (check the spelling)")


def arch_from_dict(data: Mapping[str, Any], where: str = "<dict>") -> Arch:
    """Build and validate an Arch from parsed TOML/JSON data."""
    top = _Fields(dict(data), "", where)
    datatype = top.get("datatype", str, required=True, choices=tuple(DATATYPE_BITS))

    pe = top.sub("pe_array")
    pe_array = PEArray(rows=pe.get("rows", int, required=True, positive=True),
                       cols=pe.get("cols", int, required=True, positive=True),
                       kind=pe.get("kind", str, "spatial", choices=("spatial", "systolic")),
                       multicast=pe.get("multicast", bool, True))
    pe.done()

    rf = top.sub("register_files")
    register_files = RegisterFiles(*(rf.get(op, int, required=True, non_negative=True)
                                     for op in OPERANDS),
                                   streamed_reads=rf.get("streamed_reads", bool, False))
    rf.done()

    gb = top.sub("global_buffer")
    keep = gb.get("keep", list, list(OPERANDS))
    for op in keep:
        if op not in OPERANDS:
            raise NPUConfigError(f"{where}: field 'global_buffer.keep' lists '{op}'; "
                                 f"allowed: {', '.join(OPERANDS)}")
    global_buffer = GlobalBuffer(
        size_kb=gb.get("size_kb", float, required=True, positive=True),
        banks=gb.get("banks", int, 1, positive=True),
        bank_width_bits=gb.get("bank_width_bits", int, 64, positive=True),
        keep=tuple(op for op in OPERANDS if op in keep),
        double_buffered=gb.get("double_buffered", bool, True),
        resident_fraction=gb.get("resident_fraction", float, 0.5, non_negative=True))
    if global_buffer.resident_fraction >= 1.0:
        raise NPUConfigError(f"{where}: field 'global_buffer.resident_fraction' must be < 1")
    gb.done()

    dr = top.sub("dram")
    dram = DRAM(bandwidth_gbps=dr.get("bandwidth_gbps", float, required=True, positive=True))
    dr.done()

    nc = top.sub("noc", required=False)
    noc = NoC(words_per_cycle=nc.get("words_per_cycle", int, 0, non_negative=True))
    nc.done()

    vec = top.sub("vector", required=False)
    lanes = vec.get("lanes", int, 0, non_negative=True)
    vec.done()

    hs = top.sub("host", required=False)
    host = Host(link_gbps=hs.get("link_gbps", float, Host.link_gbps, positive=True),
                gops=hs.get("gops", float, Host.gops, positive=True),
                pj_per_byte=hs.get("pj_per_byte", float, Host.pj_per_byte, non_negative=True),
                pj_per_op=hs.get("pj_per_op", float, Host.pj_per_op, non_negative=True))
    hs.done()

    en = top.sub("energy", required=False)
    table = en.get("table", str, "normalized", choices=("normalized", "horowitz45"))
    overrides = tuple((level, en.get(level, float, non_negative=True))
                      for level in LEVELS if level in en.table)
    en.done()

    arch = Arch(name=top.get("name", str, required=True),
                description=top.get("description", str, ""),
                clock_mhz=top.get("clock_mhz", float, required=True, positive=True),
                datatype=datatype,
                psum_bits=top.get("psum_bits", int, 0, non_negative=True),
                pe_array=pe_array, register_files=register_files, global_buffer=global_buffer,
                dram=dram, noc=noc, host=host, energy=Energy(table, overrides),
                vector_lanes=lanes, source=where,
                dataflow=top.get("dataflow", str, "ws", choices=DATAFLOWS))
    top.done()
    return arch


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def load_arch(spec: "str | os.PathLike") -> Arch:
    """An Arch from a preset name (`eyeriss`, `tpu-32x32`, ...) or a .toml / .json file path."""
    path = Path(spec)
    if not path.suffix and (PRESET_DIR / f"{spec}.toml").exists():
        path = PRESET_DIR / f"{spec}.toml"
    if not path.exists():
        raise NPUConfigError(f"architecture '{spec}' is neither a file nor a preset; presets: "
                             f"{', '.join(preset_names())}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise NPUConfigError(f"{path}: not valid {path.suffix.lstrip('.') or 'TOML'}: {exc}") \
            from None
    return arch_from_dict(data, str(path))
