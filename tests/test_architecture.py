"""The package's shape, read from its source: imports go one way between stages, the store look-ups are a leaf,
`models:/NAME/VERSION` is built in one place, and no module grows past MAX_LINES.

Imports are read from the whole file, those inside functions included: a function-level import hides a cycle
from Python at import time, not from this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PACKAGE = REPO_ROOT / "sentiment_flow"
MAX_LINES = 300  # nanoGPT's largest file is ~340; past this a module holds more than one idea
# Modules every stage may use, which import no stage themselves.
LEAVES = {"config", "errors", "logs", "metrics", "plots", "store"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """The sentiment_flow modules `path` imports anywhere in it (a `from X import name` of a submodule counts as
    that submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name in MODULES}


def stage(module: str) -> str:
    """`scoring` for sentiment_flow.scoring.files: the top-level module or package a module belongs to."""
    return module.split(".")[1] if "." in module else module


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                other = stack.pop()
                component.append(other)
                if other == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def stage_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for module, path in MODULES.items():
        if module == "sentiment_flow":
            continue
        graph.setdefault(stage(module), set()).update(
            stage(other) for other in imported(path) if other != "sentiment_flow" and stage(other) != stage(module)
        )
    return graph


def test_the_cycle_finder_finds_a_cycle_and_accepts_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_import_reader_sees_imports_inside_functions():
    source = (PACKAGE / "int8" / "build.py").read_text()
    assert "\n    from sentiment_flow.scoring import load_scorer" in source  # inside optimize(), not at the top
    assert "sentiment_flow.scoring" in imported(PACKAGE / "int8" / "build.py")


def test_no_two_stages_import_each_other_even_through_others():
    graph = stage_graph()
    assert {"registry", "scoring", "training", "int8", "monitoring", "server", "cli"} <= set(graph)
    assert cycles(graph) == []


def test_within_a_stage_modules_import_one_way():
    # A submodule importing a sibling also runs the package's __init__, which may re-export it: those edges are
    # how packages work, not cycles; between the modules themselves there must be none.
    graph = {
        module: {other for other in imported(path) if not module.startswith(other + ".")}
        for module, path in MODULES.items()
    }
    assert cycles(graph) == []


def test_the_shared_modules_import_no_stage():
    graph = stage_graph()
    assert {leaf: graph.get(leaf, set()) - LEAVES for leaf in LEAVES} == dict.fromkeys(LEAVES, set())
    assert imported(PACKAGE / "store.py") <= {"sentiment_flow.config", "sentiment_flow.errors"}


def test_scoring_and_training_do_not_import_the_registry_commands():
    for module in MODULES:
        if stage(module) in ("scoring", "training", "monitoring"):
            assert not any(stage(other) == "registry" for other in imported(MODULES[module])), module


def test_the_int8_variant_imports_nothing_of_this_package():
    # MLflow runs the logged variant's copy of this file where sentiment-flow is not installed.
    assert imported(PACKAGE / "int8" / "model.py") == set()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_longer_than_max_lines(module):
    lines = len(MODULES[module].read_text().splitlines())
    assert lines <= MAX_LINES, f"{MODULES[module].relative_to(REPO_ROOT)} has {lines} lines: split it by what it owns"


def test_a_models_uri_of_name_and_version_is_built_only_by_store_models_uri():
    builders = [
        f"{path.relative_to(REPO_ROOT)}:{number}"
        for path in MODULES.values()
        if path.name != "store.py"
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "models:/{" in line and "}/{" in line.split("models:/{", 1)[1]
    ]
    assert builders == []
