"""Workload: the per-layer loop nests the NPU runs, read from the IR after the passes.

Every MAC layer is one 8-deep loop nest over the dims

    G groups, N batch, M output channels (per group), C input channels (per group),
    P, Q output rows / columns, R, S filter rows / columns

with weights W[G,M,C,R,S], inputs I[N,G,C,(P,R),(Q,S)] (a sliding window: an input row extent
is (P-1)*stride + (R-1)*dilation + 1) and outputs O[N,G,M,P,Q]. A convolution fills all eight
(depthwise: M = C = 1, G = channels), a Gemm / MatMul / FC uses N = rows, C = K, M = columns,
and a batched MatMul with two activation operands puts the batch in G.

Other nodes become vector work (pooling, elementwise, normalization: ops counted per element),
copies (Concat, Transpose, Slice: bytes moved through the DMA), free metadata ops (Reshape,
Flatten), compile-time constants (a node whose inputs are all constants) or host work (what the
NPU cannot run: shape arithmetic, data-dependent ops, control flow, unknown shapes).

A fusion group (graphopt.ir.fusion: a Conv/Gemm/MatMul and its elementwise epilogue, the same
groups the C backend runs as one kernel) is one layer: the anchor's loop nest, the epilogue's
element ops as vector work done while outputs drain, the epilogue's other operands (a residual)
as extra inputs, and only the group's final tensor as output. A node made by a fusion pass with
an op type we have no rule for is one layer too: its MAC part is found from its weight input.
Symbolic or unknown dims count as 1; `batch` multiplies every activation tensor (and the N dim).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import Callable, Iterable

from graphopt.ir import ops
from graphopt.ir.conv_geometry import ConvGeometry
from graphopt.ir.fusion import FusionGroup, ensure_fusion_groups
from graphopt.ir.graph import Graph, Node, Value

log = logging.getLogger(__name__)

DIMS = ("G", "N", "M", "C", "P", "Q", "R", "S")
DIM_INDEX = {d: i for i, d in enumerate(DIMS)}
OPERAND_DIMS = {
    "weights": frozenset("GMCRS"),
    "inputs": frozenset("GNCPQRS"),
    "outputs": frozenset("GNMPQ"),
}
REDUCTION_DIMS = frozenset("CRS")

KINDS = ("mac", "vector", "copy", "free", "const", "host")


def _keys(*names: str) -> frozenset[tuple[str, str]]:
    return frozenset(("", n) for n in names)


MAC_OPS = _keys("Conv", "Gemm", "MatMul")
POOLING = _keys("MaxPool", "AveragePool", "LpPool")
GLOBAL_POOLING = _keys("GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool")
REDUCTIONS = _keys("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd",
                   "ReduceL2", "ReduceL1", "ReduceSumSquare", "ReduceLogSumExp", "ArgMax", "ArgMin")
# Vector ops per output element for ops that are more than one ALU op per element.
VECTOR_COST = {
    "BatchNormalization": 2, "InstanceNormalization": 6, "LayerNormalization": 6,
    "Softmax": 5, "LogSoftmax": 6, "Gelu": 8, "Erf": 6, "Resize": 4, "LRN": 0,
}
NORMALIZATION = _keys(*VECTOR_COST)
FREE_OPS = _keys("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Dropout")
COPY_OPS = (ops.DATA_MOVEMENT - FREE_OPS) | _keys("GatherElements", "GatherND", "ScatterND")
# Ops that never run on the array even with static shapes: shape arithmetic and data-dependent
# output sizes.
HOST_OPS = ops.SHAPE_ONLY | ops.CONTROL_FLOW | ops.NONDETERMINISTIC | _keys(
    "NonZero", "TopK", "NonMaxSuppression", "Unique", "Range", "ConstantOfShape", "Einsum")


@dataclass(frozen=True)
class Layer:
    """One schedulable unit: a node (or a fused node) of the optimized graph."""

    name: str
    op_type: str
    kind: str
    sizes: tuple[int, ...] = (1,) * len(DIMS)
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    im2col: float = 1.0            # input expansion when lowered to a GEMM (1.0 = not lowered)
    vector_ops: int = 0            # ALU ops on the vector lanes (pooling, epilogues, ...)
    inputs: tuple[tuple[str, int], ...] = ()   # activation tensors read: (value, elements)
    outputs: tuple[tuple[str, int], ...] = ()  # tensors written: (value, elements)
    weight_value: str = ""         # value holding the MAC layer's weights ('' = none)
    weight_is_const: bool = True
    input_value: str = ""          # the MAC layer's streamed input
    origin: str = ""
    reason: str = ""               # why a layer runs on the host

    # --- queries -------------------------------------------------------------------------
    def size(self, dim: str) -> int:
        return self.sizes[DIM_INDEX[dim]]

    @property
    def macs(self) -> int:
        return math.prod(self.sizes) if self.kind == "mac" else 0

    @property
    def input_elements(self) -> int:
        return sum(n for _, n in self.inputs)

    @property
    def output_elements(self) -> int:
        return sum(n for _, n in self.outputs)

    @property
    def weight_elements(self) -> int:
        g, _, m, c, _, _, r, s = self.sizes
        return g * m * c * r * s if self.kind == "mac" else 0

    def shape_key(self) -> tuple:
        """Everything the mapper looks at, for caching mappings of identical layers."""
        return (self.kind, self.sizes, self.stride, self.dilation, self.im2col)

    def as_gemm(self) -> "Layer":
        """The im2col lowering a systolic array runs: rows = N*P*Q pixels, K = C*R*S, cols = M.

        The input matrix has K*N*P*Q elements for N*C*H*W distinct ifmap values; `im2col` keeps
        that ratio so DRAM traffic is charged for distinct values only (the expansion happens
        in the buffer's address generator, not in DRAM).
        """
        g, n, m, c, p, q, r, s = self.sizes
        if (p, q, r, s) == (1, 1, 1, 1):
            return self
        h = (p - 1) * self.stride[0] + (r - 1) * self.dilation[0] + 1
        w = (q - 1) * self.stride[1] + (s - 1) * self.dilation[1] + 1
        expansion = max(1.0, (c * r * s * p * q) / (c * h * w))
        return replace(self, sizes=(g, n * p * q, m, c * r * s, 1, 1, 1, 1), stride=(1, 1),
                       dilation=(1, 1), im2col=expansion)

    def describe(self) -> str:
        return f"{self.op_type} layer '{self.name}'"


# --- value helpers ------------------------------------------------------------------------------
def _dims(value: Value | None) -> tuple[int, ...] | None:
    """Static dims of a value with symbolic / unknown dims counted as 1, or None if rank unknown."""
    if value is None or value.shape is None:
        return None
    return tuple(d if isinstance(d, int) and d > 0 else 1 for d in value.shape)


def _elements(value: Value, batch: int) -> int:
    dims = _dims(value) or (1,)
    count = math.prod(dims)
    return count if value.is_const else count * batch


def _activation_inputs(node: Node, batch: int) -> tuple[tuple[str, int], ...]:
    return tuple((v.name, _elements(v, batch)) for v in node.inputs
                 if v is not None and not v.is_const)


def _outputs(node: Node, batch: int) -> tuple[tuple[str, int], ...]:
    return tuple((v.name, _elements(v, batch)) for v in node.outputs)


def _pair(values: Iterable[int] | None, default: int = 1) -> tuple[int, int]:
    vals = list(values or [])
    if not vals:
        return (default, default)
    return (int(vals[0]), int(vals[1]) if len(vals) > 1 else 1)


# --- builders ---------------------------------------------------------------------------------
Builder = Callable[[Node, int], Layer]
_BUILDERS: list[tuple[frozenset, Builder]] = []


def workload_rule(family: frozenset) -> Callable[[Builder], Builder]:
    """Register the layer builder for a family of (domain, op_type) keys."""
    def register(fn: Builder) -> Builder:
        _BUILDERS.append((family, fn))
        return fn
    return register


def _base(node: Node, batch: int, kind: str, **extra) -> Layer:
    return Layer(name=node.name or node.op_type, op_type=node.op_type, kind=kind,
                 inputs=_activation_inputs(node, batch), outputs=_outputs(node, batch),
                 origin=node.origin, **extra)


def _conv_layer(node: Node, batch: int, x: Value, w: Value, y: Value) -> Layer:
    xd, wd, yd = _dims(x), _dims(w), _dims(y)
    if xd is None or wd is None or yd is None or len(wd) not in (3, 4) or len(yd) != len(wd):
        return host_layer(node, batch, "convolution shape is unknown or not 1-D / 2-D")
    geometry = ConvGeometry.of(node)
    group = geometry.group
    spatial_w = wd[2:] + (1,) * (4 - len(wd))
    spatial_y = yd[2:] + (1,) * (4 - len(yd))
    n = yd[0] * batch
    m, c = wd[0] // group, wd[1]
    sizes = (group, n, m, c, spatial_y[0], spatial_y[1], spatial_w[0], spatial_w[1])
    return _base(node, batch, "mac", sizes=sizes, stride=_pair(geometry.strides),
                 dilation=_pair(geometry.dilations), weight_value=w.name,
                 weight_is_const=w.is_const, input_value=x.name)


def _matmul_layer(node: Node, batch: int, a: Value, b: Value, trans_a: bool = False,
                  trans_b: bool = False) -> Layer:
    ad, bd = _dims(a), _dims(b)
    if ad is None or bd is None or not ad or not bd:
        return host_layer(node, batch, "matrix shapes are unknown")
    ad = (1,) + ad if len(ad) == 1 else ad
    bd = bd + (1,) if len(bd) == 1 else bd
    rows, k = (ad[-1], ad[-2]) if trans_a else (ad[-2], ad[-1])
    cols = bd[-2] if trans_b else bd[-1]
    a_batch, b_batch = math.prod(ad[:-2]), math.prod(bd[:-2])
    if b.is_const and b_batch == 1:
        groups, rows = 1, rows * a_batch * (1 if a.is_const else batch)
    else:
        groups = max(a_batch, b_batch) * (1 if a.is_const and b.is_const else batch)
    sizes = (groups, rows, cols, k, 1, 1, 1, 1)
    return _base(node, batch, "mac", sizes=sizes, weight_value=b.name,
                 weight_is_const=b.is_const, input_value=a.name)


def _with_epilogue(layer: Layer, group: FusionGroup, batch: int) -> Layer:
    """The anchor's layer extended by its fusion group's epilogue (see the module docstring)."""
    inner = {id(n.outputs[0]) for n in group.nodes}
    extra_inputs = tuple((v.name, _elements(v, batch)) for n in group.epilogue for v in n.inputs
                         if v is not None and not v.is_const and id(v) not in inner)
    vector_ops = sum(_elementwise(n, batch).vector_ops for n in group.epilogue)
    last = group.nodes[-1]
    return replace(layer, inputs=layer.inputs + extra_inputs, outputs=_outputs(last, batch),
                   vector_ops=layer.vector_ops + vector_ops)


@workload_rule(_keys("Conv"))
def _conv(node: Node, batch: int) -> Layer:
    return _conv_layer(node, batch, node.input(0), node.input(1), node.outputs[0])


@workload_rule(_keys("Gemm"))
def _gemm(node: Node, batch: int) -> Layer:
    layer = _matmul_layer(node, batch, node.input(0), node.input(1),
                          bool(node.attr("transA", 0)), bool(node.attr("transB", 0)))
    bias_ops = sum(n for _, n in layer.outputs) if node.input(2) is not None else 0
    return replace(layer, vector_ops=layer.vector_ops + bias_ops)


@workload_rule(_keys("MatMul"))
def _matmul(node: Node, batch: int) -> Layer:
    return _matmul_layer(node, batch, node.input(0), node.input(1))


@workload_rule(POOLING)
def _pool(node: Node, batch: int) -> Layer:
    window = math.prod(node.attr("kernel_shape", [1]))
    out = sum(n for _, n in _outputs(node, batch))
    return _base(node, batch, "vector", vector_ops=out * window)


@workload_rule(GLOBAL_POOLING | REDUCTIONS)
def _reduce(node: Node, batch: int) -> Layer:
    inputs = _activation_inputs(node, batch)
    return _base(node, batch, "vector", vector_ops=sum(n for _, n in inputs[:1]))


@workload_rule(ops.ELEMENTWISE | NORMALIZATION)
def _elementwise(node: Node, batch: int) -> Layer:
    out = sum(n for _, n in _outputs(node, batch))
    cost = VECTOR_COST.get(node.op_type, 1)
    if node.op_type == "LRN":
        cost = int(node.attr("size", 5)) + 3
    arity = max(1, len([v for v in node.inputs if v is not None]) - 1) if node.key in ops.BINARY \
        else 1
    return _base(node, batch, "vector", vector_ops=out * cost * arity)


@workload_rule(FREE_OPS)
def _free(node: Node, batch: int) -> Layer:
    return _base(node, batch, "free")


@workload_rule(COPY_OPS)
def _copy(node: Node, batch: int) -> Layer:
    return _base(node, batch, "copy")


def host_layer(node: Node, batch: int, reason: str) -> Layer:
    return _base(node, batch, "host", reason=reason,
                 vector_ops=sum(n for _, n in _outputs(node, batch)))


def _fused(node: Node, batch: int) -> Layer:
    """A node made by a fusion pass with an op type we have no rule for: find its MAC part."""
    x = next((v for v in node.inputs if v is not None and not v.is_const), None)
    weight = next((v for v in node.inputs if v is not None and v.is_const
                   and v.shape is not None and len(v.shape) >= 2), None)
    if x is not None and weight is not None and len(weight.shape) in (3, 4):
        return _conv_layer(node, batch, x, weight, node.outputs[0])
    if x is not None and weight is not None and len(weight.shape) == 2:
        return _matmul_layer(node, batch, x, weight, trans_b=bool(node.attr("transB", 0)))
    out = sum(n for _, n in _outputs(node, batch))
    return _base(node, batch, "vector", vector_ops=out * max(1, len(node.inputs)))


def layer_for_node(node: Node, batch: int = 1) -> Layer:
    """The Layer for one node: by its op family, else fused-node inference, else host."""
    real_inputs = [v for v in node.inputs if v is not None]
    if all(v.is_const for v in real_inputs) and not node.subgraphs \
            and node.key not in ops.NONDETERMINISTIC:
        return _base(node, batch, "const")
    if node.key in HOST_OPS:
        return host_layer(node, batch, f"{node.op_type} is not an NPU op")
    if any(_dims(v) is None for v in node.outputs):
        return host_layer(node, batch, "output shape is unknown")
    for family, builder in _BUILDERS:
        if node.key in family:
            return builder(node, batch)
    if node.origin:
        return _fused(node, batch)
    return host_layer(node, batch, f"no NPU rule for {node.op_type}")


def build_layers(graph: Graph, batch: int = 1) -> list[Layer]:
    """One Layer per node of `graph`, in the graph's (topological) order."""
    if batch < 1:
        from graphopt.errors import NPUConfigError

        raise NPUConfigError(f"batch must be >= 1, got {batch}")
    groups = {id(g.anchor): g for g in ensure_fusion_groups(graph)}
    members = {id(n) for g in groups.values() for n in g.epilogue}
    layers = []
    for node in graph.nodes:
        if id(node) in members:
            continue  # runs inside its anchor's layer
        layer = layer_for_node(node, batch)
        group = groups.get(id(node))
        if group is not None and layer.kind == "mac":
            layer = _with_epilogue(layer, group, batch)
        elif group is not None:  # the anchor runs elsewhere: so do its epilogue nodes
            layers += [layer] + [layer_for_node(n, batch) for n in group.epilogue]
            continue
        layers.append(layer)
    log.debug("workload: %d layers (%d MAC)", len(layers),
              sum(1 for layer in layers if layer.kind == "mac"))
    return layers


__all__ = ["DIMS", "OPERAND_DIMS", "Layer", "build_layers", "layer_for_node", "workload_rule",
           "KINDS"]
