"""Einsum as one loop nest: a loop per output label, inside it a loop per summed label, and
the product of the operands' elements accumulated.

Labels repeated inside one operand ("ii->i") index it with the same loop variable (a
diagonal); `...` stands for the broadcast dims, right-aligned across operands as in numpy,
and a dim of size 1 broadcasts (stride 0). Without "->" the output is the broadcast dims
followed by the labels used exactly once, in alphabetical order (numpy's implicit mode).
Float products accumulate in double, integers in 64 bits.
"""
from __future__ import annotations

from collections import Counter

from graphopt.backend.c import cdtypes
from graphopt.backend.c.emitter import index
from graphopt.backend.c.kernel import Kernel
from graphopt.backend.c.registry import register_op

ELLIPSIS = "..."


def parse_equation(equation: str, ranks: list[int]) -> tuple[list[list[str]], list[str]]:
    """(labels of each operand, labels of the output); broadcast dims become labels "0", "1"...
    (right-aligned, so an operand with fewer of them takes the last ones)."""
    equation = equation.replace(" ", "")
    lhs, arrow, rhs = equation.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"{len(terms)} terms for {len(ranks)} operands")
    widths = [rank - (len(term) - len(ELLIPSIS)) if ELLIPSIS in term else 0
              for term, rank in zip(terms, ranks)]
    broadcast = [str(i) for i in range(max(widths, default=0))]
    operands = []
    for term, width in zip(terms, widths):
        head, _, tail = term.partition(ELLIPSIS)
        labels = list(head) + broadcast[len(broadcast) - width:] + list(tail)
        operands.append(labels)
    for labels, rank in zip(operands, ranks):
        if len(labels) != rank:
            raise ValueError(f"term of {len(labels)} labels for a rank-{rank} operand")
    if arrow:
        head, _, tail = rhs.partition(ELLIPSIS)
        output = list(head) + (broadcast if ELLIPSIS in rhs else []) + list(tail)
    else:
        counts = Counter(label for labels in operands for label in labels if label.isalpha())
        output = broadcast + sorted(label for label, n in counts.items() if n == 1)
    return operands, output


@register_op("Einsum", dtypes=cdtypes.NUMERIC)
def emit_einsum(k: Kernel) -> None:
    operands = [op for op in k.inputs if op is not None]
    y = k.outputs[0]
    try:
        labels, output = parse_equation(str(k.attr("equation")), [op.rank for op in operands])
    except ValueError as err:
        k.unsupported(f"Einsum equation '{k.attr('equation')}': {err}")
    sizes: dict[str, int] = {}
    for op, names in zip(operands, labels):
        for name, dim in zip(names, op.shape):
            if sizes.get(name, 1) not in (1, dim) and dim != 1:
                k.unsupported(f"Einsum label '{name}' has sizes {sizes[name]} and {dim}")
            sizes[name] = max(sizes.get(name, 1), dim)
    summed = [name for name in sizes if name not in output]
    wide = "double" if y.dtype in cdtypes.FLOATS else "int64_t"
    em = k.em
    with em.loops([sizes[name] for name in output], parallel=True) as out:
        variables = dict(zip(output, out))
        em.line(f"{wide} acc = 0;")
        with em.loops([sizes[name] for name in summed], prefix="r") as red:
            variables.update(zip(summed, red))
            factors = []
            for op, names in zip(operands, labels):
                terms = [variables[name] if dim != 1 else "0" for name, dim in zip(names, op.shape)]
                factors.append(f"({wide}){k.arg(op)}[{index(terms, op.strides)}]")
            em.line(f"acc += {' * '.join(factors) or '1'};")
        em.line(f"{k.arg(y)}[{index(out, y.strides)}] = ({y.ctype})acc;")
