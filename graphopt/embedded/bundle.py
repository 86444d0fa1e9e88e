"""The files of a bundle, as text: header, model, weights, example, Makefile, README.

The model file is the backend's generated translation unit (same emitter core, with every
file-scope name prefixed) plus a thin typed API around its entry point; weights are one
`const` array of 32-bit words (so they land in flash) at the offsets the generated code reads.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.backend.c.codegen import GeneratedCode
from graphopt.backend.program import Tensor
from graphopt.embedded.csource import array_literal, c_string, hex_words, in_comment
from graphopt.embedded.footprint import Footprint
from graphopt.embedded.quantized import PortQuant
from graphopt.embedded.targets import BUNDLE_TARGETS, BundleTarget
from graphopt.ir.types import DType

# The <math.h> functions generated code may call; the bundle README lists those it uses.
LIBM = ("expf", "logf", "sqrtf", "tanhf", "powf", "fabsf", "floorf", "ceilf", "roundf",
        "nearbyintf", "rintf", "fmaf", "erff", "sinf", "cosf", "tanf", "atanf", "asinf", "acosf",
        "sinhf", "coshf", "asinhf", "acoshf", "atanhf", "fmodf", "fmaxf", "fminf", "log1pf",
        "expm1f", "exp", "log", "sqrt", "tanh", "pow", "fabs", "floor", "ceil", "round",
        "nearbyint", "erf", "sin", "cos", "tan", "atan", "fmod")

_LIBM_CALL = re.compile(rf"\b({'|'.join(LIBM)})\s*\(")
_C_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)  # prose such as "go round (each ..." is no call


@dataclass(frozen=True)
class Port:
    """One input or output of the API: its C parameter name, macro stem and tensor; `quant`
    for an integer port of a quantized model (its scale and zero point become macros)."""

    cname: str
    macro: str
    tensor: Tensor
    ctype: str
    quant: PortQuant | None = None


@dataclass(frozen=True)
class BundleText:
    """Everything the files are rendered from."""

    prefix: str
    model_name: str
    target: BundleTarget
    code: GeneratedCode
    inputs: tuple[Port, ...]
    outputs: tuple[Port, ...]
    sample: tuple[np.ndarray, ...]
    expected: tuple[np.ndarray, ...]
    rms: tuple[float, ...]  # per output: the scale the relative tolerance is measured against
    tolerances: tuple[tuple[float, float], ...]  # per output: (rtol, atol); (0, 0) exact
    csrc: dict[str, str]  # kernel files copied into the bundle
    reference: str = "onnxruntime"  # what computed `expected`

    @property
    def exact(self) -> bool:
        """Every output must match bit for bit (INT8 bundles whose outputs come from integers)."""
        return all(t == (0.0, 0.0) for t in self.tolerances)

    @property
    def upper(self) -> str:
        return self.prefix.upper()


def _signature(b: BundleText, arena: bool) -> str:
    params = [f"const {p.ctype}* {p.cname}" for p in b.inputs]
    params += [f"{p.ctype}* {p.cname}" for p in b.outputs]
    if arena:
        params.append("void* arena")
    name = f"{b.prefix}_run_with_arena" if arena else f"{b.prefix}_run"
    return f"int {name}({', '.join(params) or 'void'})"


def header(b: BundleText, footprint: Footprint) -> str:
    """NAME.h: the documented API and the size macros."""
    u = b.upper
    ports = []
    for kind, group in (("input", b.inputs), ("output", b.outputs)):
        for i, p in enumerate(group):
            t = p.tensor
            dims = ", ".join(map(str, t.shape)) or "1"
            ports.append(f"/* {kind} {i} '{in_comment(t.name)}': {t.dtype.name.lower()} "
                         f"[{', '.join(map(str, t.shape))}] */\n"
                         f"#define {u}_{p.macro}_SIZE {t.size}\n"
                         f"#define {u}_{p.macro}_RANK {t.rank}\n"
                         f"#define {u}_{p.macro}_DIMS {{{dims}}}\n" + _quant_macros(u, p))
    return f"""\
/* {b.prefix}.h: '{b.model_name}' compiled by graphopt emit-c for {b.target.name}.
 *
 *   {_signature(b, False)};
 *       Runs the model once on dense row-major arrays of the sizes below, using the static
 *       arena of {b.prefix}.c ({u}_ARENA_BYTES bytes of RAM): not re-entrant.
 *       Returns 0, or the 1-based number of the step whose run-time check failed (an index
 *       read from an input was out of range).
 *   {_signature(b, True)};
 *       The same with a caller-supplied arena of {u}_ARENA_BYTES bytes aligned to
 *       {u}_ALIGNMENT bytes. Compile {b.prefix}.c with -D{u}_NO_STATIC_ARENA to drop the
 *       static arena (and {b.prefix}_run).
 *
 * No malloc, no OS calls, no VLAs; weights are `const` (flash). Predicted footprint
 * ({footprint.method}): flash {footprint.flash} bytes, RAM {footprint.ram} bytes
 * (arena {footprint.arena}, stack {footprint.stack}); see README.md.
 */
#ifndef {u}_H
#define {u}_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {{
#endif

#define {u}_ARENA_BYTES {b.code.arena_bytes}
#define {u}_ALIGNMENT {b.target.codegen.alignment}
#define {u}_WEIGHT_BYTES {b.code.weights.nbytes}
#define {u}_NUM_INPUTS {len(b.inputs)}
#define {u}_NUM_OUTPUTS {len(b.outputs)}

{chr(10).join(ports)}
#if defined(__GNUC__) || defined(__clang__)
#define {u}_ALIGNED __attribute__((aligned({u}_ALIGNMENT)))
#else
#define {u}_ALIGNED /* declare the arena with your compiler's alignment attribute */
#endif

/* The weights (in {b.prefix}_weights.c): {b.code.weights.nbytes} bytes read in place. */
extern const uint32_t {b.prefix}_weights[];

{_signature(b, False)};
{_signature(b, True)};

#ifdef __cplusplus
}}
#endif

#endif /* {u}_H */
"""


def _quant_macros(upper: str, port: Port) -> str:
    """Scale and zero point of an integer port: real = (q - ZERO_POINT) * SCALE."""
    if port.quant is None:
        return ""
    stem = f"{upper}_{port.macro}"
    return (f"/* quantized {port.ctype}: real = (q - {stem}_ZERO_POINT) * {stem}_SCALE */\n"
            f"#define {stem}_SCALE {cdtypes.literal(port.quant.scale, DType.FLOAT)}\n"
            f"#define {stem}_ZERO_POINT {port.quant.zero_point}\n")


def model_source(b: BundleText) -> str:
    """NAME.c: the generated kernels and entry point, the static arena and the typed API."""
    u, code = b.upper, b.code
    pointers = [f"    inputs[{i}] = (void*){p.cname};" for i, p in enumerate(b.inputs)]
    pointers += [f"    outputs[{i}] = {p.cname};" for i, p in enumerate(b.outputs)]
    args = ", ".join(p.cname for p in (*b.inputs, *b.outputs))
    return f"""{code.prelude}#include "{b.prefix}.h"

int {code.entry}(void** inputs, void** outputs, const char* weights, char* arena);

{code.body}
{_signature(b, True)} {{
    void* inputs[{max(len(b.inputs), 1)}];
    void* outputs[{max(len(b.outputs), 1)}];
{chr(10).join(pointers)}
    return {code.entry}(inputs, outputs, (const char*){b.prefix}_weights, (char*)arena);
}}

#ifndef {u}_NO_STATIC_ARENA
static char {b.prefix}_arena[{u}_ARENA_BYTES > 0 ? {u}_ARENA_BYTES : 1] {u}_ALIGNED;

{_signature(b, False)} {{
    return {b.prefix}_run_with_arena({args}{", " if args else ""}{b.prefix}_arena);
}}
#endif
"""


def weights_source(b: BundleText) -> str:
    """NAME_weights.c: the weight blob as const 32-bit words (little-endian)."""
    words, count = hex_words(b.code.weights.blob().tobytes()[:b.code.weights.nbytes])
    return f"""\
/* Weights of '{b.model_name}' for {b.prefix}.c: {b.code.weights.nbytes} bytes as little-endian
 * 32-bit words, read in place (const: the linker puts them in flash). Generated; do not edit. */
#include "{b.prefix}.h"

const uint32_t {b.prefix}_weights[{count}] {b.upper}_ALIGNED = {{
{words}
}};
"""


def example_source(b: BundleText) -> str:
    """example_main.c: run on the embedded sample, compare with the reference's outputs."""
    u = b.upper
    arrays, checks = [], []
    for p, data in zip(b.inputs, b.sample):
        arrays.append(f"static const {p.ctype} sample_{p.cname}[{u}_{p.macro}_SIZE > 0 ? "
                      f"{u}_{p.macro}_SIZE : 1] = {{\n{array_literal(data, p.tensor.dtype)}\n}};")
    for p, data, rms, (rtol, atol) in zip(b.outputs, b.expected, b.rms, b.tolerances):
        arrays.append(f"static const {p.ctype} expected_{p.cname}[{u}_{p.macro}_SIZE > 0 ? "
                      f"{u}_{p.macro}_SIZE : 1] = {{\n{array_literal(data, p.tensor.dtype)}\n}};")
        arrays.append(f"static {p.ctype} got_{p.cname}[{u}_{p.macro}_SIZE > 0 ? "
                      f"{u}_{p.macro}_SIZE : 1];")
        scale = rms if np.isfinite(rms) else 0.0
        checks.append(f"    bad += {_check_name(p)}({c_string(p.tensor.name)}, got_{p.cname}, "
                      f"expected_{p.cname}, {u}_{p.macro}_SIZE, {scale!r}, {rtol!r}, {atol!r}, "
                      "&worst);")
    args = [f"sample_{p.cname}" for p in b.inputs] + [f"got_{p.cname}" for p in b.outputs]
    helpers = {}
    for p in b.outputs:
        kind = "float" if p.tensor.dtype.numpy.kind == "f" else "exact"
        template = _CHECK_FLOAT if kind == "float" else _CHECK_EXACT
        helpers[p.ctype] = template.replace("NAME", _check_name(p)).replace("TYPE", p.ctype)
    return f"""\
/* Runs {b.prefix} on the sample input embedded below and checks every output against the one
 * {b.reference} computed when the bundle was emitted: floats within
 * |got - want| <= atol + rtol * max(|want|, rms(want)) (graphopt.numerics' rule: summation
 * order moves an element by a fraction of the output's scale; rtol = atol = 0 for outputs of
 * integer arithmetic, which every target computes bit for bit), integers equal. Prints PASS
 * or FAIL; returns 0 on PASS, 1 on FAIL, 2 when the run itself reports an error. Generated;
 * do not edit. */
#include <math.h>
#include <stdio.h>

#include "{b.prefix}.h"

{chr(10).join(arrays)}

{chr(10).join(helpers.values())}
{_STACK_PROBE}
int main(void) {{
    int bad = 0;
    double worst = 0.0;
    int status;
    stack_paint();
    status = {b.prefix}_run({", ".join(args)});
    stack_report();
    if (status != 0) {{
        printf("FAIL: {b.prefix}_run stopped at step %d\\n", status);
        return 2;
    }}
{chr(10).join(checks)}
    printf("%s: {b.prefix} (emitted for {b.target.name}), "
           "max abs error %g vs {_reference_note(b)}\\n", bad ? "FAIL" : "PASS", worst);
    return bad ? 1 : 0;
}}
"""


def _reference_note(b: BundleText) -> str:
    """What the printed check compared with, for the example's last line."""
    if b.exact:
        return f"{b.reference}, bit for bit"
    rtol, atol = max(b.tolerances, default=(0.0, 0.0))
    return f"{b.reference} (rtol {rtol:g}, atol {atol:g})"


def _check_name(port: Port) -> str:
    """The example's comparison function for the port's element type."""
    return "check_" + port.ctype.replace("_t", "").replace(" ", "_")


# Compiled with -DMEASURE_STACK, the example reports the stack the run used: a buffer below
# main's frame is painted, the run's frames overwrite part of it, a second call at the same
# depth counts the bytes left painted (stacks grow down on every target here).
_STACK_PROBE = """\
#ifdef MEASURE_STACK
#define PROBE_BYTES 16384
#if defined(__GNUC__)
#pragma GCC diagnostic ignored "-Wuninitialized" /* reading what the run left is the point */
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
static void stack_paint(void) {
    volatile unsigned char area[PROBE_BYTES];
    long i;
    for (i = 0; i < PROBE_BYTES; ++i) area[i] = 0xA5;
    (void)area[0];
}
static void stack_report(void) {
    volatile unsigned char area[PROBE_BYTES];
    long untouched = 0;
    while (untouched < PROBE_BYTES && area[untouched] == 0xA5) ++untouched;
    printf("stack used by the run: at most %ld bytes\\n", PROBE_BYTES - untouched);
}
#else
static void stack_paint(void) {}
static void stack_report(void) {}
#endif
"""

_CHECK_FLOAT = """\
static int NAME(const char* name, const TYPE* got, const TYPE* want, long n,
                       double rms, double rtol, double atol, double* worst) {
    long i, bad = 0;
    for (i = 0; i < n; ++i) {
        double g = got[i], w = want[i], err = fabs(g - w);
        double scale = fabs(w) > rms ? fabs(w) : rms;
        if (err > *worst) *worst = err;
        if (!(err <= atol + rtol * scale)) {
            if (bad < 5) printf("  %s[%ld]: got %.9g, want %.9g\\n", name, i, g, w);
            ++bad;
        }
    }
    return bad != 0;
}
"""

_CHECK_EXACT = """\
static int NAME(const char* name, const TYPE* got, const TYPE* want, long n,
                       double rms, double rtol, double atol, double* worst) {
    long i, bad = 0;
    (void)rms;
    (void)rtol;
    (void)atol;
    (void)worst;
    for (i = 0; i < n; ++i) {
        if (got[i] != want[i]) {
            if (bad < 5) printf("  %s[%ld] differs\\n", name, i);
            ++bad;
        }
    }
    return bad != 0;
}
"""


def libm_used(sources: dict[str, str]) -> list[str]:
    """The <math.h> functions called by the model and kernel sources."""
    code = _C_COMMENT.sub(" ", "\n".join(sources.values()))
    called = set(_LIBM_CALL.findall(code))
    return [f for f in LIBM if f in called]


def makefile(b: BundleText, kernels: list[str]) -> str:
    """Makefile: the host and cross-compile lines; `make run` runs the example check."""
    blocks = []
    for t in BUNDLE_TARGETS.values():
        lines = [f"ifeq ($(TARGET),{t.name})", f"CC = {t.cc}", f"SIZE = {t.size}",
                 f"AR = {t.cc[:-3]}ar",
                 f"ARCH_FLAGS = {' '.join(t.cflags)}",
                 f"LDFLAGS = {' '.join(t.ldflags)}" + (" -T mps2.ld" if t.baremetal else ""),
                 f"RUN = {' '.join(t.run)}"]
        if t.baremetal:
            lines.append("STARTUP = startup_mps2.c")
        blocks.append("\n".join(lines) + "\nendif")
    model = [f"{b.prefix}.c", f"{b.prefix}_weights.c", *kernels]
    defines = " ".join(f"-D{d}" for d in b.target.codegen.defines)
    return f"""\
# Build the '{b.model_name}' bundle. `make run` builds example_main and runs the check
# (PASS/FAIL); `make lib` builds lib{b.prefix}.a to link into your firmware; `make size`.
# Objects, the example and its linker map go to build/$(TARGET)/.
# EXTRA_CFLAGS adds flags (e.g. make run EXTRA_CFLAGS=-Werror).
# Emitted for {b.target.name}; another target: make TARGET=host|aarch64|cortex-m4|cortex-m7
#   host:      gcc, runs natively
#   aarch64:   aarch64-linux-gnu-gcc -static, runs under qemu-aarch64
#   cortex-m4: arm-none-eabi-gcc -mcpu=cortex-m4 -mthumb -mfloat-abi=hard -mfpu=fpv4-sp-d16,
#              startup_mps2.c + mps2.ld, semihosting, runs under qemu-system-arm -M mps2-an386
#   cortex-m7: the same with -mcpu=cortex-m7 -mfpu=fpv5-sp-d16 on -M mps2-an500
TARGET ?= {b.target.name}
STARTUP =

{chr(10).join(blocks)}

CFLAGS = -std=c99 -Wall -Wextra -pedantic $(ARCH_FLAGS) {defines} -I. $(EXTRA_CFLAGS)
MODEL_SRCS = {' '.join(model)}
BUILD = build/$(TARGET)
MODEL_OBJS = $(MODEL_SRCS:%.c=$(BUILD)/%.o)
EXAMPLE = $(BUILD)/example

all: $(EXAMPLE)

$(BUILD)/%.o: %.c $(wildcard *.h)
\t@mkdir -p $(BUILD)
\t$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/lib{b.prefix}.a: $(MODEL_OBJS)
\t$(AR) rcs $@ $^

lib: $(BUILD)/lib{b.prefix}.a

$(EXAMPLE): example_main.c $(STARTUP) $(MODEL_OBJS)
\t$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) -Wl,-Map=$@.map -lm

run: $(EXAMPLE)
\t$(RUN) $(EXAMPLE)

size: $(MODEL_OBJS) $(EXAMPLE)
\t$(SIZE) $^

clean:
\trm -rf build

.PHONY: all lib run size clean
"""
