"""The package layout is the architecture: imports flow one way, from the top layer down, with no cycles.

Read from the code's own `import` statements (module level and inside functions alike), so a lazy import that
climbs a layer fails here just as a top-level one does.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "rlcal"

# Lower number = lower layer. A module may import its own layer's modules and any lower layer, never a higher one.
LAYERS = {
    "common": 0,
    "core": 1,
    "data": 2,
    "world": 2,
    "evaluation": 3,
    "training": 4,
    "app": 5,  # rlcal/*.py at the top: cli, demo, the `rlcal.train` launcher
}
# Same-rank layers that must stay independent of each other (the world writes QA files; it needs no loader).
INDEPENDENT = {frozenset({"data", "world"})}


def _layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] in LAYERS:
        return parts[1]
    if len(parts) == 2 and parts[1] in LAYERS:  # the package itself (its __init__)
        return parts[1]
    return "app"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported rlcal module) for every import in the file, including those inside functions."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "rlcal"]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative import
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            if base.split(".")[0] != "rlcal":
                continue
            for alias in node.names:  # `from rlcal.core import metrics` imports the module rlcal.core.metrics
                candidate = f"{base}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*candidate.split("."))).with_suffix(".py").is_file()
                out.append((node.lineno, candidate if is_module else base))
    return out


MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_module_sits_in_a_known_layer():
    folders = {p.parent.name for p in MODULES if p.parent != PACKAGE}
    assert folders <= set(LAYERS), f"subpackages without a layer rank: {folders - set(LAYERS)}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_flow_downward(path: Path):
    here = _layer(_module_name(path))
    bad = []
    for line, target in _imports(path):
        there = _layer(target)
        if LAYERS[there] > LAYERS[here] or (there != here and frozenset({here, there}) in INDEPENDENT):
            bad.append(f"line {line}: {here} imports {target} ({there})")
    assert not bad, f"{path.relative_to(PACKAGE)} climbs the layers:\n" + "\n".join(bad)


def test_no_import_cycles():
    graph = {_module_name(p): {t for _, t in _imports(p)} for p in MODULES}
    graph = {m: {t for t in ts if t in graph and t != m} for m, ts in graph.items()}
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done

    def visit(node: str, stack: list[str]) -> list[str] | None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [node, nxt] if nxt in stack else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, stack + [node])):
                return cycle
        state[node] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module, [])):
            pytest.fail("import cycle: " + " -> ".join(cycle))


def test_the_checker_sees_a_climb(tmp_path: Path):
    """The rules above are only worth something if a climbing import is found; check on a made-up module."""
    fake = PACKAGE / "core" / "_layer_probe_tmp.py"
    fake.write_text("def f():\n    from rlcal.training import config\n", encoding="utf-8")
    try:
        assert [t for _, t in _imports(fake)] == ["rlcal.training.config"]
        assert LAYERS[_layer("rlcal.training.config")] > LAYERS[_layer(_module_name(fake))]
    finally:
        fake.unlink()
