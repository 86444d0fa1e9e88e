"""Build generated C into a Python extension with cffi (API mode), cached on disk.

cffi writes the wrapper (`ffi.set_source` + `emit_c_code`); the compiler is then run directly
so its flags are exactly the target's and its messages can be reported. Three parts are linked:
the generated model (target flags), the cffi wrapper (plain -O1) and the csrc kernels (target
flags; their objects are cached separately because every model shares them). Each compilation
gets the target's generated graphopt_config.h (c/config.py) on its include path.

Cache: <cache>/modules/<key>/ holds model.c, the extension and build.json, where key hashes the
generated source, csrc, flags, compiler version, Python ABI and cffi version; a hit skips the
compiler entirely. <cache> is the `cache_dir` argument, else $GRAPHOPT_CACHE_DIR, else
$XDG_CACHE_HOME/graphopt, else ~/.cache/graphopt. Directories appear atomically (built in a
temporary directory and renamed), so concurrent builds of the same model are safe; a process
that finds another one building the same key waits for it (a lock file per key) instead of
compiling the same source twice.

One module may hold several entry points (`entries`): the batch build of api.compile_many puts
many small programs in one translation unit, so they cost one compiler run instead of one each.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Iterator, Sequence

from graphopt.backend.c.codegen import ENTRY, entry_cdef
from graphopt.backend.c.config import HEADER_NAME, config_header
from graphopt.backend.c.target import Target
from graphopt.errors import CodegenError

log = logging.getLogger(__name__)

# libgomp spin iterations before an idle thread sleeps (see _set_wait_policy)
SPIN_COUNT = 10000

# A wheel carries the kernels inside the package (setup.py copies them); a checkout has them at
# the top level.
_PACKAGED_CSRC = Path(__file__).resolve().parent / "csrc"
CSRC_DIR = _PACKAGED_CSRC if _PACKAGED_CSRC.is_dir() else Path(__file__).resolve().parents[2] / "csrc"
CSRC_SOURCES = ("gemm.c", "conv.c", "winograd.c", "im2col_gather.c", "nchwc.c",
                "qgemm.c", "qgemm_tile.c", "qepilogue.c", "qpack.c", "qplane.c", "qconv.c",
                "qdepthwise.c", "qpool.c", "qeltwise.c")
ABI_VERSION = "1"  # bump when the entry point's signature or calling convention changes

_LOADED: dict[str, ModuleType] = {}


@dataclass(frozen=True)
class Toolchain:
    compiler: str
    version: str
    openmp: bool


@dataclass(frozen=True)
class BuiltModule:
    module: ModuleType  # has .ffi and .lib (the entry points, graphopt_set_num_threads...)
    directory: Path
    source_path: Path
    cached: bool
    seconds: float
    flags: tuple[str, ...]


def cache_root(cache_dir: "str | os.PathLike | None" = None) -> Path:
    """The cache directory (see the module docstring for the lookup order)."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("GRAPHOPT_CACHE_DIR"):
        return Path(os.environ["GRAPHOPT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "graphopt"


@functools.lru_cache(maxsize=None)
def toolchain(compiler: str | None = None) -> Toolchain:
    """The C compiler ($CC, else gcc, else cc), its version line and OpenMP support."""
    compiler = compiler or os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not compiler:
        raise CodegenError("no C compiler found: install gcc (or set $CC) to use the C backend")
    try:
        out = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=30)
    except OSError as err:
        raise CodegenError(f"cannot run the C compiler '{compiler}': {err}") from None
    version = (out.stdout or out.stderr).splitlines()[0] if (out.stdout or out.stderr) else compiler
    with tempfile.TemporaryDirectory(prefix="graphopt-omp-") as tmp:
        probe = Path(tmp) / "probe.c"
        probe.write_text("#include <omp.h>\n"
                         "int main(void) { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        result = subprocess.run([compiler, "-fopenmp", str(probe), "-o", str(Path(tmp) / "probe")],
                                capture_output=True, text=True, timeout=60)
    return Toolchain(compiler, version, result.returncode == 0)


def target_flags(target: Target, tools: Toolchain) -> tuple[str, ...]:
    flags = list(target.cflags) + ["-fPIC"] + [f"-D{d}" for d in target.defines]
    if target.openmp and tools.openmp:
        flags.append("-fopenmp")
    return tuple(flags)


def build(source: str, target: Target, cache_dir: "str | os.PathLike | None" = None,
          entries: Sequence[str] = (ENTRY,)) -> BuiltModule:
    """Compile `source` (generated C defining `entries`) for `target` and import it, cached."""
    import cffi

    started = time.perf_counter()
    tools = toolchain()
    flags = target_flags(target, tools)
    csrc = _csrc_texts(target, tools)
    cdef = entry_cdef(entries)
    key = _hash(ABI_VERSION, source, cdef, *csrc.values(), *flags, tools.version,
                sysconfig.get_config_var("EXT_SUFFIX") or "", cffi.__version__)[:24]
    root = cache_root(cache_dir)
    final = root / "modules" / key
    module_name = f"_graphopt_{key[:16]}"
    so_name = module_name + (sysconfig.get_config_var("EXT_SUFFIX") or ".so")
    cached = (final / so_name).is_file()
    if not cached:
        with _build_lock(root, key):
            cached = (final / so_name).is_file()  # built by another process while we waited
            if not cached:
                _compile_module(source, cdef, module_name, so_name, flags, tools, root, final,
                                csrc)
    module = _load(module_name, final / so_name)
    seconds = time.perf_counter() - started
    log.info("C module %s (%s) in %.2fs", final, "cached" if cached else "compiled", seconds)
    return BuiltModule(module, final, final / "model.c", cached, seconds, flags)


def csrc_objects(target: Target, cache_dir: "str | os.PathLike | None" = None,
                 compiler: str | None = None) -> list[Path]:
    """The csrc kernels compiled for `target` (cached), by `compiler` (default $CC/gcc): a way
    to check that a target's kernels compile without building a model, e.g. for an ISA this
    machine cannot run or with a cross compiler."""
    tools = toolchain(compiler)
    return _csrc_objects(target_flags(target, tools), tools, cache_root(cache_dir),
                         _csrc_texts(target, tools))


def _csrc_texts(target: Target, tools: Toolchain) -> dict[str, str]:
    """Every csrc header and source by name, plus the target's generated config header."""
    if not (CSRC_DIR / "graphopt_kernels.h").is_file():
        raise CodegenError(f"the hand-written kernels are missing: {CSRC_DIR} should hold "
                           "graphopt_kernels.h and the csrc/*.c files of the graphopt checkout")
    names = sorted(p.name for p in CSRC_DIR.glob("*.h")) + list(CSRC_SOURCES)
    texts = {n: (CSRC_DIR / n).read_text() for n in names}
    texts[HEADER_NAME] = config_header(target, tools.compiler)
    return texts


def _write_config(csrc: dict[str, str], directory: Path) -> list[str]:
    """Write the generated config header into `directory`; the include flags that find it."""
    (directory / HEADER_NAME).write_text(csrc[HEADER_NAME])
    return ["-I", str(directory), "-I", str(CSRC_DIR)]


def _hash(*parts: str) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part.encode())
        digest.update(b"\0")
    return digest.hexdigest()


@contextlib.contextmanager
def _build_lock(root: Path, key: str) -> Iterator[None]:
    """Hold an exclusive lock on <root>/locks/<key> (POSIX; elsewhere builds may overlap)."""
    try:
        import fcntl
    except ImportError:  # no fcntl (Windows): the atomic rename alone keeps the cache sound
        yield
        return
    (root / "locks").mkdir(parents=True, exist_ok=True)
    with open(root / "locks" / key, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _compile_module(source: str, cdef: str, module_name: str, so_name: str,
                    flags: tuple[str, ...], tools: Toolchain, root: Path, final: Path,
                    csrc: dict[str, str]) -> None:
    import cffi

    (root / "tmp").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=root / "tmp"))
    try:
        model_c = work / "model.c"
        model_c.write_text(source)
        ffi = cffi.FFI()
        ffi.cdef(cdef)
        ffi.set_source(module_name, '#include "graphopt_kernels.h"\n' + cdef)
        with contextlib.redirect_stdout(io.StringIO()):  # cffi announces the file it writes
            ffi.emit_c_code(str(work / "wrapper.c"))
        include = _write_config(csrc, work)
        python_include = ["-I", sysconfig.get_paths()["include"]]
        jobs = [[tools.compiler, *flags, *include, "-c", str(model_c), "-o", str(work / "model.o")],
                [tools.compiler, "-O1", "-fPIC", "-w", *include, *python_include, "-c",
                 str(work / "wrapper.c"), "-o", str(work / "wrapper.o")]]
        objects = _csrc_objects(flags, tools, root, csrc)
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(_run, jobs))
        for cmd, result in zip(jobs, results):
            if result.returncode != 0:
                raise _compiler_error(cmd, result, source, root)
        link = [tools.compiler, "-shared", "-o", str(work / so_name), str(work / "model.o"),
                str(work / "wrapper.o"), *map(str, objects), "-lm"]
        if "-fopenmp" in flags:
            link.append("-fopenmp")
        if sys.platform == "darwin":
            link += ["-undefined", "dynamic_lookup"]
        result = _run(link)
        if result.returncode != 0:
            raise _compiler_error(link, result, source, root)
        for leftover in ("model.o", "wrapper.o", "wrapper.c"):
            (work / leftover).unlink(missing_ok=True)
        (work / "build.json").write_text(json.dumps({"flags": list(flags),
                                                      "compiler": tools.version}, indent=1))
        final.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(work, final)
        except OSError:  # another process built the same module first
            if not (final / so_name).is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _csrc_objects(flags: tuple[str, ...], tools: Toolchain, root: Path,
                  csrc: dict[str, str]) -> list[Path]:
    """csrc objects compiled with `flags`, cached under <cache>/objects/<hash>/."""
    key = _hash(*csrc.values(), *flags, tools.version)[:24]
    directory = root / "objects" / key
    objects = [directory / (Path(n).stem + ".o") for n in CSRC_SOURCES]
    if all(o.is_file() for o in objects):
        return objects
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="objects-", dir=root / "tmp"))
    try:
        include = _write_config(csrc, work)
        jobs = [[tools.compiler, *flags, *include, "-c", str(CSRC_DIR / n), "-o",
                 str(work / (Path(n).stem + ".o"))] for n in CSRC_SOURCES]
        with ThreadPoolExecutor(max_workers=2) as pool:
            results = list(pool.map(_run, jobs))
        for cmd, result in zip(jobs, results):
            if result.returncode != 0:
                raise CodegenError(f"compiling the csrc kernels failed ({' '.join(cmd)}):\n"
                                   f"{_first_lines(result.stderr)}")
        directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(work, directory)
        except OSError:
            if not all(o.is_file() for o in objects):
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return objects


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    log.debug("running %s", " ".join(cmd))
    return subprocess.run(cmd, capture_output=True, text=True)


def _compiler_error(cmd: list[str], result: subprocess.CompletedProcess, source: str,
                    root: Path) -> CodegenError:
    """Keep the failing source where the message says, and report the compiler's words."""
    failed = root / "failed" / _hash(source)[:24]
    failed.mkdir(parents=True, exist_ok=True)
    (failed / "model.c").write_text(source)
    return CodegenError(f"the C compiler failed on the generated source {failed / 'model.c'} "
                        f"({' '.join(cmd[:1] + [c for c in cmd if c.startswith('-')][:6])} ...):\n"
                        f"{_first_lines(result.stderr or result.stdout)}")


def _first_lines(text: str, count: int = 20) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[:count]) + ("\n..." if len(lines) > count else "")


def _load(module_name: str, path: Path) -> ModuleType:
    key = str(path)
    if key not in _LOADED:
        _set_wait_policy()
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise CodegenError(f"cannot load the compiled module {path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        _LOADED[key] = module
    return _LOADED[key]


def _set_wait_policy() -> None:
    """Give libgomp's idle threads a bounded spin (GOMP_SPINCOUNT=SPIN_COUNT, ~0.2-0.3 ms of
    `pause`) before they sleep, unless the user chose a wait policy or a spin count. libgomp
    reads them once, when it loads (with the first compiled module, unless another library of
    the process loaded it before: then its policy stands).

    The backend opens one parallel region per threaded kernel, and the gaps between kernels of
    one run are tens of microseconds, so a region must find its threads awake. Measured with
    benchmarks/omp_probe.py: on the 2-core Zen 4 guest (quiet), fork/join costs 31-43 us
    passive, 0.7 us with the threads still spinning; a `pause` is 0.02 us, so the bound keeps
    them awake across a run's gaps and asleep ~0.2 ms after it. mobilenet_v2 at 2 threads (57
    kernels): bare C run 5.6 ms passive, 4.4 ms with this bound. libgomp's default (~300000
    spins, ~6-9 ms) is what hurt on a loaded machine (spinning threads took the cores from the
    ones with work: 11 ms per fork after a 500 us gap on Zen 3 at load 5-8). Set
    OMP_WAIT_POLICY=PASSIVE to never spin."""
    if "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return
    os.environ["GOMP_SPINCOUNT"] = str(SPIN_COUNT)
    if _libgomp_loaded():
        log.info("libgomp was loaded before graphopt's first module: GOMP_SPINCOUNT=%d does "
                 "not apply to it", SPIN_COUNT)


def _libgomp_loaded() -> bool:
    """Whether the process has mapped the system libgomp already (Linux; False elsewhere)."""
    try:
        return "/libgomp.so" in Path("/proc/self/maps").read_text()
    except OSError:
        return False
