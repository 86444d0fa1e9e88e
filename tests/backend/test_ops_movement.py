"""Data movement, indexing and views against onnxruntime, plus the storage corner cases:
graph outputs that are inputs, constants, or views of other values."""
from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper

from backend_helpers import check_against_onnxruntime, make_model
from graphopt.backend import compile as compile_model
from graphopt.errors import UnsupportedError

I64 = np.int64


def test_movement_ops():
    nodes = [
        helper.make_node("Transpose", ["X"], ["transposed"], perm=[2, 0, 3, 1]),
        helper.make_node("Transpose", ["X"], ["reversed"]),
        helper.make_node("Concat", ["X", "Y", "X"], ["concat1"], axis=1),
        helper.make_node("Concat", ["X", "X"], ["concat_last"], axis=-1),
        helper.make_node("Split", ["X", "split_sizes"], ["s0", "s1"], axis=3),
        helper.make_node("Split", ["X"], ["e0", "e1", "e2"], axis=1, num_outputs=3),
        helper.make_node("Slice", ["X", "starts", "ends", "axes", "steps"], ["sliced"]),
        helper.make_node("Slice", ["X", "starts2", "ends2"], ["sliced_neg"]),
        helper.make_node("Expand", ["V", "expand_shape"], ["expanded"]),
        helper.make_node("Tile", ["V", "repeats"], ["tiled"]),
        helper.make_node("DepthToSpace", ["D"], ["d2s_dcr"], blocksize=2),
        helper.make_node("DepthToSpace", ["D"], ["d2s_crd"], blocksize=2, mode="CRD"),
        helper.make_node("SpaceToDepth", ["E"], ["s2d"], blocksize=2),
    ]
    inits = {"split_sizes": np.array([2, 3], I64), "starts": np.array([1, -1], I64),
             "ends": np.array([3, -100], I64), "axes": np.array([1, 3], I64),
             "steps": np.array([1, -2], I64), "starts2": np.array([0, 1, 0, 0], I64),
             "ends2": np.array([-1, 3, 4, 5], I64), "expand_shape": np.array([2, 3, 4], I64),
             "repeats": np.array([2, 1, 3], I64)}
    inputs = {"X": (TP.FLOAT, [2, 3, 4, 5]), "Y": (TP.FLOAT, [2, 2, 4, 5]),
              "V": (TP.FLOAT, [1, 3, 1]), "D": (TP.FLOAT, [1, 8, 2, 3]),
              "E": (TP.FLOAT, [1, 2, 4, 6])}
    outputs = ["transposed", "reversed", "concat1", "concat_last", "s0", "s1", "e0", "e1", "e2",
               "sliced", "sliced_neg", "expanded", "tiled", "d2s_dcr", "d2s_crd", "s2d"]
    check_against_onnxruntime(make_model(nodes, inputs, outputs, inits, opset=18))


def test_indexing_and_padding():
    nodes = [
        helper.make_node("Gather", ["T", "idx"], ["gather0"]),
        helper.make_node("Gather", ["T", "idx2"], ["gather1"], axis=1),
        helper.make_node("Gather", ["T", "scalar_idx"], ["gather_scalar"], axis=2),
        helper.make_node("GatherElements", ["T", "elem_idx"], ["gather_elements"], axis=1),
        helper.make_node("Pad", ["P", "pads"], ["pad_zero"]),
        helper.make_node("Pad", ["P", "pads", "pad_value"], ["pad_value_out"]),
        helper.make_node("Pad", ["P", "pads"], ["pad_reflect"], mode="reflect"),
        helper.make_node("Pad", ["P", "pads"], ["pad_edge"], mode="edge"),
        helper.make_node("Pad", ["P", "pads"], ["pad_wrap"], mode="wrap"),
        helper.make_node("Pad", ["P", "neg_pads"], ["pad_crop"]),
    ]
    inits = {"idx2": np.array([[0, -1], [2, 1]], I64), "scalar_idx": np.array(-2, I64),
             "pads": np.array([0, 1, 2, 0, 2, 1], I64), "pad_value": np.float32(7.5),
             "neg_pads": np.array([0, -1, 1, 0, 0, -1], I64)}
    inputs = {"T": (TP.FLOAT, [4, 3, 5]), "idx": (TP.INT64, [2, 3]),
              "elem_idx": (TP.INT32, [4, 2, 5]), "P": (TP.FLOAT, [2, 3, 4])}
    outputs = ["gather0", "gather1", "gather_scalar", "gather_elements", "pad_zero",
               "pad_value_out", "pad_reflect", "pad_edge", "pad_wrap", "pad_crop"]
    model = make_model(nodes, inputs, outputs, inits, opset=19)
    rng = np.random.default_rng(2)
    feeds = {"T": rng.standard_normal((4, 3, 5)).astype(np.float32),
             "idx": np.array([[0, -1, 3], [2, 2, -4]], I64),
             "elem_idx": rng.integers(-3, 3, (4, 2, 5)).astype(np.int32),
             "P": rng.standard_normal((2, 3, 4)).astype(np.float32)}
    check_against_onnxruntime(model, feeds)


def test_gather_index_out_of_range_is_an_error():
    from graphopt.errors import BadInputError

    model = make_model([helper.make_node("Gather", ["T", "idx"], ["g"])],
                       {"T": (TP.FLOAT, [4, 3]), "idx": (TP.INT64, [2])}, ["g"])
    compiled = compile_model(model, optimize=False)
    table = np.ones((4, 3), np.float32)
    with pytest.raises(BadInputError, match="Gather node.*out of range"):
        compiled.run({"T": table, "idx": np.array([1, 4], I64)})
    np.testing.assert_array_equal(compiled.run({"T": table, "idx": np.array([1, -4], I64)})[0],
                                  table[[1, 0]])


def test_views_and_output_storage_corner_cases():
    nodes = [
        helper.make_node("Relu", ["X"], ["r"]),
        helper.make_node("Reshape", ["r", "shape"], ["r_flat"]),  # output that is a view
        helper.make_node("Flatten", ["X"], ["x_flat"]),  # view of a graph input, as output: copy
        helper.make_node("Unsqueeze", ["r", "axes"], ["r_unsq"]),
        helper.make_node("Squeeze", ["r_unsq", "axes"], ["r_sq"]),
        helper.make_node("Identity", ["r_sq"], ["r_id"]),
        helper.make_node("Dropout", ["r_id"], ["dropped"]),
        helper.make_node("Exp", ["dropped"], ["e"]),
    ]
    inits = {"shape": np.array([-1], I64), "axes": np.array([0], I64),
             "const_out": np.arange(3, dtype=np.float32)}
    model = make_model(nodes, {"X": (TP.FLOAT, [2, 3, 4])},
                       ["r_flat", "x_flat", "e", "X", "const_out"], inits)
    check_against_onnxruntime(model)


def test_resize_modes():
    scales = np.array([1, 1, 2.0, 1.5], np.float32)
    exact = np.array([1, 1, 1.5, 2], np.float32)  # align_corners needs integral in * scale
    sizes = np.array([2, 3, 3, 7], np.int64)
    cases = [("nearest", "asymmetric", "floor", scales), ("nearest", "half_pixel",
                                                           "round_prefer_floor", sizes),
             ("nearest", "align_corners", "round_prefer_ceil", exact),
             ("linear", "half_pixel", None, scales), ("linear", "align_corners", None, sizes),
             ("linear", "pytorch_half_pixel", None, sizes), ("cubic", "half_pixel", None, scales),
             ("cubic", "asymmetric", None, sizes)]
    nodes, outputs, inits = [], [], {}
    for i, (mode, transform, nearest, target) in enumerate(cases):
        attrs = {"mode": mode, "coordinate_transformation_mode": transform}
        if nearest:
            attrs["nearest_mode"] = nearest
        inputs = ["X", "", f"scales{i}"] if target.dtype == np.float32 else ["X", "", "", f"sizes{i}"]
        inits[inputs[-1]] = target
        nodes.append(helper.make_node("Resize", inputs, [f"r{i}"], **attrs))
        outputs.append(f"r{i}")
    nodes.append(helper.make_node("Resize", ["X", "", "", "sizes_ex"], ["cubic_excl"], mode="cubic",
                                  exclude_outside=1))
    inits["sizes_ex"] = np.array([2, 3, 8, 3], np.int64)
    model = make_model(nodes, {"X": (TP.FLOAT, [2, 3, 4, 5])}, outputs + ["cubic_excl"], inits,
                       opset=19)
    check_against_onnxruntime(model)


def test_resize_antialias_aspect_ratio_and_crop():
    """Antialiased downscales (wider kernels), keep_aspect_ratio_policy and tf_crop_and_resize
    with extrapolation, against onnxruntime."""
    nodes = [
        helper.make_node("Resize", ["X", "", "down"], ["aa_linear"], mode="linear", antialias=1),
        helper.make_node("Resize", ["X", "", "down"], ["aa_cubic"], mode="cubic", antialias=1),
        helper.make_node("Resize", ["X", "", "", "sizes"], ["not_larger"], mode="linear",
                         axes=[2, 3], keep_aspect_ratio_policy="not_larger"),
        helper.make_node("Resize", ["X", "", "", "sizes"], ["not_smaller"], mode="nearest",
                         axes=[2, 3], keep_aspect_ratio_policy="not_smaller"),
        helper.make_node("Resize", ["X", "roi", "", "crop_sizes"], ["crop"], mode="linear",
                         coordinate_transformation_mode="tf_crop_and_resize",
                         extrapolation_value=-3.0),
    ]
    inits = {"down": np.array([1, 1, 0.5, 0.4], np.float32),
             "sizes": np.array([5, 9], np.int64),
             "roi": np.array([0, 0, -0.2, 0.3, 1, 1, 0.9, 1.2], np.float32),
             "crop_sizes": np.array([2, 3, 5, 4], np.int64)}
    model = make_model(nodes, {"X": (TP.FLOAT, [2, 3, 8, 10])},
                       ["aa_linear", "aa_cubic", "not_larger", "not_smaller", "crop"], inits,
                       opset=19)
    check_against_onnxruntime(model)


def test_resize_align_corners_with_a_fractional_length_is_refused():
    """in * scale = 7.5: onnx's reference divides by 6.5, onnxruntime by 6; no guessing."""
    node = helper.make_node("Resize", ["X", "", "scales"], ["Y"], mode="linear",
                            coordinate_transformation_mode="align_corners")
    model = make_model([node], {"X": (TP.FLOAT, [1, 1, 4, 5])}, ["Y"],
                       {"scales": np.array([1, 1, 1, 1.5], np.float32)}, opset=19)
    with pytest.raises(UnsupportedError, match="resized length 7.5 is fractional"):
        compile_model(model, optimize=False)


def test_space_to_depth_crd_and_integer_maxpool():
    from onnx.reference import ReferenceEvaluator


    s2d = make_model([helper.make_node("SpaceToDepth", ["E"], ["s2d"], blocksize=2, mode="CRD")],
                     {"E": (TP.FLOAT, [1, 2, 4, 6])}, ["s2d"], opset=28)
    e = np.arange(48, dtype=np.float32).reshape(1, 2, 4, 6)
    np.testing.assert_array_equal(compile_model(s2d, optimize=False).run([e])[0],
                                  ReferenceEvaluator(s2d).run(None, {"E": e})[0])
    maxpool = helper.make_node("MaxPool", ["U"], ["m"], kernel_shape=[2, 2], pads=[1, 1, 0, 0])
    pool = make_model([maxpool],
                      {"U": (TP.UINT8, [1, 2, 5, 5])}, ["m"])
    check_against_onnxruntime(pool)
