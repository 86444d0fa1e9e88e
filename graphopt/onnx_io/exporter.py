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
    if t is None:
        return proto
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
    return proto


def value_info(value: Value) -> onnx.ValueInfoProto:
    info = onnx.ValueInfoProto(name=value.name, doc_string=value.doc)
    if value.onnx_type is not None and value.type is None:
        info.type.CopyFrom(value.onnx_type)
    else:
        info.type.CopyFrom(type_to_proto(value.type))
    return info


def array_to_tensor(array: np.ndarray, name: str) -> onnx.TensorProto:
    if array.dtype == object:
        return onnx.helper.make_tensor(name, onnx.TensorProto.STRING, array.shape,
                                       [str(s).encode() for s in array.reshape(-1)])
    return numpy_helper.from_array(np.asarray(array), name)


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
    proto = onnx.NodeProto(op_type=node.op_type, domain=node.domain, name=node.name,
                           doc_string=node.doc)
    # Trailing omitted optional inputs are dropped; inner ones are spelled "".
    inputs = list(node.inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    proto.input.extend("" if v is None else v.name for v in inputs)
    proto.output.extend(v.name for v in node.outputs)
    proto.attribute.extend(attribute_to_proto(k, v) for k, v in node.attrs.items())
    if node.origin:
        proto.metadata_props.add(key="graphopt.origin", value=node.origin)
    return proto


def export_model(graph: Graph, include_value_info: bool = True,
                 keep_large_data: bool = True) -> onnx.ModelProto:
    """Build a ModelProto. keep_large_data=False replaces big initializers by typed inputs
    (for shape inference only: such a model does not run)."""
    g = onnx.GraphProto(name=graph.info.graph_name, doc_string=graph.info.graph_doc)
    g.input.extend(value_info(v) for v in graph.inputs)
    for value in graph.initializers.values():
        if not keep_large_data and value.const.size > KEEP_DATA_ELEMENTS:
            g.input.append(value_info(value))
        else:
            tensor = array_to_tensor(value.const, value.name)
            tensor.doc_string = value.doc
            g.initializer.append(tensor)
    g.node.extend(node_to_proto(n) for n in graph.nodes)
    g.output.extend(value_info(v) for v in graph.outputs)
    if include_value_info:
        interface = {v.name for v in graph.inputs} | {v.name for v in graph.outputs}
        for node in graph.nodes:
            for out in node.outputs:
                if out.name not in interface and (out.type is not None or out.onnx_type is not None):
                    g.value_info.append(value_info(out))

    info = graph.info
    model = onnx.ModelProto(ir_version=_ir_version(graph), producer_name=info.producer_name or "graphopt",
                            producer_version=info.producer_version, domain=info.domain,
                            model_version=info.model_version, doc_string=info.doc_string)
    model.graph.CopyFrom(g)
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


def total_initializer_bytes(model: onnx.ModelProto) -> int:
    return sum(len(t.raw_data) for t in model.graph.initializer)


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write atomically: a temp file in the target folder renamed into place, so a failure never
    leaves a half-written model. Models past protobuf's 2 GB limit get a `<name>.data` file."""
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise BadInputError(f"cannot write {path}: folder {folder} does not exist")
    external = total_initializer_bytes(model) > EXTERNAL_DATA_THRESHOLD
    data_name = path.name + ".data"
    fd, tmp = tempfile.mkstemp(prefix=".graphopt-", suffix=".onnx", dir=folder)
    os.close(fd)
    tmp_data = folder / (Path(tmp).name + ".data")
    try:
        if external:
            to_save = onnx.ModelProto()
            to_save.CopyFrom(model) if model.ByteSize() < (1 << 31) - 1 else to_save.MergeFrom(model)
            onnx.external_data_helper.convert_model_to_external_data(
                to_save, all_tensors_to_one_file=True, location=tmp_data.name, size_threshold=1024)
            onnx.save_model(to_save, tmp)
            _relocate_external_data(tmp, data_name)
            os.replace(tmp_data, folder / data_name)
        else:
            onnx.save_model(model, tmp)
        os.replace(tmp, path)
    except BaseException:
        for leftover in (Path(tmp), tmp_data):
            leftover.unlink(missing_ok=True)
        raise


def _relocate_external_data(model_path: str, location: str) -> None:
    """Point the saved model's external tensors at their final data file name."""
    model = onnx.load(model_path, load_external_data=False)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = location
    onnx.save_model(model, model_path)
