"""Small helpers shared by the benchmark scripts: machine description, timing, tables, JSON.

Kept generic on purpose: nothing here knows about a particular benchmark.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TypeVar

T = TypeVar("T")

OUT_DIR = Path(__file__).resolve().parent / "out"

# OpenBLAS's and onnxruntime's worker threads keep spinning for ~0.1 s after a call: without a
# pause, whichever engine runs next at 2 threads shares its cores with them (measured: the
# engine after numpy lost 10-20% at 2 threads, graphopt's mobilenet_v2 after onnxruntime 2x).
SETTLE_SECONDS = 0.3


def _lscpu_fields() -> dict[str, str]:
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True,
                              env={**os.environ, "LC_ALL": "C"}).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


def machine_info() -> dict[str, Any]:
    """CPU model, physical cores and logical CPUs (from lscpu when available), OS and Python."""
    fields = _lscpu_fields()
    model = fields.get("Model name") or platform.processor() or platform.machine()
    threads = int(fields.get("CPU(s)", os.cpu_count() or 0))
    try:
        cores = int(fields["Core(s) per socket"]) * int(fields.get("Socket(s)", "1"))
    except (KeyError, ValueError):
        cores = threads
    return {"cpu": model, "cores": cores, "threads": threads, "arch": platform.machine(),
            "os": f"{platform.system()} {platform.release()}",
            "python": platform.python_version()}


def machine_line(info: dict[str, Any] | None = None) -> str:
    """One line for a report header, e.g. 'AMD EPYC, 2 cores / 2 threads, x86_64, Python 3.11.7'."""
    info = info or machine_info()
    return (f"{info['cpu']}, {info['cores']} cores / {info['threads']} threads, {info['arch']}, "
            f"{info['os']}, Python {info['python']}")


def package_versions(names: Iterable[str]) -> dict[str, str | None]:
    """Installed version of each distribution, None when it is not installed."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def timed_runs(fn: Callable[[], T], repeats: int = 1) -> tuple[T, list[float]]:
    """Call `fn` `repeats` times; return the last result and each call's wall time in seconds."""
    times, result = [], None
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return result, times  # type: ignore[return-value]


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table; the first column is left-aligned, the others right-aligned."""
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        parts = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:])]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write `data` as indented JSON, creating the folder; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
    return path
