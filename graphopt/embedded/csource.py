"""C text helpers of the bundle: identifiers and arrays written as compact literals.

Arrays are written many values per line so that large models stay compilable and diffable:
raw bytes as 32-bit hex words (exact for any element type), sample data in its own C type
(float32 with 9 significant digits, which reads back to the same float).
"""
from __future__ import annotations

import math
import re

import numpy as np

from graphopt.backend.c import cdtypes
from graphopt.ir.types import DType

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
C_KEYWORDS = frozenset(
    "auto break case char const continue default do double else enum extern float for goto if "
    "inline int long register restrict return short signed sizeof static struct switch typedef "
    "union unsigned void volatile while main".split())


def identifier(text: str, fallback: str = "x") -> str:
    """`text` as a C identifier: other characters become '_', a leading digit gets a '_'."""
    name = re.sub(r"\W", "_", text) or fallback
    if name[0].isdigit():
        name = "_" + name
    return name + "_" if name in C_KEYWORDS else name


def is_identifier(text: str) -> bool:
    return bool(_IDENT.fullmatch(text)) and text not in C_KEYWORDS


def unique_identifiers(names: list[str], taken: set[str]) -> list[str]:
    """One C identifier per name, distinct from each other and from `taken` even ignoring case
    (their upper-case forms name macros)."""
    used = {t.lower() for t in taken}
    result = []
    for name in names:
        base = candidate = identifier(name)
        n = 1
        while candidate.lower() in used:
            candidate = f"{base}_{n}"
            n += 1
        used.add(candidate.lower())
        result.append(candidate)
    return result


def c_string(text: str) -> str:
    """`text` as a C string literal (quotes and backslashes escaped, non-ASCII as '?')."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    return '"' + escaped.encode("ascii", "replace").decode() + '"'


def in_comment(text: str) -> str:
    """`text` safe inside a /* */ comment."""
    return text.replace("*/", "* /")


def word_count(nbytes: int) -> int:
    """32-bit words holding `nbytes` (at least one: C has no empty arrays)."""
    return max(-(-nbytes // 4), 1)


def hex_words(data: bytes, per_line: int = 12) -> tuple[str, int]:
    """Little-endian 32-bit words of `data` (zero-padded) as C initializer lines, and the count."""
    padded = data + b"\0" * (4 * word_count(len(data)) - len(data))
    words = np.frombuffer(padded, dtype="<u4")
    text = [f"0x{w:x}" for w in words.tolist()]
    lines = [",".join(text[i:i + per_line]) for i in range(0, len(text), per_line)]
    return ",\n".join(lines), len(text)


def _float_literals(values: np.ndarray, dtype: DType) -> list[str]:
    """Float literals that read back to the same value (float32: 9 significant digits)."""
    digits, suffix = (9, "f") if dtype == DType.FLOAT else (17, "")
    result = []
    for value in values.astype(np.float64).tolist():
        if math.isnan(value) or math.isinf(value):
            result.append(cdtypes.literal(value, dtype))
            continue
        text = f"{value:.{digits}g}"
        if "." not in text and "e" not in text:
            text += ".0"
        result.append(text + suffix)
    return result


def array_literal(array: np.ndarray, dtype: DType, per_line: int = 8) -> str:
    """The elements of `array` as C literals of `dtype`, `per_line` to a line."""
    flat = np.asarray(array).reshape(-1)
    if dtype in cdtypes.FLOATS:
        text = _float_literals(flat, dtype)
    else:
        text = [cdtypes.literal(int(v), dtype) for v in flat.tolist()]
    text = text or ["0"]
    return ",\n".join(", ".join(text[i:i + per_line]) for i in range(0, len(text), per_line))
