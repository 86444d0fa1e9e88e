"""Reference workloads (built with onnx.helper) and architectures, for paper comparisons and tests.

`alexnet_227` is the original two-GPU AlexNet (Krizhevsky et al. 2012) as Eyeriss evaluated
it: a 227x227x3 input and the five CONV layers with their ReLUs and max-pools, conv2, conv4 and
conv5 split into two groups. Its CONV layers hold 666 M MACs per image:
96*3*11*11*55*55 + 256*48*5*5*27*27 + 384*256*3*3*13*13 + 384*192*3*3*13*13 + 256*192*3*3*13*13.

`chen2016_arch` is the setup of the dataflow comparison in Chen, Emer, Sze, ISCA 2016: 256 PEs
(16x16), 16-bit words, the normalized energies (RF 1x, array 2x, buffer 6x, DRAM 200x of a
MAC) and, for every dataflow, the same storage area as the baseline #PE x Area(512 B RF) +
Area(#PE x 512 B buffer) = 256 x 512 B + 128 KB. How that area is split is our assumption (the
paper's per-dataflow table is not reproduced here): an RF byte costs RF_AREA_RATIO buffer
bytes; a dataflow gets 512 B (256 words) of RF per PE for the operand it keeps (RS: the Eyeriss
chip's 224 / 12 / 24 words) and the rest of the area as buffer, so NLR, which has no RF, gets
the largest buffer. PEs read every operand out of their RF (`streamed_reads`), as the paper's
cost a*b*c*d x EC(RF) charges.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper

from graphopt.npu.arch import Arch, RegisterFiles, arch_from_dict

# (name, in channels, out channels, kernel, stride, pad, groups, max-pool after)
ALEXNET_CONVS = (
    ("conv1", 3, 96, 11, 4, 0, 1, True),
    ("conv2", 96, 256, 5, 1, 2, 2, True),
    ("conv3", 256, 384, 3, 1, 1, 1, False),
    ("conv4", 384, 384, 3, 1, 1, 2, False),
    ("conv5", 384, 256, 3, 1, 1, 2, True),
)


def alexnet_227(batch: int = 1) -> onnx.ModelProto:
    """The CONV part of the grouped 227x227 AlexNet (weights are zeros: only shapes matter)."""
    nodes, inits = [], []
    current = "image"
    for name, cin, cout, k, stride, pad, groups, pool in ALEXNET_CONVS:
        weight = np.zeros((cout, cin // groups, k, k), dtype=np.float32)
        inits += [helper.make_tensor(f"{name}_w", TensorProto.FLOAT, weight.shape,
                                     weight.ravel().tolist()),
                  helper.make_tensor(f"{name}_b", TensorProto.FLOAT, (cout,), [0.0] * cout)]
        nodes.append(helper.make_node("Conv", [current, f"{name}_w", f"{name}_b"], [f"{name}_y"],
                                      name=name, kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[pad] * 4, group=groups))
        nodes.append(helper.make_node("Relu", [f"{name}_y"], [f"{name}_r"], name=f"{name}_relu"))
        current = f"{name}_r"
        if pool:
            nodes.append(helper.make_node("MaxPool", [current], [f"{name}_p"],
                                          name=f"{name}_pool", kernel_shape=[3, 3],
                                          strides=[2, 2]))
            current = f"{name}_p"
    graph = helper.make_graph(
        nodes, "alexnet_227_conv",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, 227, 227])],
        [helper.make_tensor_value_info(current, TensorProto.FLOAT, None)], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return onnx.shape_inference.infer_shapes(model)


CHEN2016_PES = 256
CHEN2016_RF_BYTES = 512            # baseline RF per PE
CHEN2016_GLB_KB = 128              # baseline buffer: #PE x 512 B
RF_AREA_RATIO = 2.0                # assumption: one RF byte takes the area of two buffer bytes
_WORDS = CHEN2016_RF_BYTES // 2    # 16-bit words
CHEN2016_RF = {
    "rs": RegisterFiles(weights=224, inputs=12, outputs=24, streamed_reads=True),
    "ws": RegisterFiles(weights=_WORDS, inputs=0, outputs=0, streamed_reads=True),
    "os_a": RegisterFiles(weights=0, inputs=0, outputs=_WORDS, streamed_reads=True),
    "os": RegisterFiles(weights=0, inputs=0, outputs=_WORDS, streamed_reads=True),
    "os_c": RegisterFiles(weights=0, inputs=0, outputs=_WORDS, streamed_reads=True),
    "nlr": RegisterFiles(weights=0, inputs=0, outputs=0),
    "is": RegisterFiles(weights=0, inputs=_WORDS, outputs=0, streamed_reads=True),
}


def equal_area_glb_kb(rf: RegisterFiles, rf_area_ratio: float = RF_AREA_RATIO) -> float:
    """Buffer size (KB) that keeps 256 x RF + buffer at the baseline storage area."""
    base = CHEN2016_PES * CHEN2016_RF_BYTES * rf_area_ratio + CHEN2016_GLB_KB * 1024
    rf_bytes = (rf.weights + rf.inputs + rf.outputs) * 2
    return (base - CHEN2016_PES * rf_bytes * rf_area_ratio) / 1024


def chen2016_arch(dataflow: str, rf_area_ratio: float = RF_AREA_RATIO) -> Arch:
    """The 256-PE spatial array of the ISCA 2016 comparison, storage split for `dataflow`."""
    rf = CHEN2016_RF[dataflow]
    base = arch_from_dict({
        "name": f"chen2016-256pe-{dataflow}", "clock_mhz": 200, "datatype": "int16",
        "dataflow": dataflow, "pe_array": {"rows": 16, "cols": 16, "kind": "spatial"},
        "register_files": {"weights": 224, "inputs": 12, "outputs": 24},
        "global_buffer": {"size_kb": CHEN2016_GLB_KB, "banks": 32, "bank_width_bits": 64},
        "dram": {"bandwidth_gbps": 4.0}, "energy": {"table": "normalized"},
    }, "chen2016")
    return base.with_storage(rf, equal_area_glb_kb(rf, rf_area_ratio))
