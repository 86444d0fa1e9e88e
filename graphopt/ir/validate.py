"""Can this model run at all? Checks, once at import, for models that are valid protobuf but that
no runtime can execute: negative dims, elementwise shapes that do not broadcast, a Reshape to an
incompatible element count, axes out of range, a Transpose perm that is not a permutation,
constant indices out of range, Conv/Gemm/MatMul weights that do not fit their input, ops the
default domain does not define.

Every check reads static facts only (declared or inferred types, constants) and gives up where a
dim is symbolic or unknown: a symbol may take any size, so it is compatible with everything, and
a valid model is never rejected. Per-op checks are a table keyed by (domain, op_type), filled by
the `rule` decorator; each rule raises `_Problem` with what is wrong, and `validate_graph` turns
that into one BadInputError line naming the node, the tensor and the problem.
"""
from __future__ import annotations

import functools
from typing import Callable, Sequence

import numpy as np
import onnx

from graphopt.errors import BadInputError
from graphopt.ir import ops
from graphopt.ir.axes import normalize_axis
from graphopt.ir.conv_geometry import ConvGeometry
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.types import Dim, broadcast_dims

Shape = tuple[Dim, ...]
_RULES: dict[ops.OpKey, Callable[[Node], None]] = {}
rule = ops.op_rule_decorator(_RULES)

MULTIDIRECTIONAL = ("Add", "Sub", "Mul", "Div", "Pow", "Mod", "Equal", "Less", "Greater",
                    "LessOrEqual", "GreaterOrEqual", "And", "Or", "Xor", "BitShift", "BitwiseAnd",
                    "BitwiseOr", "BitwiseXor", "Where", "Max", "Min", "Sum", "Mean")


class _Problem(Exception):
    """What is wrong with one node (validate_graph adds the node's name and op)."""


def validate_graph(graph: Graph) -> None:
    """Raise BadInputError (one line: node, tensor, problem) if the graph can never run."""
    for role, values in (("graph input", graph.inputs),
                         ("initializer", graph.initializers.values())):
        for value in values:
            problem = _negative_dims(value, role)
            if problem:
                raise BadInputError(f"{problem}; the model cannot run")
    local_functions = {(f.domain, f.name) for f in graph.info.functions}
    for node in graph.nodes:
        try:
            _check_node(node, node.key in local_functions)
        except _Problem as problem:
            raise BadInputError(f"node '{node.name}' ({node.op_type}): {problem}; the model "
                                "cannot run") from None


def _check_node(node: Node, local_function: bool) -> None:
    """_Problem for an unknown op, a negative output dim, or what the op's rule finds."""
    if not local_function:
        problem = unknown_op_problem(node.domain, node.op_type,
                                     node.graph.opset_imports.get(node.domain, 0))
        if problem:
            raise _Problem(problem)
    for out in node.outputs:
        problem = _negative_dims(out, "output")
        if problem:
            raise _Problem(problem)
    check = _RULES.get(node.key)
    if check is not None:
        check(node)


@functools.lru_cache(maxsize=None)  # asked for every node of a model
def unknown_op_problem(domain: str, op_type: str, opset: int) -> str:
    """Why (domain, op_type) cannot be an ONNX operator, or "" when onnx defines it (custom
    domains are never checked: their ops are passed through)."""
    domain = "" if domain == "ai.onnx" else domain
    if domain not in ("", "ai.onnx.ml") or onnx.defs.has(op_type, domain):
        return ""
    where = "the default domain" if domain == "" else f"domain '{domain}'"
    return (f"'{op_type}' is not an ONNX operator in {where} (opset {opset}); a custom op needs "
            "its own domain")


def _negative_dims(value: Value, role: str) -> str:
    shape = _shape(value)
    if shape and _has_negative(shape):
        return f"{role} '{value.name}' has a negative dim in shape {_fmt(shape)} (dims are >= 0)"
    return ""


def _has_negative(shape: Shape) -> bool:
    """Whether a static dim of a non-empty `shape` is negative (asked for every value at import:
    min() over plain ints runs in C; symbols and unknown dims take the slow path)."""
    try:
        return min(shape) < 0
    except TypeError:
        return any(isinstance(d, int) and d < 0 for d in shape)


# --- helpers -------------------------------------------------------------------------------------
def _shape(value: Value | None) -> Shape | None:
    return None if value is None or value.type is None else value.type.shape


def _rank(value: Value | None) -> int | None:
    shape = _shape(value)
    return None if shape is None else len(shape)


def _fmt(shape: Shape) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _desc(value: Value) -> str:
    return f"'{value.name}' {value.type}"


def _axes_of(node: Node, input_index: int = 1) -> list[int] | None:
    """The `axes` attribute, else the constant `axes` input (opset-dependent placement)."""
    if "axes" in node.attrs:
        return [int(a) for a in node.attrs["axes"]]
    return node.const_ints(input_index)


def _check_axis(axis: int, rank: int | None, what: str, value: Value,
                allow_end: bool = False, rank_of: str = "rank") -> int:
    """`axis` normalized to [0, rank) (or [0, rank] with allow_end); _Problem if out of range."""
    if rank is None:
        return axis
    high = rank if allow_end else rank - 1
    if not -rank <= axis <= high:
        raise _Problem(f"{what} {axis} is out of range for {_desc(value)} ({rank_of} {rank}, "
                       f"valid: {-rank}..{high})")
    return normalize_axis(axis, rank)


def _checked_axes(node: Node, rank: int | None, rank_of: str = "rank") -> list[int] | None:
    """The node's axes (see _axes_of) normalized to [0, rank); None when the axes or the rank are
    unknown. _Problem when one is out of range for input 0 (`rank_of` names what `rank` is)."""
    axes = _axes_of(node)
    if axes is None or rank is None:
        return None
    return [_check_axis(a, rank, "axis", node.input(0), rank_of=rank_of) for a in axes]


def _broadcasts_to(small: Shape, target: Shape) -> bool:
    """Unidirectional broadcasting: can `small` be stretched to `target`?"""
    if len(small) > len(target):
        return False
    for s, t in zip(reversed(small), reversed(target)):
        if isinstance(s, int) and isinstance(t, int) and s not in (1, t):
            return False
    return True


def _differ(a: Dim, b: Dim) -> bool:
    return isinstance(a, int) and isinstance(b, int) and a != b


# --- elementwise ---------------------------------------------------------------------------------
@rule(*MULTIDIRECTIONAL)
def _elementwise(node: Node) -> None:
    known = [v for v in node.inputs if _shape(v) is not None]
    shape: Shape = ()
    for i, value in enumerate(known):
        merged = broadcast_dims(shape, _shape(value))
        if merged is None:
            others = " and ".join(_desc(v) for v in known[:i])
            raise _Problem(f"inputs {others} and {_desc(value)} do not broadcast")
        shape = merged


@rule("PRelu")
def _prelu(node: Node) -> None:
    x, slope = _shape(node.input(0)), _shape(node.input(1))
    if x is not None and slope is not None and not _broadcasts_to(slope, x):
        raise _Problem(f"slope {_desc(node.input(1))} does not broadcast to input "
                       f"{_desc(node.input(0))}")


@rule("Expand")
def _expand(node: Node) -> None:
    data, shape = _shape(node.input(0)), node.const_ints(1)
    if data is not None and shape is not None and broadcast_dims(data, tuple(shape)) is None:
        raise _Problem(f"input {_desc(node.input(0))} cannot be expanded to shape {shape}")


# --- reshaping ----------------------------------------------------------------------------------
@rule("Reshape")
def _reshape(node: Node) -> None:
    data, target = node.input(0), node.const_ints(1)
    if target is None:
        return
    allowzero = int(node.attr("allowzero", 0))
    if target.count(-1) > 1:
        raise _Problem(f"shape {target} has more than one -1")
    if any(d < -1 for d in target):
        raise _Problem(f"shape {target} has a dim below -1")
    if allowzero and 0 in target and -1 in target:
        raise _Problem(f"shape {target} has both 0 and -1 with allowzero=1 (-1 cannot be "
                       "inferred)")
    shape = _shape(data)
    if shape is None:
        return
    resolved: list[Dim] = []
    for i, d in enumerate(target):
        if d == 0 and not allowzero:
            if i >= len(shape):
                raise _Problem(f"shape {target}: the 0 at position {i} copies dim {i} of input "
                               f"{_desc(data)}, which has rank {len(shape)}")
            resolved.append(shape[i])
        else:
            resolved.append(d)
    if not all(isinstance(d, int) for d in (*shape, *resolved)):
        return
    total = int(np.prod(shape, dtype=np.int64))
    known = int(np.prod([d for d in resolved if d != -1], dtype=np.int64))
    if -1 not in resolved and known != total:
        raise _Problem(f"input {_desc(data)} has {total} elements; shape {target} "
                       f"(allowzero={allowzero}) needs {known}")
    if -1 in resolved and known and total % known:
        raise _Problem(f"input {_desc(data)} has {total} elements, not a multiple of {known} "
                       f"as shape {target} needs")


@rule("Flatten")
def _flatten(node: Node) -> None:
    _check_axis(int(node.attr("axis", 1)), _rank(node.input(0)), "axis", node.input(0),
                allow_end=True)


@rule("Squeeze")
def _squeeze(node: Node) -> None:
    data = node.input(0)
    shape = _shape(data)
    for axis in _checked_axes(node, _rank(data)) or []:
        if isinstance(shape[axis], int) and shape[axis] != 1:
            raise _Problem(f"cannot squeeze axis {axis} of {_desc(data)}: its size is "
                           f"{shape[axis]}, not 1")


@rule("Unsqueeze")
def _unsqueeze(node: Node) -> None:
    axes, rank = _axes_of(node), _rank(node.input(0))
    out_rank = None if axes is None or rank is None else rank + len(axes)
    normalized = _checked_axes(node, out_rank, rank_of="output rank")
    if normalized is not None and len(set(normalized)) != len(normalized):
        raise _Problem(f"axes {axes} repeat an axis")


@rule("Transpose")
def _transpose(node: Node) -> None:
    perm, data = node.attr("perm"), node.input(0)
    if perm is None:
        return
    perm = [int(p) for p in perm]
    rank = _rank(data)
    if sorted(perm) != list(range(len(perm))) or (rank is not None and len(perm) != rank):
        size = rank if rank is not None else len(perm)
        raise _Problem(f"perm {perm} is not a permutation of 0..{size - 1} for input "
                       f"{_desc(data)}")


# --- axes ---------------------------------------------------------------------------------------
@rule("Softmax", "LogSoftmax", "Hardmax")
def _softmax(node: Node) -> None:
    _check_axis(int(node.attr("axis", -1)), _rank(node.input(0)), "axis", node.input(0))


@rule("ArgMax", "ArgMin")
def _argmax(node: Node) -> None:
    _check_axis(int(node.attr("axis", 0)), _rank(node.input(0)), "axis", node.input(0))


@rule(*sorted(op for _, op in ops.REDUCTIONS))
def _reduce(node: Node) -> None:
    _checked_axes(node, _rank(node.input(0)))


@rule("Concat")
def _concat(node: Node) -> None:
    inputs = [v for v in node.inputs if v is not None and _shape(v) is not None]
    if not inputs:
        return
    first = inputs[0]
    axis = _check_axis(int(node.attr("axis", 0)), _rank(first), "axis", first)
    for value in inputs[1:]:
        if _rank(value) != _rank(first):
            raise _Problem(f"inputs {_desc(first)} and {_desc(value)} have different ranks")
        for i, (a, b) in enumerate(zip(_shape(first), _shape(value))):
            if i != axis and _differ(a, b):
                raise _Problem(f"inputs {_desc(first)} and {_desc(value)} differ in dim {i} "
                               f"(concat axis {axis})")


@rule("Split")
def _split(node: Node) -> None:
    data = node.input(0)
    shape = _shape(data)
    axis = _check_axis(int(node.attr("axis", 0)), _rank(data), "axis", data)
    sizes = node.const_ints(1) if "split" not in node.attrs else list(node.attrs["split"])
    if sizes is None or shape is None:
        return
    if len(sizes) != len(node.outputs):
        raise _Problem(f"split {sizes} has {len(sizes)} parts for {len(node.outputs)} outputs")
    if any(s < 0 for s in sizes) or (isinstance(shape[axis], int) and sum(sizes) != shape[axis]):
        raise _Problem(f"split {sizes} does not add up to dim {axis} of {_desc(data)}")


# --- indexing -----------------------------------------------------------------------------------
def _check_indices(node: Node, axis: int) -> None:
    data, indices = node.input(0), node.input(1)
    shape = _shape(data)
    if shape is None or indices is None or indices.const is None or indices.const.size == 0:
        return
    size = shape[axis]
    if not isinstance(size, int):
        return
    low, high = int(indices.const.min()), int(indices.const.max())
    if low < -size or high >= size:
        bad = low if low < -size else high
        raise _Problem(f"constant index {bad} in '{indices.name}' is out of range for dim "
                       f"{axis} (size {size}) of {_desc(data)} (valid: {-size}..{size - 1})")


@rule("Gather")
def _gather(node: Node) -> None:
    data = node.input(0)
    axis = _check_axis(int(node.attr("axis", 0)), _rank(data), "axis", data)
    _check_indices(node, axis)


@rule("GatherElements")
def _gather_elements(node: Node) -> None:
    data, indices = node.input(0), node.input(1)
    axis = _check_axis(int(node.attr("axis", 0)), _rank(data), "axis", data)
    if _rank(indices) is not None and _rank(data) is not None and _rank(indices) != _rank(data):
        raise _Problem(f"indices {_desc(indices)} must have the rank of data {_desc(data)}")
    _check_indices(node, axis)


# --- weights ------------------------------------------------------------------------------------
def _window_shapes(node: Node) -> "tuple[Shape, Shape] | None":
    """Input and weight shapes of a Conv/ConvTranspose (None when unknown), checked to have the
    same rank, at least 3 (N, C, spatial...)."""
    x, w = node.input(0), node.input(1)
    xs, ws = _shape(x), _shape(w)
    if xs is None or ws is None:
        return None
    if len(xs) != len(ws) or len(xs) < 3:
        raise _Problem(f"weight {_desc(w)} does not fit input {_desc(x)}: both need the same "
                       "rank, at least 3 (N, C, spatial...)")
    return xs, ws


@rule("Conv")
def _conv(node: Node) -> None:
    x, w, b = node.input(0), node.input(1), node.input(2)
    shapes = _window_shapes(node)
    if shapes is None:
        return
    xs, ws = shapes
    group = int(node.attr("group", 1))
    if isinstance(ws[1], int) and _differ(xs[1], ws[1] * group):
        raise _Problem(f"input {_desc(x)} has {xs[1]} channels but weight {_desc(w)} with "
                       f"group={group} expects {ws[1]} x {group} = {ws[1] * group}")
    if isinstance(ws[0], int) and ws[0] % group:
        raise _Problem(f"weight {_desc(w)} has {ws[0]} output channels, not a multiple of "
                       f"group={group}")
    kernel = node.attr("kernel_shape")
    if kernel is not None and any(_differ(k, d) for k, d in zip(kernel, ws[2:])):
        raise _Problem(f"kernel_shape {list(kernel)} does not match weight {_desc(w)}")
    bs = _shape(b)
    if bs is not None and (len(bs) != 1 or _differ(bs[0], ws[0])):
        raise _Problem(f"bias {_desc(b)} must have shape [{ws[0]}] for weight {_desc(w)}")
    _check_conv_output(node, xs, ws)


def _check_conv_output(node: Node, xs: Shape, ws: Shape) -> None:
    """An explicit-padding (or VALID) Conv whose kernel is larger than its padded input."""
    if node.attr("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return  # SAME pads as needed: any input size works
    spatial = len(xs) - 2
    if len(node.attr("pads") or [0] * 2 * spatial) != 2 * spatial:
        return
    geometry = ConvGeometry.of(node)
    for i in range(min(spatial, geometry.spatial_rank)):
        size = xs[2 + i]
        if not isinstance(size, int) or not isinstance(ws[2 + i], int):
            continue
        # the output size, (span - extent) // stride + 1, is < 1 exactly when span < extent
        if size + geometry.pads_begin[i] + geometry.pads_end[i] < geometry.extent(i):
            raise _Problem(f"kernel {list(ws[2:])} (dilations {list(geometry.dilations)}) is "
                           f"larger than input {_desc(node.input(0))} padded by "
                           f"{list(geometry.pads)} in spatial dim {i}")


@rule("ConvTranspose")
def _conv_transpose(node: Node) -> None:
    x, w = node.input(0), node.input(1)
    shapes = _window_shapes(node)
    if shapes is None:
        return
    xs, ws = shapes
    if _differ(xs[1], ws[0]):
        raise _Problem(f"input {_desc(x)} has {xs[1]} channels but weight {_desc(w)} expects "
                       f"{ws[0]}")


@rule("Gemm")
def _gemm(node: Node) -> None:
    a, b, c = node.input(0), node.input(1), node.input(2)
    sa, sb = _shape(a), _shape(b)
    for value, shape in ((a, sa), (b, sb)):
        if shape is not None and len(shape) != 2:
            raise _Problem(f"input {_desc(value)} must be 2-D")
    if sa is None or sb is None:
        return
    trans_a, trans_b = int(node.attr("transA", 0)), int(node.attr("transB", 0))
    m, k_a = (sa[1], sa[0]) if trans_a else sa
    k_b, n = (sb[1], sb[0]) if trans_b else sb
    if _differ(k_a, k_b):
        raise _Problem(f"A {_desc(a)} (transA={trans_a}) has K={k_a} but B {_desc(b)} "
                       f"(transB={trans_b}) has K={k_b}")
    sc = _shape(c)
    if sc is not None and not _broadcasts_to(sc, (m, n)):
        raise _Problem(f"C {_desc(c)} does not broadcast to the output shape {_fmt((m, n))}")


@rule("MatMul", "MatMulInteger", "QLinearMatMul")
def _matmul(node: Node) -> None:
    b_index = 3 if node.op_type == "QLinearMatMul" else 1
    a, b = node.input(0), node.input(b_index)
    sa, sb = _shape(a), _shape(b)
    if sa is None or sb is None:
        return
    if not sa or not sb:
        raise _Problem(f"inputs {_desc(a)} and {_desc(b)} must have rank >= 1")
    k_b = sb[0] if len(sb) == 1 else sb[-2]
    if _differ(sa[-1], k_b):
        raise _Problem(f"inner dims differ: {_desc(a)} has K={sa[-1]}, {_desc(b)} has K={k_b}")
    if broadcast_dims(_batch(sa), _batch(sb)) is None:
        raise _Problem(f"batch dims of {_desc(a)} and {_desc(b)} do not broadcast")


def _batch(shape: Sequence[Dim]) -> Shape:
    return tuple(shape[:-2]) if len(shape) > 2 else ()
