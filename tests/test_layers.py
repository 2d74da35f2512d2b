"""Imports point down only: http -> service -> replicas -> batching -> model -> the shared
leaves. Walks every module's imports with ``ast`` (including those inside functions) and
fails on one that points up, naming both modules."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

GRE = Path(__file__).resolve().parent.parent / "gre"

#: Each module's layer, by its dotted name's prefix; the longest prefix wins. A module may
#: import only from its own layer or lower ones.
LAYERS: dict[str, int] = {
    # Shared leaves: plain values and process-wide facilities, no gre layer above them.
    "gre.messages": 0,
    "gre.config": 0,
    "gre.logs": 0,
    "gre.metrics": 0,
    "gre.notify": 0,
    "gre.model": 1,
    "gre.batching": 2,
    "gre.replicas": 3,
    "gre.service": 4,
    "gre.info": 4,
    "gre.offline": 4,
    "gre.bulk": 4,  # gre classify's rows and pipeline: over the service, under the CLI
    "gre.zoo": 4,  # gre fetch: reads gre.model's mean files; nothing above
    "gre.http": 5,
    "gre.spark": 5,  # Spark's UDF and job over the classifier; `gre spark` sits with the CLI
    "gre.spark.command": 6,
    "gre.spark.__main__": 6,
    "gre.cli": 6,
    "gre.testing": 6,
    "gre.__main__": 6,
    "gre": 0,  # the package itself: its version only
}

#: Modules that import nothing else from gre at all (the process boundary's vocabulary).
LEAVES = ("gre.messages",)


def layer(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(GRE.rglob("*.py")):
        parts = list(path.relative_to(GRE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def gre_imports(module: str, path: Path) -> list[tuple[int, str]]:
    """(line, imported gre module) for every import in ``path``."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from gre.x import y` may name a submodule y: count the deeper one.
            known = modules()
            for alias in node.names:
                name = f"{base}.{alias.name}"
                found.append((node.lineno, name if name in known else base))
    return [(line, name) for line, name in found if name == "gre" or name.startswith("gre.")]


MODULES = modules()


def test_every_layer_names_modules_that_exist() -> None:
    gone = [p for p in LAYERS if not any(m == p or m.startswith(p + ".") for m in MODULES)]
    assert not gone, f"LAYERS names modules that are gone: {gone}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down(module: str) -> None:
    upward = [
        f"{module}:{line} imports {target} (layer {layer(target)} > {layer(module)})"
        for line, target in gre_imports(module, MODULES[module])
        if layer(target) > layer(module)
    ]
    assert not upward, "\n".join(upward)


@pytest.mark.parametrize("module", LEAVES)
def test_the_boundary_messages_import_nothing_from_gre(module: str) -> None:
    assert gre_imports(module, MODULES[module]) == []


def test_the_walk_sees_an_upward_import(tmp_path: Path) -> None:
    """The check itself can fail: a model module importing the HTTP layer is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("from gre.http.app import create_app\n\ndef f():\n    import gre.service\n")
    imports = gre_imports("gre.model.bad", bad)
    assert [t for _, t in imports] == ["gre.http.app", "gre.service"]
    assert all(layer(t) > layer("gre.model.bad") for _, t in imports)


def test_the_http_layer_reaches_the_service_only_through_its_facade() -> None:
    """app.py and the server never touch the scheduler or the pool behind the service."""
    for path in (GRE / "http").glob("*.py"):
        text = path.read_text()
        for private in ("._scheduler", "._pool", "service.scheduler", "service.pool"):
            assert private not in text, f"{path.name} reaches into {private}"
