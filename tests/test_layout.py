"""The house rules, checked on the source: `lvm/`'s top level holds the commands only; imports run one
way (`data_pipelines` → `lvm`, commands → library); no import cycles, lazy imports inside functions
included."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lvm", "data_pipelines")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def imports_of(path: Path, modules: dict[str, Path]) -> set[str]:
    """The repository's modules `path` imports, anywhere in the file (module level or inside functions).
    `from package import name` counts as importing `package.name` when that is a module, else `package`."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
                for alias in node.names
            ]
        else:
            continue
        found.update(name for name in names if name.split(".")[0] in PACKAGES)
    return found


def import_graph() -> dict[str, set[str]]:
    modules = all_modules()
    return {name: imports_of(path, modules) for name, path in modules.items()}


def command_modules() -> set[str]:
    return {module_name(p) for p in (ROOT / "lvm").glob("*.py") if p.name != "__init__.py"}


def test_the_top_level_of_lvm_holds_only_commands():
    for name in sorted(command_modules()):
        source = (ROOT / (name.replace(".", "/") + ".py")).read_text()
        assert "@hydra.main(" in source and 'if __name__ == "__main__":' in source, (
            f"{name} sits at lvm/'s top level but is not a `python -m {name}` command; move it into the "
            "subpackage of its concern"
        )


def test_lvm_never_imports_data_pipelines():
    offenders = {
        name: sorted(i for i in imported if i.startswith("data_pipelines"))
        for name, imported in import_graph().items()
        if name.startswith("lvm")
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_library_module_imports_a_command():
    commands = command_modules()
    offenders = {name: sorted(imported & commands) for name, imported in import_graph().items() if name not in commands}
    assert {name: found for name, found in offenders.items() if found} == {}


def test_no_import_cycles():
    graph = import_graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: finished
    cycles = []

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for target in sorted(graph.get(name, ())):
            if target == name or target not in graph:
                continue
            if state.get(target) == 1:
                cycles.append(path[path.index(target) :] + [target])
            elif target not in state:
                visit(target, path + [target])
        state[name] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []


def test_the_checks_see_real_imports():
    # Guards the walk itself: known edges are found, so an empty result above means something.
    graph = import_graph()
    assert "lvm.model.llama" in graph["lvm.training.lit_module"]
    assert "lvm.data.image_sentences" in graph["data_pipelines.build"]
    assert {"lvm.train", "lvm.demo", "lvm.app"} <= command_modules()
