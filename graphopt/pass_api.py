"""The public pass API: `register_pass`, the pass registry, pass specs and plugin loading.

Built-in passes (the top-level `passes/` package) use exactly this API, as do plugins loaded from
`--plugin file.py` or the `graphopt.passes` entry-point group.

A pass is a function `(graph: Graph, *, option=default, ...) -> bool | PassResult`. Its keyword-only
parameters are its options, settable from the command line as `name{option=value,...}`.
"""
from __future__ import annotations

import importlib
import importlib.util
import inspect
import logging
import re
import sys
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from graphopt.errors import BadInputError, GraphoptError
from graphopt.ir.graph import Graph

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "graphopt.passes"
BUILTIN_PACKAGE = "graphopt_passes"


@dataclass
class PassResult:
    """What a pass reports: whether it changed the graph, plus optional counters (rewrites...)."""

    changed: bool
    stats: dict[str, int] = field(default_factory=dict)


PassFunction = Callable[..., "bool | PassResult"]


@dataclass(frozen=True)
class PassInfo:
    """A registered pass: its function and the facts the pass manager and CLI need."""

    name: str
    fn: PassFunction
    summary: str
    level: int
    requires: tuple[str, ...]
    after: tuple[str, ...]
    options: dict[str, tuple[type, Any]]
    origin: str  # "builtin", "plugin:<file>", "entry-point:<name>" or "python:<module>"

    def run(self, graph: Graph, **options: Any) -> PassResult:
        result = self.fn(graph, **options)
        if isinstance(result, PassResult):
            return result
        if isinstance(result, bool):
            return PassResult(result)
        raise GraphoptError(f"pass '{self.name}' returned {type(result).__name__}; a pass returns "
                            "bool (changed?) or PassResult")


_REGISTRY: dict[str, PassInfo] = {}
_loading_origin: str | None = None  # set while a plugin file or an entry point is loading


def register_pass(name: str, *, level: int = 1, requires: tuple[str, ...] | str = (),
                  after: tuple[str, ...] | str = ()) -> Callable[[PassFunction], PassFunction]:
    """Register `fn` as pass `name`.

    level: the lowest -O level whose default pipeline includes the pass (built-in passes are
        placed by the presets in graphopt.pipelines); 0 keeps it out of every preset. This holds
        alike for a pass from `--plugin`, an entry point, or plain Python code that calls
        register_pass before optimize().
    requires: passes that must have run earlier in the pipeline (checked when it is built).
    after: for plugin passes, insert right after this pass in the default pipeline.
    """
    if not re.fullmatch(r"[a-z][a-z0-9_-]*", name):
        raise GraphoptError(f"invalid pass name {name!r}: use lowercase letters, digits, '-' or '_'")

    def decorate(fn: PassFunction) -> PassFunction:
        existing = _REGISTRY.get(name)
        if existing is not None and existing.fn is not fn and existing.fn.__qualname__ != fn.__qualname__:
            raise GraphoptError(f"pass '{name}' is already registered by {existing.origin}")
        _REGISTRY[name] = PassInfo(
            name=name, fn=fn, summary=_summary_of(fn), level=level,
            requires=_as_tuple(requires), after=_as_tuple(after), options=_options_of(fn),
            origin=_loading_origin or _origin_of(fn))
        return fn

    return decorate


def _origin_of(fn: PassFunction) -> str:
    """Where a pass registered outside plugin/entry-point loading comes from."""
    module = getattr(fn, "__module__", None) or "?"
    if module == BUILTIN_PACKAGE or module.startswith(BUILTIN_PACKAGE + "."):
        return "builtin"
    return f"python:{module}"


def _summary_of(fn: PassFunction) -> str:
    """The docstring's first paragraph as one line (a sentence wrapped in the source stays
    whole)."""
    doc = inspect.getdoc(fn) or ""
    paragraph = re.sub(r"/\s*\n\s*", "/", doc.strip().split("\n\n")[0])  # "A/\nB" -> "A/B"
    return " ".join(paragraph.split()) or "(no description)"


def _as_tuple(value: tuple[str, ...] | str) -> tuple[str, ...]:
    return (value,) if isinstance(value, str) else tuple(value)


def _options_of(fn: PassFunction) -> dict[str, tuple[type, Any]]:
    """Keyword-only parameters as {name: (type, default)}; the type is the default's, or the
    annotation's when the default is None (`limit: int | None = None` takes an int or None)."""
    options = {}
    for param in inspect.signature(fn).parameters.values():
        if param.kind == inspect.Parameter.KEYWORD_ONLY:
            default = param.default
            if default is None or default is inspect.Parameter.empty:
                kind = _annotated_type(fn, param.name)
            else:
                kind = type(default)
            options[param.name] = (kind, default)
    return options


def _annotated_type(fn: PassFunction, name: str) -> type:
    """The first of bool/int/float/str that parameter `name`'s annotation admits; str if none."""
    try:
        hint = typing.get_type_hints(fn).get(name)
    except Exception:  # an annotation naming something not importable here: treat as text
        return str
    candidates = typing.get_args(hint) or (hint,)
    return next((t for t in candidates if t in (bool, int, float, str)), str)


def registered_passes() -> dict[str, PassInfo]:
    """Every registered pass: built-ins, installed entry points, and plugins loaded so far."""
    load_builtin_passes()
    return dict(sorted(_REGISTRY.items()))


def get_pass(name: str) -> PassInfo:
    passes = registered_passes()
    if name not in passes:
        close = [n for n in passes if n.startswith(name[:3])]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise BadInputError(f"unknown pass '{name}'{hint}; `graphopt passes` lists them")
    return passes[name]


# --- pass specs: "fold-constants{max_elements=100},dce" ----------------------------------------
@dataclass(frozen=True)
class PassCall:
    """A pass with its option values, as one step of a pipeline."""

    info: PassInfo
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def name(self) -> str:
        return self.info.name

    def __str__(self) -> str:
        if not self.options:
            return self.name
        return self.name + "{" + ",".join(f"{k}={v!r}" for k, v in self.options) + "}"


_SPEC_ITEM = re.compile(r"\s*([a-z][a-z0-9_-]*)\s*(?:\{([^}]*)\})?\s*(?:,|$)")


def parse_pass_spec(spec: str) -> list[PassCall]:
    """Parse `a,b{opt=1,flag=true},c` into pass calls, checking names and option types."""
    calls, pos = [], 0
    spec = spec.strip()
    while pos < len(spec):
        match = _SPEC_ITEM.match(spec, pos)
        if not match or match.end() == pos:
            raise BadInputError(f"cannot parse pass list at {spec[pos:]!r}; expected "
                                "name or name{option=value,...}")
        info = get_pass(match.group(1))
        options = _parse_options(info, match.group(2) or "")
        calls.append(PassCall(info, options))
        pos = match.end()
    return calls


def _parse_options(info: PassInfo, text: str) -> tuple[tuple[str, Any], ...]:
    parsed = []
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, _, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in info.options:
            known = ", ".join(info.options) or "none"
            raise BadInputError(f"pass '{info.name}' has no option '{key}' (options: {known})")
        kind, default = info.options[key]
        parsed.append((key, _convert(raw.strip(), kind, default, info.name, key)))
    return tuple(parsed)


def _convert(raw: str, kind: type, default: Any, pass_name: str, key: str) -> Any:
    """`raw` as a `kind`; accepts the repr forms `graphopt passes` prints (True, 2.0, 'text'),
    and None for an option whose default is None."""
    if raw == "None" and default is None:
        return None
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"":
        raw = raw[1:-1]
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on", ""):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except (ValueError, TypeError):
        raise BadInputError(f"option {pass_name}{{{key}}} takes a {kind.__name__}, got {raw!r}") from None


# --- loading built-ins and plugins --------------------------------------------------------------
_builtins_loaded = False


def load_builtin_passes() -> None:
    """Import every module of the built-in pass package (each registers itself)."""
    global _builtins_loaded
    if _builtins_loaded:
        return
    _builtins_loaded = True
    import pkgutil

    package = importlib.import_module(BUILTIN_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        if not module.name.startswith("_"):
            importlib.import_module(f"{BUILTIN_PACKAGE}.{module.name}")
    load_entry_point_passes()


def _load_as(origin: str, loader: Callable[[], Any]) -> list[str]:
    """Run `loader` with registrations attributed to `origin`; return the new pass names."""
    global _loading_origin
    load_builtin_passes()
    before = set(_REGISTRY)
    saved, _loading_origin = _loading_origin, origin
    try:
        loader()
    except GraphoptError:
        raise
    except Exception as err:
        raise BadInputError(f"{origin} failed to load: {type(err).__name__}: {err}") from err
    finally:
        _loading_origin = saved
    return sorted(set(_REGISTRY) - before)


def load_plugin_file(path: str | Path) -> list[str]:
    """Import a Python file that registers passes; returns the names it registered."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"plugin {path}: no such file")
    module_name = f"graphopt_plugin_{re.sub(r'[^0-9a-zA-Z_]', '_', path.stem)}"

    def load() -> None:
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise BadInputError(f"plugin {path}: not a Python file")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)

    return _load_as(f"plugin:{path}", load)


def load_entry_point_passes() -> list[str]:
    """Load every installed `graphopt.passes` entry point (each a module or a register function)."""
    from importlib.metadata import entry_points

    names: list[str] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        def load(ep: Any = ep) -> None:
            target = ep.load()
            if callable(target) and not inspect.ismodule(target):
                target()

        names += _load_as(f"entry-point:{ep.name}", load)
    return names


def unregister_pass(name: str) -> None:
    """Remove a pass (tests and interactive use)."""
    _REGISTRY.pop(name, None)
