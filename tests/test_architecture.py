"""The shape of the package, as the README's design section describes it: the example's tooling
apart from the core, the job contract's owners, small functions."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "abflow"
MAX_FUNCTION_LINES = 60


def _modules(*skip: str) -> list[Path]:
    return sorted(
        p for p in PACKAGE.rglob("*.py") if not any(p.is_relative_to(PACKAGE / s) for s in skip)
    )


def _imported(path: Path) -> set[str]:
    """Every module ``path`` imports, at its top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
    return names


def test_the_core_never_imports_the_example_tooling() -> None:
    offenders = {
        str(p.relative_to(ROOT)): sorted(n for n in _imported(p) if n.startswith("abflow.example"))
        for p in _modules("example")
    }
    assert {p: n for p, n in offenders.items() if n} == {}
    workflow = [*ROOT.glob("workflow/**/*.smk"), *ROOT.glob("workflow/**/*.py"), ROOT / "Snakefile"]
    assert [str(p) for p in workflow if "abflow.example" in p.read_text()] == []


def test_the_example_commands_reach_the_command_line_through_the_entry_point() -> None:
    from importlib.metadata import entry_points

    from abflow.cli import build_parser

    loaded = {e.name: e.value for e in entry_points(group="abflow.commands")}
    assert loaded.get("example") == "abflow.example.cli:register"
    commands = build_parser()._subparsers._group_actions[0].choices  # type: ignore[union-attr]
    assert {"example", "process-ab", "process-qc", "check", "createjob"} <= set(commands)


def test_no_function_is_longer_than_sixty_lines() -> None:
    long = []
    for path in [*_modules(), *ROOT.glob("workflow/scripts/*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1  # type: ignore[operator]
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines})")
    assert long == []


def test_only_the_state_layout_joins_paths_below_the_state_directory() -> None:
    """abflow.state.layout owns where everything is stored; the others ask it."""
    joins = re.compile(r"join\([^)]*state_dir[^)]*,\s*[\"']")
    offenders = [
        f"{p.relative_to(ROOT)}:{i}"
        for p in _modules()
        if p != PACKAGE / "state" / "layout.py"
        for i, line in enumerate(p.read_text().splitlines(), start=1)
        if joins.search(line)
    ]
    assert offenders == []


# The layers of the package, lowest first: a module may import its own layer and those below.
LAYERS = {"state": 0, "upstream": 0, "model": 1, "job": 2, "views": 3, "run": 4, "cli": 5,
          "example": 6}  # fmt: skip


def test_imports_go_one_way_through_the_layers() -> None:
    """state and upstream <- model <- job <- views <- run <- cli, and example uses them (the
    README's Design section): every import, at the top or inside a function."""
    upward = []
    for path in _modules():
        parts = path.relative_to(PACKAGE).parts
        if len(parts) == 1:
            continue
        for name in _imported(path):
            layer = name.split(".")[1] if name.startswith("abflow.") else ""
            if LAYERS.get(layer, -1) > LAYERS[parts[0]]:
                upward.append(f"{path.relative_to(ROOT)} imports {name}")
    assert sorted(set(upward)) == []
    assert set(LAYERS) == {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()}
