"""Every package the source imports is declared in pyproject.toml.

Why: pydantic, tqdm, transformers, tokenizers and starlette were imported directly but arrived only through
other packages' requirements (fastapi, sentence-transformers); a release of one of those dropping or loosening
its own requirement would have broken an install of recgoat with nothing in our metadata saying why.
"""
from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
tomllib = pytest.importorskip("tomllib")  # Python 3.11+


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(project["dependencies"]) + [r for extra in project.get("optional-dependencies", {}).values()
                                            for r in extra]
    return {_norm(re.match(r"[A-Za-z0-9_.-]+", r).group(0)) for r in reqs}


def _imported_top_level(src: Path) -> set[str]:
    names: set[str] = set()
    for f in src.rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


def test_every_third_party_import_is_a_declared_dependency():
    third_party = _imported_top_level(ROOT / "src" / "recgoat") - set(sys.stdlib_module_names) - {"recgoat"}
    dists = packages_distributions()
    unknown = sorted(m for m in third_party if m not in dists)
    assert not unknown, f"imported but not installed: {unknown}"
    declared = _declared()
    missing = sorted(f"{m} ({', '.join(dists[m])})" for m in third_party
                     if not any(_norm(d) in declared for d in dists[m]))
    assert not missing, f"imported by src/recgoat but not declared in pyproject.toml: {missing}"


def test_the_check_sees_an_undeclared_import(tmp_path):
    """The scan finds imports in nested functions and `from x.y import z` forms (how transformers was imported)."""
    (tmp_path / "m.py").write_text("def f():\n    from transformers.utils import logging\n    import tqdm.auto\n")
    assert _imported_top_level(tmp_path) == {"transformers", "tqdm"}


def test_the_version_is_pyproject_s_and_the_cli_prints_it():
    """``recgoat.__version__`` (what ``recgoat --version`` prints, for bug reports) is the one pyproject.toml
    releases: the two are written by hand in two places."""
    import torch
    from typer.testing import CliRunner

    import recgoat
    from recgoat.cli import app

    assert recgoat.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    out = CliRunner().invoke(app, ["--version"])
    assert out.exit_code == 0 and out.stdout == f"recgoat {recgoat.__version__} (torch {torch.__version__}, " \
                                                f"Python {sys.version.split()[0]})\n"
