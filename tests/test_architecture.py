"""The import directions the layout promises, checked on the source (an AST walk, every import
statement, function-level ones included), so a shortcut across layers fails a test.

    models/          imports only torch (and the standard library)
    data_contracts/  imports nothing from tasks/ or flows/
    tasks/           never imports prefect or flows/, nor rich/typer (rendering lives in flows/)
    tasks/train      never imports tasks/evaluate
    plumbing         (lake, imaging, sources, catalog, inference, report, runtime, batching) imports
                     no stage (ingest, pairs, train, evaluate, enhance, kinds)
    stages           import no other stage but the kind registry (`tasks.kinds`); the kind
                     plugins in tasks/kinds are the one place that wires stages together
and no module in tasks/ is over 400 lines.
"""

from __future__ import annotations

import ast
import os
import sys
from pathlib import Path

import pytest

import catalog_enhance

PACKAGE = Path(catalog_enhance.__path__[0])
PLUMBING = {"lake", "imaging", "sources", "catalog", "inference", "report", "runtime", "batching"}
STAGES = {"ingest", "pairs", "train", "evaluate", "enhance", "kinds"}
MAX_TASK_MODULE_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool = False) -> set[str]:
    """Every module an import statement of `source` names (relative imports resolved)."""
    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: len(module.split(".")) - node.level + int(is_package)]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module or "")
    return names


def source_modules() -> dict[str, tuple[Path, set[str]]]:
    modules = {}
    for folder, _, files in os.walk(PACKAGE, followlinks=True):
        for file in files:
            if file.endswith(".py"):
                path = Path(folder) / file
                name = module_name(path)
                modules[name] = (path, imports_of(path.read_text(), name, file == "__init__.py"))
    return modules


MODULES = source_modules()


def top(name: str) -> str:
    return name.split(".")[0]


def layer(name: str) -> str | None:
    """`tasks.<part>` of a catalog_enhance.tasks module, else the sub-package (models, flows, ...)."""
    parts = name.split(".")
    if parts[0] != "catalog_enhance" or len(parts) < 2:
        return None
    return f"tasks.{parts[2]}" if parts[1] == "tasks" and len(parts) > 2 else parts[1]


def violations(rule) -> list[str]:
    return sorted(f"{module} imports {target}" for module, (_, targets) in MODULES.items()
                  for target in targets if rule(module, target))


def test_the_walk_sees_relative_and_function_level_imports():
    source = "from . import registry\nfrom ..tasks.lake import storage\ndef f():\n    import prefect\n"
    assert imports_of(source, "catalog_enhance.models.x") == {"catalog_enhance.models", "catalog_enhance.tasks.lake",
                                                              "prefect"}
    assert len(MODULES) > 80 and "catalog_enhance.tasks.kinds.sr" in MODULES


def test_models_import_only_torch():
    allowed = set(sys.stdlib_module_names) | {"torch"}
    assert violations(lambda m, t: layer(m) == "models" and layer(t) != "models" and top(t) not in allowed) == []


def test_data_contracts_import_nothing_from_tasks_or_flows():
    assert violations(lambda m, t: layer(m) == "data_contracts" and (layer(t) or "").startswith(("tasks", "flows"))) == []


def test_the_core_never_imports_prefect_the_flows_or_rendering():
    outside = {"prefect", "prefect_dask", "typer", "rich"}
    assert violations(lambda m, t: (layer(m) or "").startswith("tasks")
                      and (top(t) in outside or layer(t) == "flows")) == []


def test_training_never_imports_evaluation():
    assert violations(lambda m, t: layer(m) == "tasks.train" and layer(t) == "tasks.evaluate") == []


def test_plumbing_imports_no_stage():
    assert violations(lambda m, t: (layer(m) or "").removeprefix("tasks.") in PLUMBING and (layer(m) or "").startswith("tasks")
                      and (layer(t) or "").removeprefix("tasks.") in STAGES and (layer(t) or "").startswith("tasks")) == []


def test_stages_import_no_other_stage_but_the_kind_registry():
    def crosses(m: str, t: str) -> bool:
        mine, theirs = layer(m) or "", layer(t) or ""
        if not (mine.startswith("tasks.") and theirs.startswith("tasks.")) or mine == theirs:
            return False
        if mine == "tasks.kinds":  # the plugins wire trainers, evaluators and reports together
            return False
        return mine.removeprefix("tasks.") in STAGES and theirs.removeprefix("tasks.") in STAGES \
            and t != "catalog_enhance.tasks.kinds"
    assert violations(crosses) == []


@pytest.mark.parametrize("name", sorted(m for m in MODULES if (layer(m) or "").startswith("tasks")))
def test_no_module_in_tasks_is_over_400_lines(name):
    lines = len(MODULES[name][0].read_text().splitlines())
    assert lines <= MAX_TASK_MODULE_LINES, f"{name}: {lines} lines"
