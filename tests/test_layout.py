"""The package's shape: no import cycle, modules of a readable size, no test doubles in production code."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "repro"
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(name: str) -> set[str]:
    """The package modules ``name`` imports anywhere in its file (a lazy import inside a function counts too)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for n in ast.walk(block)}        # `if TYPE_CHECKING:` imports are for type checkers, not at runtime
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "repro"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "repro":
                continue
            # `from pkg import sub` imports the submodule; `from pkg import name` the package's namespace
            subs = [f"{target}.{a.name}" for a in node.names if f"{target}.{a.name}" in MODULES]
            out |= set(subs) if len(subs) == len(node.names) else {target, *subs}
    return {m for m in out if m in MODULES and m != name}


GRAPH = {name: imports_of(name) for name in MODULES}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a list of modules, first = last), or None."""
    state: dict[str, int] = {}          # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_known_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_import_graph_is_read_correctly():
    assert "repro.experiments.approaches" in GRAPH["repro.experiments.transfer"]
    assert "repro.method.priors" in GRAPH["repro.experiments.transfer"]
    assert "repro.data" in GRAPH["repro.experiments.transfer"]                  # `from .. import data`
    assert "repro.experiments.grid" in GRAPH["repro.retime"]                      # a lazy import counts


def test_the_package_has_no_import_cycle():
    assert find_cycle(GRAPH) is None, f"import cycle: {' -> '.join(find_cycle(GRAPH))}"


@pytest.mark.parametrize("name", sorted(MODULES))
def test_every_module_is_of_a_readable_size(name):
    assert len(MODULES[name].read_text().splitlines()) <= MAX_LINES, f"{name} is over {MAX_LINES} lines: split it"


def test_production_code_has_no_test_doubles():
    offenders = [n for n, p in MODULES.items() if "unittest" in p.read_text() or "monkeypatch" in p.read_text()]
    assert not offenders


def test_every_package_says_what_it_holds():
    for name, path in MODULES.items():
        assert ast.get_docstring(ast.parse(path.read_text())), f"{name} has no docstring"


def reachable(name: str) -> set[str]:
    """Every package module ``name`` imports, directly or through others."""
    seen, todo = set(), [name]
    while todo:
        for nxt in GRAPH[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


# the modules a notebook reads results through, and those that make runs (the workers, and the re-time benchmark)
READERS = ("repro.experiments.studies", "repro.experiments.costs", "repro.findings", "repro.report", "repro.plots")
MAKERS = {"repro.experiments.workers"}


def test_reading_results_cannot_reach_the_code_that_makes_runs():
    """Planning and reading import no module that runs a grid: only the workers (and what starts them) do."""
    for name in READERS:
        assert not reachable(name) & MAKERS, f"{name} reaches {reachable(name) & MAKERS}"
    assert {n for n in GRAPH if MAKERS & GRAPH[n]} <= {"repro.studies", "repro.retime", "repro.reproduce"}
