"""A run flows one way through the trainer: watcher -> job -> pipeline -> stages and gate, never back."""

from __future__ import annotations

import ast
from pathlib import Path

from trainer_samples import REPO

TRAINER = Path(REPO) / "trainer"


def _runtime_imports(path: Path) -> set[str]:
    """The trainer modules `path` imports when it runs (lazy imports included, `if TYPE_CHECKING:` not)."""
    tree = ast.parse(path.read_text())
    type_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                 and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"
                 for n in ast.walk(node)}
    found = set()
    for node in ast.walk(tree):
        if id(node) in type_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("trainer"):
            names = [node.module] if node.module != "trainer" else [f"trainer.{a.name}" for a in node.names]
            found.update(names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("trainer."))
    return found


def _graph() -> dict[str, set[str]]:
    return {f"trainer.{p.stem}": _runtime_imports(p) for p in TRAINER.glob("*.py")}


def test_the_trainer_has_no_import_cycle() -> None:
    graph = _graph()
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join([*path, module])
        if module in done:
            return
        for imported in graph.get(module, ()):
            visit(imported, (*path, module))
        done.add(module)

    for module in graph:
        visit(module, ())


def test_the_pipeline_does_not_call_back_into_the_job() -> None:
    graph = _graph()
    assert "trainer.pipeline" in graph["trainer.job"]
    for module in ("trainer.pipeline", "trainer.stages", "trainer.gate", "trainer.errors"):
        assert not graph[module] & {"trainer.job", "trainer.watcher", "trainer.cli"}, module
