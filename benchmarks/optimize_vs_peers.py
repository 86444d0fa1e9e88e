"""Benchmark: `graphopt optimize` against its standard-ONNX peers, onnxsim and onnxslim.

For every model (the shared sample models and the onnx package's backend/test/data/light models)
each tool optimizes the same file. The script reports, per tool: node count, wall time (model
file -> optimized ModelProto in memory; median of --repeat runs for models under
--single-run-mb, one run above), whether the output passes onnx.checker and whether its
onnxruntime outputs match the input model's on random inputs (fp32 rtol 1e-4 / atol 1e-5).
The tools' timed runs alternate (graphopt, peers, peers, graphopt, ...), so a change in the
machine's load during a model's runs weighs on every tool alike; a fast model gets more rounds
than --repeat (until each tool has run --min-seconds, at most 5 x --repeat rounds), so one
descheduling of a 30 ms run does not decide its median.

Each tool runs in its own worker process, so a peer that crashes (even with a segfault) or hangs
shows as "error" in its cells and the run goes on. The exit status is 1 if graphopt failed
anywhere, mismatched outputs or produced more nodes than the best valid peer.

    python benchmarks/optimize_vs_peers.py [--models NAME ...] [--level 2] [--passes LIST] [--quick]
"""
from __future__ import annotations

import argparse
import fnmatch
import functools
import importlib.util
import multiprocessing
import multiprocessing.connection
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import onnx

from _common import (OUT_DIR, format_table, machine_info, machine_line, median, package_versions,
                     timed_runs, write_json)

TOOLS = ("graphopt", "onnxsim", "onnxslim")
PEERS = ("onnxsim", "onnxslim")
REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODELS_DIR = REPO_ROOT.parent / "shared" / "models"
LIGHT_MODELS_DIR = Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"
DEFAULT_JSON = OUT_DIR / "optimize_vs_peers.json"
# Beyond this size a model is timed once (and skipped by --quick).
SINGLE_RUN_MB = 20.0
# Protobuf cannot serialize 2 GB; bigger outputs are saved with external data.
EXTERNAL_DATA_BYTES = 1_800_000_000


@dataclass(frozen=True)
class Settings:
    """What graphopt runs and how each tool is timed."""

    level: int = 2
    passes: str | None = None
    repeats: int = 3
    single_run_mb: float = SINGLE_RUN_MB
    min_seconds: float = 0.0  # a repeated model's rounds go on until each tool ran this long
    timeout_s: float = 1800.0
    keep_dir: Path | None = None  # keep each tool's output model here

    def runs_for(self, path: Path) -> int:
        return 1 if path.stat().st_size > self.single_run_mb * 1e6 else max(1, self.repeats)

    def describe(self) -> str:
        return f"passes {self.passes}" if self.passes else f"-O{self.level}"


@dataclass
class ToolResult:
    """One tool on one model. status: ok | error | n/a (not installed or not selected).
    match: yes | no | invalid (onnx.checker failed) | error | n/a (no reference outputs)."""

    status: str = "n/a"
    nodes_out: int | None = None
    times_s: list[float] = field(default_factory=list)
    median_s: float | None = None
    match: str = "n/a"
    max_abs_err: float | None = None
    max_rel_err: float | None = None
    error: str | None = None


@dataclass
class ModelResult:
    name: str
    path: str
    size_bytes: int
    nodes_in: int | None = None
    runs: int = 1
    reference_error: str | None = None
    tools: dict[str, ToolResult] = field(default_factory=dict)
    # graphopt's node count <= min over peers with valid outputs; None when it cannot be judged.
    not_more_than_peers: bool | None = None

    def graphopt_failures(self) -> list[str]:
        """Why this model counts against graphopt (empty when it does not)."""
        go = self.tools["graphopt"]
        if go.status != "ok":
            return [f"{self.name}: graphopt failed (see notes)"]
        problems = []
        if go.match in ("no", "invalid", "error"):
            problems.append(f"{self.name}: graphopt output check says '{go.match}' (see notes)")
        if self.not_more_than_peers is False:
            problems.append(f"{self.name}: graphopt left {go.nodes_out} nodes, peers "
                            f"{_best_peer_nodes(self)}")
        return problems


# --- models -------------------------------------------------------------------------------------
def discover_models(models_dir: Path = DEFAULT_MODELS_DIR, light_dir: Path = LIGHT_MODELS_DIR,
                    ) -> list[Path]:
    """The shared sample models, then the onnx package's light backend-test models."""
    return sorted(models_dir.glob("*.onnx")) + sorted(light_dir.glob("*.onnx"))


def select_models(available: Sequence[Path], wanted: Sequence[str]) -> list[Path]:
    """Models named by stem or glob (`mlp`, `light_*`), or given as paths to .onnx files."""
    if not wanted:
        return list(available)
    chosen: list[Path] = []
    for pattern in wanted:
        if pattern.endswith(".onnx") and Path(pattern).is_file():
            matches = [Path(pattern)]
        else:
            matches = [p for p in available if fnmatch.fnmatch(p.stem, pattern)]
        if not matches:
            names = ", ".join(p.stem for p in available)
            raise SystemExit(f"no model matches {pattern!r}; available: {names}")
        chosen += [p for p in matches if p not in chosen]
    return chosen


def count_nodes(graph: onnx.GraphProto) -> int:
    """Nodes of `graph`, including those in subgraphs (If/Loop/Scan bodies)."""
    total = 0
    for node in graph.node:
        total += 1
        for attr in node.attribute:
            total += sum(count_nodes(g) for g in ([attr.g] if attr.HasField("g") else []))
            total += sum(count_nodes(g) for g in attr.graphs)
    return total


# --- the tools, run inside worker processes -----------------------------------------------------
def _optimize_graphopt(path: str, level: int, passes: str | None) -> onnx.ModelProto:
    import graphopt
    from graphopt.onnx_io import export_model

    return export_model(graphopt.optimize(path, level=level, passes=passes).graph)


def _optimize_onnxsim(path: str, level: int, passes: str | None) -> onnx.ModelProto:
    import onnxsim

    model, _ = onnxsim.simplify(path)  # its own check is off (check_n=0); we check below
    return model


def _optimize_onnxslim(path: str, level: int, passes: str | None) -> onnx.ModelProto:
    import onnxslim

    return onnxslim.slim(path)


OPTIMIZERS: dict[str, Callable[[str, int, str | None], onnx.ModelProto]] = {
    "graphopt": _optimize_graphopt, "onnxsim": _optimize_onnxsim, "onnxslim": _optimize_onnxslim}


def save_any_size(model: onnx.ModelProto, path: Path) -> None:
    """onnx.save_model, with external data when the weights pass protobuf's 2 GB limit."""
    weights = sum(len(t.raw_data) for t in model.graph.initializer)
    if weights > EXTERNAL_DATA_BYTES:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=path.name + ".data")
    else:
        onnx.save_model(model, path)


def _warm_up(tool: str) -> None:
    """One untimed run on a one-node model, so lazy imports and registries are not billed to the
    first real model. Errors are ignored here: the real job reports them."""
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 4])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, 4])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Relu", ["x"], ["y"])], "warmup", [x], [y])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)])
    with tempfile.TemporaryDirectory(prefix="bench-warmup-") as tmp:
        path = Path(tmp) / "warmup.onnx"
        onnx.save_model(model, path)
        try:
            OPTIMIZERS[tool](str(path), 1, None)
        except Exception:  # noqa: BLE001 - see docstring
            pass


def _worker_main(tool: str, conn: multiprocessing.connection.Connection) -> None:
    """Serve jobs {path, out, level, passes, repeats} for one tool until sent None; the output
    model is written to `out` unless `out` is None."""
    _warm_up(tool)
    optimizer = OPTIMIZERS[tool]
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            run_once = functools.partial(optimizer, job["path"], job["level"], job["passes"])
            model, times = timed_runs(run_once, job["repeats"])
            if job["out"] is not None:
                save_any_size(model, Path(job["out"]))
            conn.send({"times": times})
        except Exception as err:  # noqa: BLE001 - any failure of the tool is a result
            conn.send({"error": f"{type(err).__name__}: {err}"})


class ToolWorker:
    """A worker process for one tool, restarted after a crash or a timeout."""

    def __init__(self, tool: str):
        self.tool = tool
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: multiprocessing.connection.Connection | None = None
        self.exitcode: int | None = None

    def _start(self) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork: onnxruntime threads live here
        self.conn, child_conn = ctx.Pipe()
        self.process = ctx.Process(target=_worker_main, args=(self.tool, child_conn), daemon=True,
                                   name=f"bench-{self.tool}")
        self.process.start()
        child_conn.close()

    def run(self, job: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        if self.process is None or not self.process.is_alive():
            self._start()
        assert self.conn is not None and self.process is not None
        try:
            self.conn.send(job)
            if self.conn.poll(timeout_s):  # also true when the worker closed the pipe by dying
                return self.conn.recv()
        except (EOFError, OSError):
            self.close()  # the worker is exiting: reap it for its exit code
            code = self.exitcode
            return {"error": f"worker process died (exit code {code}"
                             f"{', a crash' if code is not None and code < 0 else ''})"}
        self.close()
        return {"error": f"timed out after {timeout_s:.0f} s"}

    def close(self) -> None:
        """Ask the worker to stop, kill it after 5 s, and keep its exit code."""
        if self.process is None:
            return
        if self.process.is_alive() and self.conn is not None:
            try:
                self.conn.send(None)
            except OSError:
                pass
        self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.exitcode = self.process.exitcode
        self.process = None


# --- checking outputs ---------------------------------------------------------------------------
@dataclass
class Reference:
    feeds: dict[str, np.ndarray]
    output_names: list[str]
    outputs: list[np.ndarray]


def make_reference(path: Path) -> Reference:
    """Random inputs (graphopt.numerics.random_inputs, seed 0) and the input model's outputs."""
    from graphopt.numerics import random_inputs, run_onnxruntime
    from graphopt.onnx_io import load

    model = onnx.load(str(path))
    feeds = random_inputs(load(model), seed=0)
    return Reference(feeds, [o.name for o in model.graph.output], run_onnxruntime(model, feeds))


def check_output(out_path: Path, reference: Reference | None, result: ToolResult) -> None:
    """Fill node count, checker verdict and output comparison of one tool's output model."""
    from graphopt.numerics import compare_outputs, run_onnxruntime

    model = onnx.load(str(out_path))
    result.nodes_out = count_nodes(model.graph)
    try:
        onnx.checker.check_model(str(out_path))
    except Exception as err:  # noqa: BLE001 - the checker raises several types
        result.match, result.error = "invalid", f"onnx.checker: {err}"
        return
    if reference is None:
        return
    names = [o.name for o in model.graph.output]
    if names != reference.output_names:
        result.match, result.error = "no", f"outputs {names} != {reference.output_names}"
        return
    inputs = {i.name for i in model.graph.input}
    try:
        got = run_onnxruntime(model, {k: v for k, v in reference.feeds.items() if k in inputs})
    except Exception as err:  # noqa: BLE001 - onnxruntime raises its own exception types
        result.match, result.error = "error", f"onnxruntime: {err}"
        return
    comparison = compare_outputs(names, reference.outputs, got)
    result.max_abs_err = max((c.max_abs for c in comparison), default=0.0)
    result.max_rel_err = max((c.max_rel for c in comparison), default=0.0)
    result.match = "yes" if comparison.ok else "no"
    if result.match == "no":
        result.error = comparison.describe()


def _best_peer_nodes(model: ModelResult) -> int | None:
    """Fewest nodes among peers whose output is valid (matching, or unverifiable for lack of a
    reference); None when no peer qualifies."""
    counts = [r.nodes_out for name, r in model.tools.items()
              if name in PEERS and r.status == "ok" and r.nodes_out is not None
              and (r.match == "yes" or (r.match == "n/a" and model.reference_error))]
    return min(counts) if counts else None


# --- the benchmark ------------------------------------------------------------------------------
def available_tools(tools: Sequence[str] = TOOLS) -> list[str]:
    return [t for t in tools if t == "graphopt" or importlib.util.find_spec(t) is not None]


def benchmark_model(path: Path, tools: Sequence[str], settings: Settings,
                    workers: dict[str, ToolWorker], out_dir: Path) -> ModelResult:
    """Run every available tool on one model and check each output."""
    result = ModelResult(path.stem, str(path), path.stat().st_size, runs=settings.runs_for(path))
    result.tools = {t: ToolResult() for t in TOOLS}
    try:
        result.nodes_in = count_nodes(onnx.load(str(path), load_external_data=False).graph)
        reference: Reference | None = make_reference(path)
    except Exception as err:  # noqa: BLE001 - shown in the report; the tools still run
        reference, result.reference_error = None, f"{type(err).__name__}: {err}"
    replies = _timed_runs(path, tools, settings, result.runs, workers, out_dir)
    result.runs = max((len(r.get("times", ())) for r in replies.values()), default=result.runs)
    for tool in tools:
        tool_result, reply = result.tools[tool], replies[tool]
        if "error" in reply:
            tool_result.status, tool_result.match, tool_result.error = "error", "error", reply["error"]
            continue
        tool_result.status, tool_result.times_s = "ok", reply["times"]
        tool_result.median_s = median(reply["times"])
        check_output(out_dir / f"{path.stem}.{tool}.onnx", reference, tool_result)
    best = _best_peer_nodes(result)
    graphopt = result.tools["graphopt"]
    if best is not None and graphopt.status == "ok" and graphopt.nodes_out is not None:
        result.not_more_than_peers = graphopt.nodes_out <= best
    return result


def _timed_runs(path: Path, tools: Sequence[str], settings: Settings, runs: int,
                workers: dict[str, ToolWorker], out_dir: Path) -> dict[str, dict[str, Any]]:
    """At least `runs` timed runs of every tool on `path`, one run per tool in turn, the order
    reversed every round; the first run writes each tool's output model. When `runs` > 1, rounds
    go on until every tool has run `settings.min_seconds` in total (at most 5 x `runs` rounds).
    Per tool: {"times": [...]} or {"error": ...} (a tool that fails is not run again).
    `settings.timeout_s` bounds each tool's runs on the model together."""
    replies: dict[str, dict[str, Any]] = {tool: {"times": []} for tool in tools}
    budget = {tool: settings.timeout_s for tool in tools}

    def more_rounds(done: int) -> bool:
        if done < runs:
            return True
        if runs == 1 or done >= 5 * runs:
            return False
        return any(sum(r["times"]) < settings.min_seconds for r in replies.values()
                   if "error" not in r)

    round_index = 0
    while more_rounds(round_index):
        for tool in (tools if round_index % 2 == 0 else tools[::-1]):
            if "error" in replies[tool]:
                continue
            out = str(out_dir / f"{path.stem}.{tool}.onnx") if round_index == 0 else None
            start = time.perf_counter()
            reply = workers[tool].run({"path": str(path), "out": out, "level": settings.level,
                                       "passes": settings.passes, "repeats": 1},
                                      max(budget[tool], 1.0))
            budget[tool] -= time.perf_counter() - start
            if "error" in reply:
                replies[tool] = reply
            else:
                replies[tool]["times"] += reply["times"]
        round_index += 1
    return replies


def run_benchmark(model_paths: Sequence[Path], settings: Settings = Settings(),
                  tools: Sequence[str] = TOOLS,
                  progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Benchmark every model with every installed tool of `tools`; returns the JSON-ready report."""
    tools = available_tools(tools)
    workers = {tool: ToolWorker(tool) for tool in tools}
    results: list[ModelResult] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-outputs-") as tmp:
            out_dir = settings.keep_dir or Path(tmp)
            out_dir.mkdir(parents=True, exist_ok=True)
            for path in model_paths:
                if progress:
                    progress(f"{path.stem} ...")
                results.append(benchmark_model(Path(path), tools, settings, workers, out_dir))
    finally:
        for worker in workers.values():
            worker.close()
    failures = [msg for r in results for msg in r.graphopt_failures()]
    return {
        "benchmark": "optimize_vs_peers",
        "graphopt_pipeline": settings.describe(),
        "machine": machine_info(),
        "versions": package_versions(["graphopt", "onnx", "onnxruntime", "onnxsim", "onnxslim"]),
        "tools_run": tools,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(settings).items()},
        "models": [asdict(r) for r in results],
        "graphopt_failures": failures,
    }


# --- the report ---------------------------------------------------------------------------------
HEADERS = ("model", "nodes in", "graphopt", "onnxsim", "onnxslim", "<=peers", "runs",
           "ms graphopt", "ms onnxsim", "ms onnxslim", "go/sim", "ok graphopt", "ok onnxsim",
           "ok onnxslim")


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def _nodes_cell(r: dict[str, Any]) -> str:
    if r["status"] != "ok":
        return r["status"]
    return str(r["nodes_out"])


def _time_cell(r: dict[str, Any]) -> str:
    return _ms(r["median_s"]) if r["status"] == "ok" else r["status"]


def _ratio_cell(go: dict[str, Any], sim: dict[str, Any]) -> str:
    if go["median_s"] is None or not sim["median_s"]:
        return "-"
    return f"{go['median_s'] / sim['median_s']:.3g}x"


def _verdict_cell(flag: bool | None) -> str:
    return "-" if flag is None else "yes" if flag else "no"


def table_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for m in report["models"]:
        t = m["tools"]
        rows.append([m["name"], "-" if m["nodes_in"] is None else str(m["nodes_in"]),
                     *(_nodes_cell(t[k]) for k in TOOLS), _verdict_cell(m["not_more_than_peers"]),
                     str(m["runs"]), *(_time_cell(t[k]) for k in TOOLS),
                     _ratio_cell(t["graphopt"], t["onnxsim"]), *(t[k]["match"] for k in TOOLS)])
    return rows


def notes(report: dict[str, Any], width: int = 300) -> list[str]:
    """One line per error, invalid output or mismatch, so the table's 'error' cells are explained."""
    lines = []
    for m in report["models"]:
        if m["reference_error"]:
            lines.append(f"{m['name']} / reference: {m['reference_error']}")
        for tool, r in m["tools"].items():
            if r["error"]:
                lines.append(f"{m['name']} / {tool}: {r['error']}")
    return [line if len(line) <= width else line[:width - 3] + "..." for line in lines]


def render(report: dict[str, Any]) -> str:
    v = report["versions"]
    single_mb = report["settings"]["single_run_mb"]
    header = [
        f"graphopt {report['graphopt_pipeline']} vs onnxsim {v['onnxsim'] or 'n/a'} and onnxslim "
        f"{v['onnxslim'] or 'n/a'} (onnx {v['onnx']}, onnxruntime {v['onnxruntime']})",
        f"machine: {machine_line(report['machine'])}",
        "columns: node count in, then out per tool; <=peers: graphopt's count <= min(valid peers);",
        "  ms: wall time, model file -> optimized ModelProto, median of 'runs' runs (tools "
        f"alternating; one run for models over {single_mb:g} MB); go/sim: graphopt time / "
        "onnxsim time;",
        "  ok: onnx.checker passes and onnxruntime outputs match the input model's on random inputs "
        "(fp32 rtol 1e-4, atol 1e-5); invalid = onnx.checker failed",
        "",
    ]
    body = [format_table(HEADERS, table_rows(report))]
    extra = notes(report)
    if extra:
        body += ["", "notes:"] + [f"  {line}" for line in extra]
    verdict = (["", "graphopt: OK on every model"] if not report["graphopt_failures"] else
               ["", "graphopt FAILED:"] + [f"  {f}" for f in report["graphopt_failures"]])
    return "\n".join(header + body + verdict)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=[], metavar="NAME",
                        help="model stems or globs (mlp, light_*) or .onnx paths; default: all")
    parser.add_argument("--models-dir", type=Path, default=DEFAULT_MODELS_DIR,
                        help=f"folder of sample models (default: {DEFAULT_MODELS_DIR})")
    parser.add_argument("--level", type=int, default=2, help="graphopt -O level (default 2)")
    parser.add_argument("--passes", default=None,
                        help="explicit graphopt pass list, e.g. eliminate-dead-code (overrides --level)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {','.join(TOOLS)}")
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per small model (median)")
    parser.add_argument("--min-seconds", type=float, default=1.0,
                        help="rounds of a repeated model go on until each tool ran this long "
                             "(at most 5 x --repeat rounds; default %(default)s)")
    parser.add_argument("--single-run-mb", type=float, default=SINGLE_RUN_MB,
                        help="models larger than this are timed once")
    parser.add_argument("--quick", action="store_true",
                        help="one timed run each, and skip models larger than --single-run-mb")
    parser.add_argument("--timeout", type=float, default=1800.0,
                        help="seconds per tool per model (all its runs)")
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write results")
    parser.add_argument("--keep-models", type=Path, default=None, metavar="DIR",
                        help="keep each tool's output model in DIR")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = sorted(set(tools) - set(TOOLS))
    if unknown or "graphopt" not in tools:
        raise SystemExit(f"--tools must include graphopt and name only {', '.join(TOOLS)}")
    paths = select_models(discover_models(args.models_dir), args.models)
    settings = Settings(level=args.level, passes=args.passes,
                        repeats=1 if args.quick else args.repeat, single_run_mb=args.single_run_mb,
                        min_seconds=args.min_seconds,
                        timeout_s=args.timeout, keep_dir=args.keep_models)
    if args.quick:
        paths = [p for p in paths if p.stat().st_size <= settings.single_run_mb * 1e6]
    if not paths:
        raise SystemExit("no models to benchmark")
    report = run_benchmark(paths, settings, tools,
                           progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    print(render(report))
    print(f"\nresults: {write_json(args.json, report)}")
    return 1 if report["graphopt_failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
