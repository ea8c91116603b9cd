"""The package's imports follow its layers, and no modules import each other around a loop.

Every `import` of `acai_omr` is read from the source (inside functions too, where a reach upward
hides from a plain import-time check). The layers, bottom up:

    config, paths                      (settings, anyone may read them)
    lmx, metrics, render               (tokens <-> MusicXML, scores, MuseScore)
    model, detect                      (the network; page -> boxes, barlines)
    data                               (corpora -> rendered, degraded, preprocessed systems)
    inference                          (systems -> tokens -> MusicXML, jobs)
    train, web                         (the phases; the Flask app)
    cli, wsgi, the package itself      (entry points)

A module may import its own layer and the ones below; not above.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from acai_omr.paths import REPO_ROOT

PACKAGE = REPO_ROOT / "acai_omr"
LAYERS = [("config", "paths"), ("lmx", "metrics", "render"), ("model", "detect"), ("data",), ("inference",),
          ("train", "web"), ("cli", "wsgi", "")]
LAYER_OF = {name: level for level, names in enumerate(LAYERS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports_of(module: str) -> set[str]:
    """The package modules `module` imports anywhere in its source (a `from pkg import sub` counts as sub)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            submodules = [f"{source}.{alias.name}" for alias in node.names if f"{source}.{alias.name}" in MODULES]
            names = submodules if len(submodules) == len(node.names) else [source, *submodules]
        else:
            continue
        for name in names:
            if not name.startswith("acai_omr"):
                continue
            while name not in MODULES and "." in name:
                name = name.rsplit(".", 1)[0]
            if name != module:
                found.add(name)
    return found


def layer(module: str) -> int:
    parts = module.split(".")
    return LAYER_OF[parts[1] if len(parts) > 1 else ""]


GRAPH = {module: imports_of(module) for module in MODULES}


def test_every_subpackage_has_a_layer():
    assert {module.split(".")[1] for module in MODULES if "." in module} <= set(LAYER_OF)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    upward = sorted(target for target in GRAPH[module] if layer(target) > layer(module))
    assert not upward, f"{module} (layer {layer(module)}) imports from above: {upward}"


def test_no_modules_import_each_other_around_a_loop():
    state: dict[str, int] = {}
    loops: list[list[str]] = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        path.append(module)
        for target in sorted(GRAPH[module]):
            if target == "acai_omr":
                continue  # the package's own __init__ re-exports; importing it is importing its parts
            if state.get(target) == 1:
                loops.append(path[path.index(target):] + [target])
            elif target not in state:
                visit(target, path)
        path.pop()
        state[module] = 2

    for module in sorted(MODULES):
        if module not in state:
            visit(module, [])
    assert not loops, "\n".join(" -> ".join(loop) for loop in loops)


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path, monkeypatch):
    """The check must be able to fail: an import hidden in a function body is still an edge."""
    source = "def late():\n    from acai_omr.train.common import load_checkpoint\n"
    monkeypatch.setitem(MODULES, "acai_omr.model.weights", tmp_path / "weights.py")
    (tmp_path / "weights.py").write_text(source)
    assert "acai_omr.train.common" in imports_of("acai_omr.model.weights")
