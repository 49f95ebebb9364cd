"""The package's layers (README, Development): no module imports from a layer below it."""

from __future__ import annotations

import ast
from pathlib import Path

import mtst

LAYERS = [
    ("errors", "constants", "version", "demo", "texts", "extras"),
    ("config",),
    ("fileio",),
    ("standins",),
    ("modeling",),
    ("data", "evaluate", "report"),
    ("training",),
    ("export",),  # the applications: exports (and their runtime), then what serves and compares, then the CLI
    ("serve", "compare"),
    ("cli",),
]
ROOT = Path(mtst.__file__).parent


def layer(module: str) -> int:
    name = module.removeprefix("mtst.")
    matches = [
        (len(prefix), i)
        for i, group in enumerate(LAYERS)
        for prefix in group
        if name == prefix or name.startswith(prefix + ".")
    ]
    return max(matches)[1] if matches else len(LAYERS)  # the applications sit on top


def runtime_imports(tree: ast.Module) -> list[str]:
    """``from mtst... import`` at module level or in functions, not under ``if TYPE_CHECKING``."""
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for n in ast.walk(node)
    }
    return [
        n.module
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and n.module and n.module.startswith("mtst.") and id(n) not in skipped
    ]


def test_no_module_imports_from_a_lower_layer() -> None:
    bad = []
    for path in ROOT.rglob("*.py"):
        module = "mtst." + ".".join(path.relative_to(ROOT).with_suffix("").parts)
        module = module.removesuffix(".__init__")
        for target in runtime_imports(ast.parse(path.read_text(encoding="utf-8"))):
            if layer(target) > layer(module):
                bad.append(f"{module} imports {target}")
    assert not bad, bad


def test_config_and_the_strategy_registry_import_no_torch() -> None:
    """Reading a config and naming strategies (CLI help, validation, ``mtst compare``'s options) stays
    light: neither pulls in torch."""
    import subprocess
    import sys

    code = "import sys, mtst.config, mtst.training.planning.strategies; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def module_imports(type_only: bool = True) -> dict[str, set[str]]:
    """Every mtst module and the mtst modules it imports (with ``type_only``, those under TYPE_CHECKING too)."""
    out: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        module = ("mtst." + ".".join(path.relative_to(ROOT).with_suffix("").parts)).removesuffix(".__init__")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if type_only:
            found = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
        else:
            found = set(runtime_imports(tree))
        out[module] = {m for m in found if m.startswith("mtst.")}
    return out


def cycles(graph: dict[str, set[str]], members: set[str]) -> list[list[str]]:
    """Import circles among ``members`` (depth-first search; each circle reported once, from a member)."""
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt not in members:
                continue
            if state.get(nxt) == 1:
                found.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(members):
        if node not in state:
            visit(node, [node])
    return found


APPLICATIONS = ("cli", "compare", "serve", "export")


def test_no_import_circle_anywhere() -> None:
    """Type-only imports count: a circle there still ties the modules' meaning together."""
    graph = module_imports(type_only=True)
    assert cycles(graph, set(graph)) == []


# Inside training, in order of dependence: what a run will do, the runtime pieces, the records the stages
# share, the stages, the loop and the end of a run, the driver.
TRAINING_LAYERS = [("planning",), ("runtime",), ("inputs", "state", "result"), ("stages",), ("loop", "finish")]


def training_layer(module: str) -> int:
    part = module.removeprefix("mtst.training.").split(".")[0]
    return next((i for i, group in enumerate(TRAINING_LAYERS) if part in group), len(TRAINING_LAYERS))


def test_training_modules_import_only_what_comes_before_them() -> None:
    bad = []
    for module, targets in module_imports(type_only=True).items():
        if not module.startswith("mtst.training."):
            continue
        for target in targets:
            if target.startswith("mtst.training.") and training_layer(target) > training_layer(module):
                bad.append(f"{module} imports {target}")
    assert not bad, bad
    assert training_layer("mtst.training.trainer") == len(TRAINING_LAYERS)  # the driver comes last


def test_the_applications_do_not_import_each_other() -> None:
    graph = module_imports(type_only=True)
    apps = {m for m in graph if m.removeprefix("mtst.").split(".")[0] in APPLICATIONS}
    across = [
        f"{m} imports {t}" for m in apps for t in graph[m] if {m.split(".")[1], t.split(".")[1]} == {"serve", "compare"}
    ]
    assert not across, across


MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60


def test_modules_and_functions_stay_short() -> None:
    """A module past 450 lines, or a function past 60, is a sign to split (the stand-ins included)."""
    long = []
    for path in ROOT.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        if len(text.splitlines()) > MAX_MODULE_LINES:
            long.append(f"{path.relative_to(ROOT)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if size > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}: {node.name} is {size} lines")
    assert not long, long
