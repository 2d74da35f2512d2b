"""benchmarks/ never imports tests/: tests import from benchmarks, never the reverse, so the
benchmarks run without the test suite (and the tests' pytest-only helpers)."""

from __future__ import annotations

import ast
from pathlib import Path

from benchmarks.data import ROOT


def imports_of_tests(path: Path) -> list[str]:
    """``line: statement`` for each import of ``tests`` (or a module under it) in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name == "tests" or name.startswith("tests.") for name in names):
            found.append(f"{node.lineno}: {ast.unparse(node)}")
    return found


def test_benchmarks_do_not_import_tests() -> None:
    sources = sorted((ROOT / "benchmarks").rglob("*.py"))
    assert len(sources) > 20  # the walk found the package
    offenders = {
        str(path.relative_to(ROOT)): lines for path in sources if (lines := imports_of_tests(path))
    }
    assert offenders == {}


def test_the_check_sees_every_form_of_import(tmp_path: Path) -> None:
    source = tmp_path / "example.py"
    source.write_text(
        "import os, tests.support\nfrom tests import zoo\nfrom tests.zoo import x\n"
        "from . import tests\nimport testsuite\n"
        "def f() -> None:\n    import tests\n"
    )
    assert imports_of_tests(source) == [
        "1: import os, tests.support",
        "2: from tests import zoo",
        "3: from tests.zoo import x",
        "7: import tests",
    ]
