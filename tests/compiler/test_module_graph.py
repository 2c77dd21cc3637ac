"""The compiler's modules import each other as a DAG: no cycles, not even lazy ones.

Every `from llama_swap.compiler...` import counts, wherever it stands (top level,
inside a function, under TYPE_CHECKING): an import hidden in a function to dodge
a cycle is still a cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

COMPILER = Path(__file__).resolve().parents[2] / "compiler"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in COMPILER.glob("*.py"):
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                parts = node.module.split(".")
                if parts[:2] == ["llama_swap", "compiler"]:
                    deps.update([parts[2]] if len(parts) > 2 else [a.name for a in node.names])
        graph[path.stem] = deps - {path.stem}
    return graph


def test_compiler_modules_form_a_dag() -> None:
    try:
        tuple(graphlib.TopologicalSorter(_graph()).static_order())
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle: {' -> '.join(exc.args[1])}") from None


def test_the_pipeline_does_not_know_the_session() -> None:
    assert "session" not in _graph()["pipeline"]
