"""numpy kernels for ops that move, reshape or generate data: the shape arithmetic of exported
graphs (Shape -> Gather -> Unsqueeze -> Concat -> Reshape) and constant generators.

All of them are exact: they copy elements or compute int64 indices. Index semantics follow the ONNX
spec (negative indices count from the end, Slice clamps its bounds, Reshape's 0 copies a dim unless
allowzero=1, -1 is inferred).
"""
from __future__ import annotations

import math

import numpy as np

from graphopt.errors import UnsupportedError
from graphopt.evaluator.registry import Call, kernel
from graphopt.ir.axes import normalize_axes, normalize_axis


def slice_bounds(dim: int, start: int, end: int, step: int) -> slice:
    """The python slice for one ONNX Slice axis: negatives count from the end, then clamping
    (to [0, dim] for positive steps, to [-1, dim-1] for negative ones)."""
    if step == 0:
        raise UnsupportedError("Slice step 0 is invalid")
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        start, end = min(max(start, 0), dim), min(max(end, 0), dim)
    else:
        start, end = min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)
    return slice(start, None if end < 0 else end, step)


def reshape_target(in_shape: tuple[int, ...], target: list[int],
                   allowzero: bool) -> tuple[int, ...]:
    """Reshape's output shape: 0 copies the input dim (unless allowzero), -1 takes what is left."""
    dims = [in_shape[i] if (t == 0 and not allowzero) else t for i, t in enumerate(target)]
    if dims.count(-1) > 1:
        raise UnsupportedError(f"Reshape target {target} has more than one -1")
    if -1 in dims:
        known = math.prod(d for d in dims if d != -1)
        total = math.prod(in_shape)
        if known == 0 or total % known:
            raise UnsupportedError(f"cannot reshape {list(in_shape)} to {target}")
        dims[dims.index(-1)] = total // known
    return tuple(dims)


@kernel("Reshape")
def reshape(call: Call) -> np.ndarray:
    x, shape = call.inputs[0], call.inputs[1]
    target = reshape_target(x.shape, [int(d) for d in shape], bool(call.attr("allowzero", 0)))
    return x.reshape(target)


@kernel("Flatten")
def flatten(call: Call) -> np.ndarray:
    x = call.inputs[0]
    axis = normalize_axis(call.attr("axis", 1), x.ndim)
    return x.reshape(math.prod(x.shape[:axis]), math.prod(x.shape[axis:]))


@kernel("Transpose")
def transpose(call: Call) -> np.ndarray:
    x = call.inputs[0]
    perm = call.attr("perm")
    return np.ascontiguousarray(np.transpose(x, None if perm is None else list(perm)))


@kernel("Concat")
def concat(call: Call) -> np.ndarray:
    arrays = [a for a in call.inputs if a is not None]
    return np.concatenate(arrays, axis=call.attr("axis"))


@kernel("Split")
def split(call: Call) -> list[np.ndarray]:
    x = call.inputs[0]
    axis = normalize_axis(call.attr("axis", 0), x.ndim)
    sizes = call.ints(1, "split")
    if sizes is None:
        parts = call.attr("num_outputs", call.num_outputs)
        chunk = -(-x.shape[axis] // parts)  # ceil: the last part may be smaller (opset 18)
        sizes = [min(chunk, x.shape[axis] - i * chunk) for i in range(parts)]
    bounds = np.cumsum(sizes)[:-1]
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


def _gather_indices(call: Call) -> tuple[int, np.ndarray]:
    """The gather axis and the indices wrapped into [0, dim) (out-of-range ones are refused:
    onnxruntime fails on them)."""
    data, indices = call.inputs[0], call.inputs[1]
    axis = normalize_axis(call.attr("axis", 0), data.ndim)
    dim = data.shape[axis]
    if np.any(indices < -dim) or np.any(indices >= dim):
        raise UnsupportedError(f"{call.describe()} has indices outside [-{dim}, {dim})")
    return axis, np.where(indices < 0, indices + dim, indices).astype(np.int64)


@kernel("Gather")
def gather(call: Call) -> np.ndarray:
    axis, indices = _gather_indices(call)
    return np.take(call.inputs[0], indices, axis=axis)


@kernel("GatherElements")
def gather_elements(call: Call) -> np.ndarray:
    axis, indices = _gather_indices(call)
    return np.take_along_axis(call.inputs[0], indices, axis=axis)


@kernel("Slice", since=10)
def slice_(call: Call) -> np.ndarray:
    x = call.inputs[0]
    starts, ends = call.ints(1, "starts"), call.ints(2, "ends")
    axes = call.ints(3, "axes") or list(range(len(starts)))
    steps = call.ints(4, "steps") or [1] * len(starts)
    index = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        axis = normalize_axis(axis, x.ndim)
        index[axis] = slice_bounds(x.shape[axis], start, end, step)
    return np.ascontiguousarray(x[tuple(index)])


@kernel("Squeeze")
def squeeze(call: Call) -> np.ndarray:
    x = call.inputs[0]
    axes = call.ints(1, "axes")
    if not axes:  # absent (or empty, which onnxruntime reads the same way): every 1-dim goes
        return np.squeeze(x)
    return np.squeeze(x, axis=normalize_axes(axes, x.ndim))


@kernel("Unsqueeze")
def unsqueeze(call: Call) -> np.ndarray:
    x = call.inputs[0]
    axes = call.ints(1, "axes") or []
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(sorted(normalize_axes(axes, rank)))) if axes else x.copy()


@kernel("Expand")
def expand(call: Call) -> np.ndarray:
    x, shape = call.inputs[0], call.inputs[1]
    out_shape = np.broadcast_shapes(x.shape, tuple(int(d) for d in shape))
    return np.ascontiguousarray(np.broadcast_to(x, out_shape))


@kernel("Tile")
def tile(call: Call) -> np.ndarray:
    x, repeats = call.inputs[0], call.inputs[1]
    return np.tile(x, [int(r) for r in repeats])


@kernel("Shape")
def shape(call: Call) -> np.ndarray:
    dims = call.inputs[0].shape
    start, end = call.attr("start", 0), call.attr("end")
    return np.array(dims[start:end], dtype=np.int64)


@kernel("Size")
def size(call: Call) -> np.ndarray:
    return np.array(call.inputs[0].size, dtype=np.int64)


# From this many elements on, ConstantOfShape gives a read-only broadcast of its one value.
_BROADCAST_ELEMENTS = 4096


@kernel("ConstantOfShape")
def constant_of_shape(call: Call) -> np.ndarray:
    """A large result is a broadcast view: models that generate their weights this way (onnx's
    light models) fold them without writing, and page-faulting, megabytes that a later fold
    (BatchNormalization into Conv) replaces anyway; whoever needs the bytes copies them."""
    dims = call.inputs[0]
    # tolist: one C call where int() per element costs microseconds on every generated weight
    shape = tuple(dims.tolist() if dims.ndim == 1 and dims.dtype.kind in "iu" else
                  (int(d) for d in dims))
    value = call.attr("value")
    if value is None:
        value = np.zeros(1, np.float32)
    fill = value.reshape(-1)[0]
    if math.prod(shape) >= _BROADCAST_ELEMENTS:
        # What np.broadcast_to gives (every stride 0, read-only), built directly at a third
        # of its cost.
        base = np.array(fill, dtype=value.dtype)
        view = np.ndarray(shape, base.dtype, buffer=base, strides=(0,) * len(shape))
        view.flags.writeable = False
        return view
    out = np.empty(shape, value.dtype)
    out.fill(fill)  # np.full without its generic casting path
    return out


@kernel("Range")
def range_(call: Call) -> np.ndarray:
    """Range as onnxruntime computes it: the count ceil((limit - start) / delta) in double (which
    for float inputs can differ from float arithmetic by one), then a running sum value += delta
    in the input dtype (which differs from numpy's start + i * delta)."""
    start, limit, delta = (np.asarray(a).reshape(()) for a in call.inputs[:3])
    if delta == 0:
        raise UnsupportedError(f"{call.describe()} has delta 0")
    count = max(math.ceil((float(limit) - float(start)) / float(delta)), 0)
    steps = np.full(count, delta, dtype=start.dtype)
    if count:
        steps[0] = start
    return np.cumsum(steps, dtype=start.dtype)
