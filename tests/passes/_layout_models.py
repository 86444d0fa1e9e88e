"""TensorFlow-style models (NHWC, a Transpose around every Conv) for the layout tests."""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

TO_NCHW, TO_NHWC = [0, 3, 1, 2], [0, 2, 3, 1]


class _Builder:
    def __init__(self, seed: int = 0):
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, array: np.ndarray, prefix: str = "c") -> str:
        name = self.name(prefix)
        self.inits.append(numpy_helper.from_array(np.asarray(array), name))
        return name

    def op(self, op_type: str, *inputs: str, **attrs) -> str:
        out = self.name(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], **attrs))
        return out

    def tf_conv(self, x: str, cin: int, cout: int, k: int = 3) -> str:
        """Transpose -> Conv -> Transpose, then a [C] bias Add in NHWC, as tf2onnx writes it."""
        w = self.const(self.rng.standard_normal((cout, cin, k, k)).astype(np.float32) * 0.3, "w")
        t = self.op("Transpose", x, perm=TO_NCHW)
        c = self.op("Conv", t, w, pads=[k // 2] * 4)
        back = self.op("Transpose", c, perm=TO_NHWC)
        bias = self.const(self.rng.standard_normal(cout).astype(np.float32), "bias")
        return self.op("Add", back, bias)

    def channel(self, c: int) -> str:
        return self.const(self.rng.standard_normal(c).astype(np.float32), "scale")


def tf_style_model(h: int = 8, w: int = 8, c: int = 3, nhwc_output: bool = False,
                   ) -> onnx.ModelProto:
    """NHWC input -> 4 convs (each wrapped in Transposes) with bias Adds, Relu and Clip, a channel
    Mul, a squeeze-excite style ReduceMean over H,W, a residual Add, a channel Concat (axis 3),
    and a final ReduceMean over H,W (keepdims=0): output [1, 32]; with `nhwc_output`, the
    concat itself is the output, [1, h, w, 32]."""
    b = _Builder()
    r1 = b.op("Relu", b.tf_conv("x", c, 16))
    r2 = b.op("Clip", b.op("Mul", b.tf_conv(r1, 16, 16), b.channel(16)),
              b.const(np.array(0.0, np.float32)), b.const(np.array(6.0, np.float32)))
    squeeze = b.op("ReduceMean", r2, axes=[1, 2], keepdims=1)
    gate = b.op("Sigmoid", b.op("Add", squeeze, b.channel(16)))
    excited = b.op("Mul", r2, gate)
    r3 = b.op("Relu", b.op("Add", b.tf_conv(excited, 16, 16), r1))  # residual
    r4 = b.op("Relu", b.tf_conv(r3, 16, 16, k=1))
    cat = b.op("Concat", r3, r4, axis=3)
    if nhwc_output:
        b.nodes.append(helper.make_node("Relu", [cat], ["y"]))
    else:
        b.nodes.append(helper.make_node("ReduceMean", [cat], ["y"], axes=[1, 2], keepdims=0))
    out_shape = [1, h, w, 32] if nhwc_output else [1, 32]
    graph = helper.make_graph(
        b.nodes, "tf_style", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, h, w, c])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], b.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model, full_check=True)
    return model
