"""The house rules of ARCHITECTURE.md, checked on the code: one-way layers, no import circles,
and a device path (``glucotwin run``) that loads no simulator, pandas, Dask or matplotlib."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sensors", "firmware_bridge", "twin", "controller", "sim")

# Who may import whom (first-party only). A layer is a package, or a subpackage named here;
# the most specific layer of a module applies.
ALLOWED = {
    "sensors": set(),
    "firmware_bridge": set(),
    "twin": set(),
    "controller": {"twin"},
    "controller.loop": {"controller", "twin", "sensors", "firmware_bridge"},
    "sim": {"controller", "controller.loop", "twin", "sensors", "firmware_bridge"},
}
HEAVY = ("simglucose", "pandas", "dask", "distributed", "matplotlib", "gym")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    return "controller.loop" if module.startswith("controller.loop") else module.split(".")[0]


def _imports(module: str, path: Path, top_level_only: bool) -> set[str]:
    """First-party modules named by the imports of one file (relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    if top_level_only:  # module level, including under `if`/`try` blocks, but not inside functions
        nodes = [n for stmt in tree.body for n in ast.walk(stmt)
                 if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]
        nodes += [n for stmt in tree.body if isinstance(stmt, ast.ClassDef) for n in stmt.body
                  if isinstance(n, (ast.Import, ast.ImportFrom))]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                names.add(sub if sub in MODULES else base)
    return {n for n in names if n.split(".")[0] in PACKAGES and n != module}


def test_every_import_goes_down_the_layers():
    wrong = []
    for module, path in MODULES.items():
        layer = _layer(module)
        for target in _imports(module, path, top_level_only=False):
            other = _layer(target)
            if other != layer and other not in ALLOWED[layer]:
                wrong.append(f"{module} imports {target} ({layer} may import {sorted(ALLOWED[layer]) or 'nothing'})")
    assert not wrong, "\n".join(wrong)


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_between_modules():
    """Imports form no circle, counting those inside functions too: a late import that dodges a
    circle is still one (a package's ``__init__`` re-exporting its own modules is an edge from the
    package to them, never back)."""
    graph = {m: {t for t in _imports(m, p, top_level_only=False) if t in MODULES} for m, p in MODULES.items()}
    for m in graph:  # a module importing its own package's __init__ is a re-export, not a dependency
        graph[m] = {t for t in graph[m] if not m.startswith(t + ".")}
    assert _cycles(graph) == []


@pytest.mark.parametrize("module", ["controller.loop.live", "sim.cli"])
def test_the_device_path_loads_no_simulator_pandas_dask_or_matplotlib(module):
    """Everything ``glucotwin run`` can import on a Pi: the CLI's parser with every subcommand
    registered, the loop's composition root, and every module of the device loop, sensors and pump."""
    device = [m for m in MODULES if m.split(".")[0] in ("sensors", "firmware_bridge", "twin")
              or m.startswith("controller") and "__main__" not in m]
    code = ("import importlib, sys\n"
            f"import {module}\n"
            "from sim.cli import build_parser\n"
            "build_parser()\n"
            "import sim.cli.run\n"
            f"for m in {device!r}: importlib.import_module(m)\n"
            f"heavy = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r})\n"
            "print(len(sys.modules), ','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    count, _, heavy = out.stdout.strip().partition(" ")
    assert int(count) > 50 and heavy == "", out.stdout  # it did import the loop, and nothing heavy


@pytest.mark.parametrize("old, new, name", [("sim.metrics", "sim.trial.metrics", "glucose_metrics"),
                                            ("controller.runtime", "controller.loop.runtime", "ClosedLoop"),
                                            ("sim.live", "controller.loop.live", "run_live")])
def test_an_old_module_path_still_imports_the_same_module_with_a_warning(old, new, name):
    code = ("import importlib, sys, warnings\n"
            "warnings.simplefilter('always')\n"
            "import controller\n"
            "with warnings.catch_warnings(record=True) as caught:\n"
            f"    old = importlib.import_module({old!r})\n"
            f"new = importlib.import_module({new!r})\n"
            f"print(old is new, getattr(old, {name!r}) is getattr(new, {name!r}), "
            "[str(w.message) for w in caught if w.category is DeprecationWarning])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.startswith("True True ["), out.stdout
    assert f"{old} moved to {new}" in out.stdout


def test_the_public_names_of_sim_and_the_console_script_are_where_they_were():
    import sim
    from sim.cli import main
    from sim.trial.controllers import SimglucoseController

    assert sim.SimglucoseController is SimglucoseController and callable(main)


SIM_FLOORS = {"sim.engine": 1, "sim.trial": 2, "sim.hil": 3, "sim.population": 3, "sim.forecast": 3,
              "sim.bench": 4, "sim.report": 4, "sim.cli": 5}


def test_inside_sim_the_subpackages_build_on_the_trial_harness_and_the_cli_sits_on_top():
    """ARCHITECTURE.md: engine, then trial, then HIL / populations / forecasts, then bench and
    reports, then the CLI; an import never climbs to a higher floor of ``sim``."""
    def floor(module: str) -> int | None:
        return SIM_FLOORS.get(".".join(module.split(".")[:2]))

    wrong = [f"{m} imports {t}" for m, p in MODULES.items() if floor(m) is not None
             for t in _imports(m, p, top_level_only=False) if floor(t) is not None and floor(t) > floor(m)]
    assert not wrong, "\n".join(wrong)
