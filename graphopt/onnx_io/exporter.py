"""graphopt Graph -> ONNX ModelProto, and atomic saving (external data past 2 GB)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from graphopt.errors import BadInputError
from graphopt.ir.graph import Graph, Node, Value
from graphopt.ir.types import TensorType
from graphopt.onnx_io.shapes import KEEP_DATA_ELEMENTS

# Protobuf cannot serialize a message of 2 GB or more; stay well clear of it.
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def type_to_proto(t: TensorType | None) -> onnx.TypeProto:
    proto = onnx.TypeProto()
    _write_type(proto, t)
    return proto


def _write_type(proto: onnx.TypeProto, t: TensorType | None) -> None:
    if t is None:
        return
    tensor = proto.tensor_type
    tensor.elem_type = int(t.dtype)
    if t.shape is not None:
        shape = tensor.shape
        shape.SetInParent()
        for d in t.shape:
            dim = shape.dim.add()
            if isinstance(d, int):
                dim.dim_value = d
            elif isinstance(d, str):
                dim.dim_param = d


def value_info(value: Value) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto()
    _write_value_info(info, value)
    return info


def _write_value_info(info: onnx.ValueInfoProto, value: Value) -> None:
    """Fill `info` (a fresh entry of a model's repeated field: writing in place spares a copy)."""
    info.name = value.name
    info.doc_string = value.doc
    if value.onnx_type is not None and value.type is None:
        info.type.CopyFrom(value.onnx_type)
    else:
        info.type.SetInParent()
        _write_type(info.type, value.type)


def array_to_tensor(array: np.ndarray, name: str) -> onnx.TensorProto:
    if array.dtype == object:
        return onnx.helper.make_tensor(name, onnx.TensorProto.STRING, array.shape,
                                       [str(s).encode() for s in array.reshape(-1)])
    return numpy_helper.from_array(np.asarray(array), name)


# numpy's own numeric types in native (little-endian) order: stored as raw bytes as they are,
# where onnx packs or byte-swaps others (int4, float4, big-endian...).
_RAW_DTYPES = frozenset(np.dtype(t).newbyteorder("<") for t in (
    np.bool_, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64,
    np.float16, np.float32, np.float64))


def add_initializer(g: onnx.GraphProto, array: np.ndarray, name: str) -> onnx.TensorProto:
    """Append `array` to g.initializer. A plain numeric array is written straight into the proto
    (the same fields numpy_helper.from_array sets): array_to_tensor + append would build every
    tensor twice and hold a large one's data three times at the peak (bytes, tensor, copy)."""
    array = np.asarray(array)
    if array.dtype not in _RAW_DTYPES:
        tensor = g.initializer.add()
        tensor.CopyFrom(array_to_tensor(array, name))
        return tensor
    dtype = onnx.helper.np_dtype_to_tensor_dtype(array.dtype)
    tensor = g.initializer.add(data_type=dtype)
    if name:
        tensor.name = name
    tensor.dims.extend(array.shape)
    tensor.raw_data = np.ascontiguousarray(array).tobytes()
    return tensor


def attribute_to_proto(name: str, value: Any) -> onnx.AttributeProto:
    if isinstance(value, onnx.AttributeProto):
        return value
    if isinstance(value, np.ndarray):
        return onnx.helper.make_attribute(name, array_to_tensor(value, ""))
    if isinstance(value, list) and value and isinstance(value[0], np.ndarray):
        return onnx.helper.make_attribute(name, [array_to_tensor(v, "") for v in value])
    if isinstance(value, (np.integer, np.floating)):
        value = value.item()
    return onnx.helper.make_attribute(name, value)


def node_to_proto(node: Node) -> onnx.NodeProto:
    proto = onnx.NodeProto()
    _write_node(proto, node)
    return proto


_A = onnx.AttributeProto


def _write_node(proto: onnx.NodeProto, node: Node) -> None:
    """Fill `proto` (a fresh entry of a model's repeated field: writing in place spares a copy)."""
    proto.op_type, proto.domain, proto.name = node.op_type, node.domain, node.name
    proto.doc_string = node.doc
    # Trailing omitted optional inputs are dropped; inner ones are spelled "".
    inputs = list(node.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    proto.input.extend(["" if v is None else v.name for v in inputs])
    proto.output.extend([v.name for v in node.outputs])
    attributes = proto.attribute
    for key, value in node.attrs.items():
        # The common kinds written directly: onnx.helper.make_attribute tests the value against
        # every kind through abstract base classes (a real cost on every node of every model).
        kind = type(value)
        if kind is int:
            attributes.add(name=key, type=_A.INT, i=value)
        elif kind is float:
            attributes.add(name=key, type=_A.FLOAT, f=value)
        elif kind is list and value and all(type(v) is int for v in value):
            attributes.add(name=key, type=_A.INTS, ints=value)
        elif kind is list and value and all(type(v) is float for v in value):
            attributes.add(name=key, type=_A.FLOATS, floats=value)
        else:
            attributes.append(attribute_to_proto(key, value))
    if node.origin:
        proto.metadata_props.add(key="graphopt.origin", value=node.origin)
    if node.fusion is not None and node.graph is not None and node.fusion.is_intact(node.graph):
        # Which kernel the node runs in (graphopt.ir.fusion); the node stays standard ONNX.
        proto.metadata_props.add(key="graphopt.fusion", value=node.fusion.name)


def export_model(graph: Graph, include_value_info: bool = True,
                 keep_large_data: bool = True) -> onnx.ModelProto:
    """Build a ModelProto. keep_large_data=False replaces big initializers by typed inputs
    (for shape inference only: such a model does not run).

    The graph is filled in place in the model (never built apart and copied in), so the
    weights exist once in the proto: a second copy would double the memory of a large model."""
    info = graph.info
    model = onnx.ModelProto(ir_version=_ir_version(graph),
                            producer_name=info.producer_name or "graphopt",
                            producer_version=info.producer_version, domain=info.domain,
                            model_version=info.model_version, doc_string=info.doc_string)
    g = model.graph
    g.name, g.doc_string = info.graph_name, info.graph_doc
    for value in graph.inputs:
        _write_value_info(g.input.add(), value)
    for value in graph.initializers.values():
        if not keep_large_data and value.const.size > KEEP_DATA_ELEMENTS:
            g.input.append(value_info(value))
        else:
            add_initializer(g, value.const, value.name).doc_string = value.doc
    for value in graph.inputs:  # an overridable input keeps its default as an initializer
        if value.default is not None and keep_large_data:
            add_initializer(g, value.default, value.name)
    for node in graph.nodes:
        _write_node(g.node.add(), node)
    for value in graph.outputs:
        _write_value_info(g.output.add(), value)
    if include_value_info:
        interface = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
        for node in graph.nodes:
            for out in node.outputs:
                if out.name not in interface and (out.type is not None or out.onnx_type is not None):
                    _write_value_info(g.value_info.add(), out)
    if keep_large_data:  # INT8: Value.quant annotations become QuantizeLinear/DequantizeLinear
        from graphopt.quantization.qdq import has_quant, materialize_qdq

        if has_quant(graph):
            materialize_qdq(graph, g)

    for domain, version in graph.opset_imports.items():
        model.opset_import.add(domain=domain, version=version)
    for key, val in info.metadata_props.items():
        model.metadata_props.add(key=key, value=val)
    model.functions.extend(info.functions)
    return model


def _ir_version(graph: Graph) -> int:
    """The model's IR version, raised to what its opsets need (old IR listed weights as inputs)."""
    opsets = [onnx.helper.make_opsetid(d, v) for d, v in graph.opset_imports.items()]
    needed = onnx.helper.find_min_ir_version_for(opsets, ignore_unknown=True)
    return max(graph.info.ir_version, needed, 4)


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes held by initializers: a size estimate that, unlike ByteSize(), works past 2 GB."""
    return sum(_tensor_bytes(t) for t in model.graph.initializer)


def _tensor_bytes(tensor: onnx.TensorProto) -> int:
    """A tensor's data size from its dims and type. Reading `raw_data` (or ByteSize(), which
    serializes) would copy the data out of the proto: seconds and gigabytes on a large model."""
    if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.data_type in (
            onnx.TensorProto.STRING, onnx.TensorProto.UNDEFINED):
        return tensor.ByteSize()
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    return int(np.prod(tensor.dims, dtype=np.int64)) * itemsize


def copy_without_initializers(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of everything but graph.initializer (safe on models of any size)."""
    skeleton = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name != "graph":
            _copy_field(skeleton, field, value)
    for field, value in model.graph.ListFields():
        if field.name != "initializer":
            _copy_field(skeleton.graph, field, value)
    return skeleton


def _copy_field(target: Any, field: Any, value: Any) -> None:
    # protobuf >= 6 spells it is_repeated; older releases only have label.
    repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == 3
    if repeated:
        getattr(target, field.name).extend(value)
    elif field.type == field.TYPE_MESSAGE:
        getattr(target, field.name).CopyFrom(value)
    else:
        setattr(target, field.name, value)


def save_model(model: onnx.ModelProto, path: str | os.PathLike, check: bool = True) -> None:
    """Write atomically and valid: temp files in the target folder, onnx.checker on them, then a
    rename, so a failure never leaves a half-written or invalid model. Models whose weights pass
    protobuf's 2 GB limit store them in `<name>.data` beside the model. `model` is not modified."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise BadInputError(f"cannot write {path}: folder {folder} does not exist")
    if path.is_dir():
        raise BadInputError(f"cannot write {path}: it is a directory; name a file inside it")
    external = initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    fd, tmp_name = tempfile.mkstemp(prefix=".graphopt-", suffix=".onnx", dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp_data = tmp.with_name(tmp.name + ".data")
    try:
        if external:
            skeleton = _write_external(model, tmp_data)
            onnx.save_model(skeleton, tmp)
        else:
            onnx.save_model(model, tmp)
        if check:
            _check_saved(tmp)
        _apply_umask(tmp)
        if external:
            _apply_umask(tmp_data)
            _set_location(skeleton, path.name + ".data")
            onnx.save_model(skeleton, tmp)
            os.replace(tmp_data, path.with_name(path.name + ".data"))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        tmp_data.unlink(missing_ok=True)
        raise


def _write_external(model: onnx.ModelProto, data_path: Path) -> onnx.ModelProto:
    """Write large initializers into `data_path` (64-byte aligned) and return the model with
    external references in their place."""
    skeleton = copy_without_initializers(model)
    with open(data_path, "wb") as data:
        for tensor in model.graph.initializer:
            if _tensor_bytes(tensor) < 1024 or not tensor.HasField("raw_data"):
                skeleton.graph.initializer.add().CopyFrom(tensor)
                continue
            offset = data.tell()
            pad = (-offset) % 64
            data.write(b"\0" * pad)
            length = data.write(tensor.raw_data)  # a copy out of the proto, freed at once
            ref = skeleton.graph.initializer.add(name=tensor.name, data_type=tensor.data_type,
                                                 doc_string=tensor.doc_string)
            ref.dims.extend(tensor.dims)
            ref.data_location = onnx.TensorProto.EXTERNAL
            for key, val in (("location", data_path.name), ("offset", str(offset + pad)),
                             ("length", str(length))):
                ref.external_data.add(key=key, value=val)
    return skeleton


def _apply_umask(path: Path) -> None:
    """mkstemp creates 0600 files; give outputs the permissions a plain open() would."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def _set_location(model: onnx.ModelProto, location: str) -> None:
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location


def _check_saved(path: Path) -> None:
    from graphopt.errors import VerificationError

    try:
        onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as err:
        raise VerificationError(f"refusing to write an invalid model: onnx.checker says "
                                f"{str(err).strip().splitlines()[0][:300]}") from None
