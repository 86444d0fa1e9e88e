"""Recurrent layers: RNN, GRU, LSTM (forward, reverse, bidirectional; layout 0 or 1; optional
bias, sequence_lens, initial states, peepholes; clip; any table activation).

Per direction, per batch row, per time step t (reversed for the reverse direction, within the
row's sequence length), with gates computed as x_t W^T + h R^T + Wb + Rb:
    RNN   h = f(gate)
    GRU   z = f(.), r = f(.), n = g(x Wn + (r * h) Rn + Rbn + Wbn)   [linear_before_reset=0]
                                 n = g(x Wn + r * (h Rn + Rbn) + Wbn)  [linear_before_reset=1]
          h = (1 - z) * n + z * h
    LSTM  i = f(. + Pi c), f = f(. + Pf c), c~ = g(.), c = f * c + i * c~,
          o = f(. + Po c), h = o * h(c)           (gate order i, o, f, c as in the spec)
Y holds h at every step (0 past a row's sequence length), Y_h / Y_c the last h / c. Dot
products accumulate in double; states live in scratch memory.
"""
from __future__ import annotations

from dataclasses import dataclass

from graphopt.backend.c import cdtypes, exprs
from graphopt.backend.c.kernel import Kernel, Operand
from graphopt.backend.c.registry import register_op
from graphopt.ir.types import DType


@dataclass(frozen=True)
class Cell:
    gates: int
    activations: tuple[str, ...]  # per direction, in the spec's order (f, g, h)


CELLS = {"RNN": Cell(1, ("Tanh",)), "GRU": Cell(3, ("Sigmoid", "Tanh")),
         "LSTM": Cell(4, ("Sigmoid", "Tanh", "Tanh"))}
# activation -> (expression-table op, its attributes that come from activation_alpha/_beta)
_ACTIVATIONS = {"Sigmoid": ("Sigmoid", ()), "Tanh": ("Tanh", ()), "Relu": ("Relu", ()),
                "LeakyRelu": ("LeakyRelu", ("alpha",)),
                "ThresholdedRelu": ("ThresholdedRelu", ("alpha",)),
                "HardSigmoid": ("HardSigmoid", ("alpha", "beta")), "Elu": ("Elu", ("alpha",)),
                "Softsign": ("Softsign", ()), "Softplus": ("Softplus", ())}


@dataclass(frozen=True)
class _Layout:
    """Element offsets of X, Y and the states for layout 0 ([seq, batch]) or 1 ([batch, seq])."""

    seq: int
    batch: int
    dirs: int
    hidden: int
    inputs: int
    batch_major: bool

    def x(self, t: str, b: str) -> str:
        row = f"({b} * {self.seq} + {t})" if self.batch_major else f"({t} * {self.batch} + {b})"
        return f"{row} * {self.inputs}"

    def y(self, t: str, d: int, b: str) -> str:
        if self.batch_major:
            return f"(({b} * {self.seq} + {t}) * {self.dirs} + {d}) * {self.hidden}"
        return f"(({t} * {self.dirs} + {d}) * {self.batch} + {b}) * {self.hidden}"

    def state(self, d: int, b: str) -> str:
        if self.batch_major:
            return f"({b} * {self.dirs} + {d}) * {self.hidden}"
        return f"({d} * {self.batch} + {b}) * {self.hidden}"


def _activations(k: Kernel, cell: Cell, dirs: int) -> list[list[tuple[str, dict]]]:
    """Per direction, the (table op, attributes) of each activation."""
    names = list(k.attr("activations", list(cell.activations) * dirs))
    alphas, betas = list(k.attr("activation_alpha", [])), list(k.attr("activation_beta", []))
    chosen = []
    for name in names:
        if name not in _ACTIVATIONS:
            k.unsupported(f"{k.node.op_type} activation '{name}'")
        op, params = _ACTIVATIONS[name]
        attrs = {}
        if "alpha" in params and alphas:
            attrs["alpha"] = float(alphas.pop(0))
        if "beta" in params and betas:
            attrs["beta"] = float(betas.pop(0))
        chosen.append((op, attrs))
    per = len(cell.activations)
    if len(chosen) != per * dirs:
        k.unsupported(f"{k.node.op_type} with {len(chosen)} activations for {dirs} direction(s)")
    return [chosen[d * per:(d + 1) * per] for d in range(dirs)]


@register_op("RNN", "GRU", "LSTM", dtypes=cdtypes.FLOATS)
def emit_recurrent(k: Kernel) -> None:
    op = k.node.op_type
    cell = CELLS[op]
    x, r = k.input(0), k.input(2)
    direction = k.attr("direction", "forward")
    dirs = 2 if direction == "bidirectional" else 1
    if int(k.attr("input_forget", 0)):
        k.unsupported("LSTM with input_forget=1")
    lengths = k.input(4)
    if lengths is not None and lengths.dtype not in (DType.INT32, DType.INT64):
        k.unsupported(f"{op} sequence_lens of type {lengths.dtype.name}")
    batch_major = bool(int(k.attr("layout", 0)))
    seq, batch = (x.shape[1], x.shape[0]) if batch_major else (x.shape[0], x.shape[1])
    hidden = r.shape[-1]
    layout = _Layout(seq, batch, dirs, hidden, x.shape[2], batch_major)
    acts = _activations(k, cell, dirs)
    em, T = k.em, x.ctype
    h_state = f"({T}*){k.scratch(hidden * x.dtype.itemsize)}"
    c_state = f"({T}*){k.scratch(hidden * x.dtype.itemsize)}"
    gates = f"({T}*){k.scratch(cell.gates * hidden * x.dtype.itemsize)}"
    em.line(f"{T}* H = {h_state};")
    em.line(f"{T}* Cs = {c_state};")
    em.line(f"{T}* G = {gates};")
    em.line("(void)Cs;")
    for d in range(dirs):
        reverse = direction == "reverse" or d == 1
        with em.block(f"/* direction {d}{' (reverse)' if reverse else ''} */"), \
                em.loops([batch], prefix="b") as (b,):
            _emit_row(k, cell, layout, d, b, reverse, acts[d])


def _emit_row(k: Kernel, cell: Cell, layout: _Layout, d: int, b: str, reverse: bool,
              acts: list[tuple[str, dict]]) -> None:
    """One direction of one batch row: initial states, the time loop, Y, Y_h, Y_c."""
    em, hidden = k.em, layout.hidden
    lengths, initial_h = k.input(4), k.input(5)
    initial_c = k.input(6) if cell.gates == 4 else None
    if lengths is not None:
        em.line(f"const int64_t len = (int64_t){k.arg(lengths)}[{b}];")
        em.line(f"if (len < 0 || len > {layout.seq}) return 1;")
    else:
        em.line(f"const int64_t len = {layout.seq};")
    for state, init in (("H", initial_h), ("Cs", initial_c)):
        if state == "Cs" and cell.gates != 4:
            continue
        source = f"{k.arg(init)}[{layout.state(d, b)} + j]" if init is not None else "0"
        em.line(f"for (int64_t j = 0; j < {hidden}; ++j) {state}[j] = {source};")
    with em.block("for (int64_t s = 0; s < len; ++s)"):
        em.line(f"const int64_t t = {'len - 1 - s' if reverse else 's'};")
        _emit_gates(k, cell, layout, d, b)
        _emit_update(k, cell, d, acts)
        y = k.outputs[0] if k.outputs and k.outputs[0].used else None
        if y is not None:
            em.line(f"for (int64_t j = 0; j < {hidden}; ++j) "
                    f"{k.arg(y)}[{layout.y('t', d, b)} + j] = H[j];")
    y = k.outputs[0] if k.outputs and k.outputs[0].used else None
    if y is not None and lengths is not None:  # steps past the row's length are zeros
        em.line(f"for (int64_t t = len; t < {layout.seq}; ++t) for (int64_t j = 0; j < {hidden}; "
                f"++j) {k.arg(y)}[{layout.y('t', d, b)} + j] = 0;")
    for index, state in ((1, "H"), (2, "Cs")):
        out = k.outputs[index] if len(k.outputs) > index else None
        if out is not None and out.used:
            em.line(f"for (int64_t j = 0; j < {hidden}; ++j) "
                    f"{k.arg(out)}[{layout.state(d, b)} + j] = {state}[j];")


def _dot(k: Kernel, weights: Operand, row: str, vector: str, length: int) -> str:
    """Emit sum_p weights[row + p] * vector[p] in double; returns the variable."""
    name = k.em.temp("dot")
    k.em.line(f"double {name} = 0;")
    k.em.line(f"for (int64_t p = 0; p < {length}; ++p) "
              f"{name} += (double){k.arg(weights)}[{row} + p] * {vector}[p];")
    return name


def _emit_gates(k: Kernel, cell: Cell, layout: _Layout, d: int, b: str) -> None:
    """G[j] = x_t . W[d, j] + Wb[d, j] + h . R[d, j] + Rb[d, j]; for GRU's candidate rows the
    recurrent term waits for the reset gate (_emit_gru_update), and so does Rb when
    linear_before_reset puts it inside r * (...)."""
    em, hidden = k.em, layout.hidden
    x, w, r, bias = k.input(0), k.input(1), k.input(2), k.input(3)
    count = cell.gates * hidden
    gru = k.node.op_type == "GRU"
    recurrent_rows = 2 * hidden if gru else count
    late_bias = gru and int(k.attr("linear_before_reset", 0))
    em.line(f"const {x.ctype}* xt = {k.arg(x)} + {layout.x('t', b)};")
    with em.block(f"for (int64_t j = 0; j < {count}; ++j)"):
        total = _dot(k, w, f"({d} * {count} + j) * {layout.inputs}", "xt", layout.inputs)
        with em.block(f"if (j < {recurrent_rows})"):
            recur = _dot(k, r, f"({d} * {count} + j) * {hidden}", "H", hidden)
            em.line(f"{total} += {recur};")
        if bias is not None:
            rb = f"(double){k.arg(bias)}[{d} * {2 * count} + {count} + j]"
            if late_bias:
                rb = f"(j < {recurrent_rows} ? {rb} : 0)"
            em.line(f"{total} += (double){k.arg(bias)}[{d} * {2 * count} + j] + {rb};")
        em.line(f"G[j] = ({x.ctype}){total};")


def _activate(k: Kernel, act: tuple[str, dict], value: str, gate: bool = True) -> str:
    """The activation of `value`; a gate's input is clipped first when the node has `clip`
    (the cell state entering LSTM's h() is not, as in onnxruntime)."""
    clip = k.attr("clip")
    if clip is not None and gate:
        limit = cdtypes.literal(float(clip), DType.FLOAT)
        value = f"({value} < -{limit} ? -{limit} : ({value} > {limit} ? {limit} : {value}))"
    return exprs.render(k.em, act[0], act[1], [(value, k.input(0).dtype)])[0]


def _emit_update(k: Kernel, cell: Cell, d: int, acts: list[tuple[str, dict]]) -> None:
    """The new H (and C) from the gates G."""
    em, hidden = k.em, k.input(2).shape[-1]
    op = k.node.op_type
    if op == "RNN":
        with em.block(f"for (int64_t j = 0; j < {hidden}; ++j)"):
            em.line(f"H[j] = {_activate(k, acts[0], 'G[j]')};")
    elif op == "GRU":
        _emit_gru_update(k, d, acts, hidden)
    else:
        _emit_lstm_update(k, d, acts, hidden)


def _emit_gru_update(k: Kernel, d: int, acts: list[tuple[str, dict]], hidden: int) -> None:
    em, T, bias = k.em, k.input(0).ctype, k.input(3)
    with em.block(f"for (int64_t j = 0; j < {hidden}; ++j)"):
        em.line(f"G[j] = {_activate(k, acts[0], 'G[j]')};")  # z
        em.line(f"G[{hidden} + j] = {_activate(k, acts[0], f'G[{hidden} + j]')};")  # r
    before_reset = int(k.attr("linear_before_reset", 0))
    # Rn = h Rn + Rbn, scaled by r outside; or (r * h) Rn, with Rbn already in G
    source = "H[j]" if before_reset else f"G[{hidden} + j] * H[j]"
    em.line(f"{T} rh[{hidden}];")
    em.line(f"for (int64_t j = 0; j < {hidden}; ++j) rh[j] = {source};")
    em.line(f"{T} Rn[{hidden}];")
    with em.block(f"for (int64_t j = 0; j < {hidden}; ++j)"):
        dot = _dot(k, k.input(2), f"({d} * {3 * hidden} + {2 * hidden} + j) * {hidden}", "rh",
                   hidden)
        late = f" + (double){k.arg(bias)}[{d} * {6 * hidden} + {5 * hidden} + j]" \
            if bias is not None and before_reset else ""
        em.line(f"Rn[j] = ({T})({dot}{late});")
    reset = f"G[{hidden} + j] * " if before_reset else ""
    with em.block(f"for (int64_t j = 0; j < {hidden}; ++j)"):
        n = _activate(k, acts[1], f"(G[{2 * hidden} + j] + {reset}Rn[j])")
        em.line(f"H[j] = (({T})1 - G[j]) * {n} + G[j] * H[j];")


def _emit_lstm_update(k: Kernel, d: int, acts: list[tuple[str, dict]], hidden: int) -> None:
    em, peep = k.em, k.input(7)

    def peephole(gate: int, state: str) -> str:  # P[d] holds i, o, f
        return f" + {k.arg(peep)}[{(3 * d + gate) * hidden} + j] * {state}" if peep is not None \
            else ""

    with em.block(f"for (int64_t j = 0; j < {hidden}; ++j)"):
        i = _activate(k, acts[0], f"(G[j]{peephole(0, 'Cs[j]')})")
        f = _activate(k, acts[0], f"(G[{2 * hidden} + j]{peephole(2, 'Cs[j]')})")
        candidate = _activate(k, acts[1], f"G[{3 * hidden} + j]")
        em.line(f"Cs[j] = {f} * Cs[j] + {i} * {candidate};")
        out = _activate(k, acts[0], f"(G[{hidden} + j]{peephole(1, 'Cs[j]')})")
        em.line(f"H[j] = {out} * {_activate(k, acts[2], 'Cs[j]', gate=False)};")
