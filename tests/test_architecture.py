"""Data flows one way: search_spaces <- supernets, predictors <- nas; nothing imports experiments."""

import ast
import subprocess
import sys
from pathlib import Path

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
