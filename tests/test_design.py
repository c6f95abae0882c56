"""The package's import structure (docs/design.md): imports flow down, with no cycle, also
counting the imports inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "coverhunter"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, known: set[str]) -> set[str]:
    """The package modules ``path`` imports anywhere (module level or inside functions)."""
    is_pkg = path.name == "__init__.py"
    base = name.split(".") if is_pkg else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                stem = base[: len(base) - (node.level - 1)]
                target = ".".join(stem + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            cands = [f"{target}.{a.name}" for a in node.names] + [target]
        elif isinstance(node, ast.Import):
            cands = [a.name for a in node.names]
        else:
            continue
        for c in cands:
            if c in known and c != name:
                out.add(c)
                break
    return out


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    known = set(files)
    return {name: _imports(p, name, known) for name, p in files.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_no_import_cycle_even_inside_functions():
    graph = import_graph()
    assert "coverhunter.rerank" in graph and "coverhunter.index.store" in graph
    assert _cycles(graph) == []


def test_a_planted_cycle_is_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_layers():
    graph = import_graph()
    # the index package never reaches up to the identify path built on it
    for name, deps in graph.items():
        if name.startswith("coverhunter.index"):
            assert "coverhunter.identification" not in deps, name
    # the re-ranking maths reads no files and loads neither torch nor the index
    assert not {d for d in graph["coverhunter.rerank"] if d.startswith("coverhunter.index")}
    text = (PKG / "rerank.py").read_text()
    assert "import torch" not in text
    # the corpus synthesiser is imported only by its commands
    users = {n for n, deps in graph.items() if any(d.startswith("coverhunter.corpus") for d in deps)}
    assert {u for u in users if not u.startswith("coverhunter.corpus")} <= {
        "coverhunter.cli",
        "coverhunter.demo",
    }


def test_design_doc_has_one_paragraph_per_module():
    """docs/design.md names every module in bold (``**`index/store`**``), and nothing else."""
    import re

    doc = (PKG.parents[1] / "docs" / "design.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\*\*`([a-z_/]+)`\*\*", doc, flags=re.M))
    modules = {p.relative_to(PKG).with_suffix("").as_posix() for p in PKG.rglob("*.py")}
    assert modules - documented == set(), "modules without a paragraph in docs/design.md"
    assert documented - modules == set(), "paragraphs in docs/design.md for modules that do not exist"
