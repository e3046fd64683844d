"""Data flows one way: search_spaces <- supernets, predictors <- nas; nothing imports experiments; no file-level
import cycles (a module-level or function-level import, absolute or relative, is an edge)."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"search_spaces", "supernets", "predictors", "nas", "experiments"}
ALLOWED = {
    "search_spaces": set(),
    "supernets": {"search_spaces"},
    "predictors": {"search_spaces"},
    "nas": {"search_spaces", "supernets", "predictors"},
}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_import_direction(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = imported_packages(path) - ALLOWED[package] - {package}
        assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_search_spaces_import_is_light():
    code = ("import sys, search_spaces; heavy = [m for m in ('torch', 'torch_geometric', 'ray', 'sklearn') "
            "if m in sys.modules]; print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


LAZY = re.compile(r"[a-z_]+(\.[a-z_0-9]+)+(:[A-Za-z_]\w*)?")
"""A string that names one of our modules (``"nas.qt_cli"``, ``"nas.latency_cli:add_latency_command"``): imported
by name later (``importlib``, lazy attribute tables), an import all the same."""


def import_graph() -> nx.DiGraph:
    """Module -> every module of ours it imports anywhere in the file (relative imports resolved), or names as a
    string to import later."""
    files = {module_name(p): p for pkg in ALLOWED for p in (ROOT / pkg).rglob("*.py")}

    def resolve(name: str) -> str | None:
        while name and name not in files:
            name = name.rpartition(".")[0]
        return name or None

    graph = nx.DiGraph()
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and LAZY.fullmatch(node.value):
                targets = [node.value.partition(":")[0]]  # a module imported by name (importlib, lazy tables)
                if targets[0] not in files:
                    continue
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module = ".".join([*base, *([node.module] if node.module else [])])
                targets = [module, *(f"{module}.{a.name}" for a in node.names)]
            else:
                continue
            for target in filter(None, map(resolve, targets)):
                if target != name and not name.startswith(target + "."):  # a module's own package is no cycle
                    graph.add_edge(name, target)
    return graph


def test_no_import_cycles_between_files():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert not cycles, f"import cycles: {cycles}"


def test_the_cycle_check_sees_relative_and_function_level_imports():
    graph = import_graph()
    assert graph.has_edge("nas.lpgnas", "nas.config_errors")  # absolute, module level
    assert graph.has_edge("supernets.supernet", "supernets.quant")  # relative: from .quant import ...
    assert graph.has_edge("nas.cli", "nas.kinds")  # inside a function
