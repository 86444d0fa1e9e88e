"""The one output comparison (graphopt.numerics): float reordering passes, a real change fails
with a message naming the element, its error and its tolerance."""
import numpy as np
import pytest

from graphopt.errors import VerificationError
from graphopt.ir.types import DType
from graphopt.numerics import (
    EXACT,
    TOLERANCES,
    Tolerance,
    check_outputs,
    compare_arrays,
    compare_outputs,
    tolerance_for,
)

RNG = np.random.default_rng(0)
X = RNG.standard_normal((64, 256)).astype(np.float32)
W = RNG.standard_normal((256, 96)).astype(np.float32) / 16
B = RNG.standard_normal(96).astype(np.float32) / 10


def linear_sums_in_order(x, w, b, order):
    """x @ w + b accumulated one product at a time in float32, over k in `order`: the same math
    as a MatMul kernel with another loop order or SIMD width."""
    acc = np.zeros((x.shape[0], w.shape[1]), np.float32)
    for k in order:
        acc += x[:, k:k + 1] * w[k:k + 1, :]
    return acc + b


def test_reordered_sums_pass():
    k = np.arange(X.shape[1])
    ref = linear_sums_in_order(X, W, B, k)
    got = linear_sums_in_order(X, W, B, k[::-1])
    assert not np.array_equal(ref, got)
    result = compare_arrays(ref, got, "y")
    assert result.ok, result.describe()
    assert 0 < result.worst.error <= result.worst.allowed


def test_reassociated_constants_pass_although_elements_fail_the_elementwise_rule():
    """(x + 1000) - 1000 folded into x + 0 (what simplify-constant-chain does): every element
    moves by up to half an ulp of 1000 (3e-5), which for x near 0 is far beyond 1e-4 x |x|."""
    x = RNG.standard_normal(1000).astype(np.float32)
    ref = (x + np.float32(1000)) - np.float32(1000)
    result = compare_arrays(ref, x, "y")
    assert result.ok, result.describe()
    assert result.off_elementwise >= 1  # the per-element rule would call this a changed model
    text = result.describe()
    assert "beyond the element-wise bound" in text and "<= tolerance" in text


def test_dropped_bias_fails():
    ref = X @ W + B
    result = compare_arrays(ref, X @ W, "y")
    assert not result.ok
    assert result.off > ref.size // 2


def test_swapped_operands_fail():
    a, b = X[:, :96], X[:, 96:192]
    assert not compare_arrays(a - b, b - a).ok
    assert not compare_arrays(X @ W, (X @ W).T.copy().reshape(X.shape[0], -1)).ok


def test_one_element_off_by_a_meaningful_amount_fails_with_its_own_error_and_tolerance():
    ref = X @ W + B
    got = ref.copy()
    scale = float(np.sqrt(np.mean(ref.astype(np.float64) ** 2)))
    got[5, 7] += np.float32(0.01 * scale)  # 1% of the output's rms, on one element of 6144
    result = compare_arrays(ref, got, "logits")
    assert not result.ok and result.off == 1
    assert result.worst.index == (5, 7)
    assert result.worst.error > result.worst.allowed
    text = result.describe()
    assert text.startswith("logits: ")
    assert "[5, 7]" in text and f"{ref[5, 7]:.7g}" in text and f"{got[5, 7]:.7g}" in text
    assert "> tolerance" in text and "1 of 6144 elements beyond tolerance" in text


def test_tolerance_is_relative_to_the_element_when_it_is_larger_than_the_rms():
    ref = np.array([1000.0, 1.0, -1.0, 0.5], np.float32)
    assert compare_arrays(ref, ref + np.array([0.05, 0, 0, 0], np.float32)).ok  # 5e-5 relative
    assert not compare_arrays(ref, ref + np.array([0.5, 0, 0, 0], np.float32)).ok
    # the rms (~500) lifts the bound of small elements: 5e-3 is reordering noise at this scale
    assert compare_arrays(ref, ref + np.array([0, 0.005, 0, 0], np.float32)).ok


def test_integers_and_bools_must_be_equal():
    ref = np.arange(12, dtype=np.int64).reshape(3, 4)
    got = ref.copy()
    got[2, 1] += 1
    result = compare_arrays(ref, got, "ids")
    assert not result.ok and result.tolerance == EXACT
    assert "1 of 12 elements differ" in result.describe() and "[2, 1]" in result.describe()
    assert compare_arrays(ref, ref.copy()).ok
    assert not compare_arrays(np.array([True, False]), np.array([True, True])).ok


@pytest.mark.parametrize("got, fragment", [
    ([1.0, np.nan, np.inf], "NaN/Inf positions differ at 1 of 3"),
    ([1.0, 2.0, -np.inf], "ref inf, got -inf"),
])
def test_nan_and_inf_positions_must_match(got, fragment):
    ref = np.array([1.0, 2.0, np.inf], np.float32)
    result = compare_arrays(ref, np.array(got, np.float32))
    assert not result.ok and fragment in result.describe()
    same = np.array([np.nan, 2.0, np.inf], np.float32)
    assert compare_arrays(same, same.copy()).ok


def test_shape_and_dtype_must_match():
    ref = np.zeros((2, 3), np.float32)
    assert "shape [3, 2]" in compare_arrays(ref, np.zeros((3, 2), np.float32)).describe()
    assert "dtype float64" in compare_arrays(ref, np.zeros((2, 3), np.float64)).describe()


def test_tolerances_per_dtype():
    assert tolerance_for(np.float32) == TOLERANCES[DType.FLOAT]
    assert tolerance_for(np.float16) == TOLERANCES[DType.FLOAT16]
    assert tolerance_for(np.int8) == EXACT
    ref = (X @ W).astype(np.float16)
    noisy = (ref.astype(np.float32) * (1 + 2e-3)).astype(np.float16)  # a few fp16 ulps
    assert compare_arrays(ref, noisy).ok
    assert not compare_arrays(ref.astype(np.float32), noisy.astype(np.float32)).ok


def test_explicit_tolerance_overrides_the_dtype():
    ref = np.array([1.0, 2.0], np.float32)
    got = np.nextafter(ref, np.float32(3))
    assert compare_arrays(ref, got).ok
    assert not compare_arrays(ref, got, tolerance=EXACT).ok
    assert compare_arrays(ref, ref + 0.5, tolerance=Tolerance(rtol=0.0, atol=1.0)).ok


def test_check_outputs_names_the_failing_output_only():
    ref = [X @ W, np.arange(4)]
    ok = check_outputs(["y", "ids"], ref, [r.copy() for r in ref], "unused")
    assert ok.ok and "y: all" in ok.describe() and "ids: all" in ok.describe()
    with pytest.raises(VerificationError, match=r"^pass 'p' changed the outputs: ids: 1 of 4 "):
        check_outputs(["y", "ids"], ref, [ref[0], np.array([0, 1, 2, 4])],
                      "pass 'p' changed the outputs")
    assert not compare_outputs(["y"], ref, ref[:1]).ok  # an output missing
