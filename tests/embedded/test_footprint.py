"""The footprint model on its own: per-layer MACs and arena use, the estimate used without a
target compiler, and reading a GNU ld map."""
import dataclasses
import subprocess

from embedded_helpers import require_tools
from graphopt.embedded import emit_c
from graphopt.embedded.footprint import LIBRARY_CALL_STACK, CallGraph
from graphopt.embedded.linkmap import contributions
from graphopt.embedded.targets import CORTEX_M4
from graphopt.testing import sample_model

MAP = """\
Discarded input sections

 .text          0x00000000        0x8 gone.o

Linker script and memory map

.text           0x00000400     0x2000
 .text          0x00000400      0x100 build/cortex-m4/model.o
 .rodata.very_long_section_name
                0x00000500       0x40 build/cortex-m4/model.o
 .ARM.exidx     0x00000540        0x8 build/cortex-m4/model.o
 .ARM.attributes
                0x00000000       0x34 build/cortex-m4/model.o
 .data          0x20000000        0x4 build/cortex-m4/model.o
 .bss           0x20000004      0x200 build/cortex-m4/model.o
 COMMON         0x20000204       0x10 /usr/lib/libc.a(lib_a-impure.o)
"""


def test_linker_map_contributions():
    placed = contributions(MAP)
    assert "gone.o" not in placed  # discarded sections are not placed
    assert placed["model.o"].flash == 0x100 + 0x40 + 0x8 + 0x4  # text, rodata, exidx, data
    assert placed["model.o"].ram == 0x4 + 0x200
    assert placed["libc.a(lib_a-impure.o)"].ram == 0x10


def test_layers_and_the_estimate_without_the_target_compiler(tmp_path):
    absent = dataclasses.replace(CORTEX_M4, cc="no-such-gcc", size="no-such-size")
    bundle = emit_c(sample_model("digits_cnn.onnx"), tmp_path / "d", target=absent)
    fp = bundle.footprint
    assert fp.method == "estimated" and fp.stack == 1024 and fp.code > 0
    convs = [layer for layer in fp.layers if layer.op_type == "Conv"]
    # 16 filters of 1x3x3 over 8x8, 32 of 16x3x3 over 8x8, 32 of 32x3x3 over 4x4
    assert [c.macs for c in convs] == [16 * 64 * 9, 32 * 64 * 16 * 9, 32 * 16 * 32 * 9]
    assert max(layer.arena_peak for layer in fp.layers) <= fp.arena
    assert all(layer.arena_live <= layer.arena_peak for layer in fp.layers)
    assert fp.weights >= sum(size for _, size in fp.largest_weights)
    assert "estimated" in (bundle.directory / "README.md").read_text()


CALLS = """\
#include <stdlib.h>
#include <string.h>
typedef void (*callback)(char*);
static void allocates(char* p) { char* q = malloc(64); if (q) { memcpy(q, p, 64); free(q); } }
static void deep(char* p) { volatile char big[512]; big[0] = p[0]; p[1] = big[0]; }
void kernel(char* p, callback cb) { cb(p); }
int m_run(void) { char a[32]; kernel(a, allocates); kernel(a, deep); return a[1]; }
"""


def test_call_graph_stack_bound_and_heap_users(tmp_path):
    """The stack bound follows calls through pointers to the deepest address-taken function,
    and a function the run reaches that calls malloc is named."""
    require_tools("gcc")
    (tmp_path / "m.c").write_text(CALLS)
    subprocess.run(["gcc", "-O1", "-std=c99", "-fcallgraph-info=su", "-c", str(tmp_path / "m.c"),
                    "-o", str(tmp_path / "m.o")], check=True)
    graph = CallGraph.read(tmp_path)
    frame = {name.rsplit(":", 1)[-1]: size for name, size in graph.frames.items()}
    assert graph.entries() == ["m_run"] and frame["deep"] >= 256
    assert graph.stack() == frame["m_run"] + frame["kernel"] + max(
        frame["deep"], frame["allocates"] + LIBRARY_CALL_STACK)
    assert graph.heap_users() == ["allocates"]
