"""Reading .onnx files safely: clear errors for bad files, external data confined to the model's folder."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator

import onnx
from google.protobuf.message import DecodeError

from graphopt.errors import BadInputError


def _external_locations(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(tensor name, location) of every tensor stored outside the file, subgraphs included."""
    found = []
    for tensor in _all_tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            found.append((tensor.name, info.get("location", "")))
    return found


def check_external_data(model: onnx.ModelProto, base_dir: Path) -> int:
    """Refuse external data that points outside `base_dir` or is missing; returns how many
    tensors are stored outside the file."""
    root = base_dir.resolve()
    locations = _external_locations(model)
    for name, location in locations:
        target = (root / location).resolve()
        if os.path.isabs(location) or (root != target and root not in target.parents):
            raise BadInputError(f"tensor '{name}' points at external data '{location}' outside the "
                                f"model's folder {root}; refusing to read it")
        if not target.is_file():
            raise BadInputError(f"tensor '{name}' needs external data file '{location}', which is "
                                f"missing from {root}")
    return len(locations)


def read_model(path: str | os.PathLike) -> onnx.ModelProto:
    """Load an ONNX file with its external data, or raise BadInputError with one clear line."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"{path}: no such file")
    if not path.is_file():
        raise BadInputError(f"{path}: not a file")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except (DecodeError, ValueError, RuntimeError, TypeError) as err:
        raise BadInputError(f"{path}: not a readable ONNX model ({_first_line(err)})") from None
    if not model.HasField("graph") or (not model.graph.node and not model.graph.output):
        raise BadInputError(f"{path}: not an ONNX model (no graph; truncated or another format?)")
    if not check_external_data(model, path.parent):
        return model  # everything is inline: no second walk over the tensors
    try:
        onnx.load_external_data_for_model(model, str(path.parent))
    except (OSError, ValueError) as err:
        raise BadInputError(f"{path}: cannot read external data ({_first_line(err)})") from None
    return model


def _first_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0][:200]


_A = onnx.AttributeProto


def _all_tensors(model: onnx.ModelProto) -> Iterator[onnx.TensorProto]:
    """The tensors onnx.external_data_helper visits (initializers and tensor attributes of the
    graph, its subgraphs and the model's functions), in plain loops: its chained generators
    cost several times more, on every model read."""
    yield from _graph_tensors(model.graph)
    for function in model.functions:
        yield from _node_tensors(function.node)


def _graph_tensors(graph: onnx.GraphProto) -> Iterator[onnx.TensorProto]:
    yield from graph.initializer
    yield from _node_tensors(graph.node)


def _node_tensors(nodes: Iterable[onnx.NodeProto]) -> Iterator[onnx.TensorProto]:
    for node in nodes:
        for attr in node.attribute:
            kind = attr.type
            if kind == _A.TENSOR:
                yield attr.t
            elif kind == _A.TENSORS:
                yield from attr.tensors
            elif kind == _A.GRAPH:
                yield from _graph_tensors(attr.g)
            elif kind == _A.GRAPHS:
                for body in attr.graphs:
                    yield from _graph_tensors(body)
            elif kind == _A.UNDEFINED:  # an untyped attribute: look at every field, as onnx does
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
