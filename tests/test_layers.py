"""The dependency direction of docs/developer.md, checked on the source's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dime_offline"

# Each layer may import only itself and the modules listed for it (plus third-party code).
ALLOWED: dict[str, set[str]] = {
    "data": {"data", "errors", "io", "config", "types"},
    "converters": {"converters", "data", "errors", "io", "config"},
    "nets": {"nets"},
    "envs": {"envs", "data", "errors", "io", "config", "types"},
    "agent": {"agent", "nets", "types", "config", "errors", "data"},
    "regularizers": {"regularizers", "agent", "nets", "types", "config", "errors", "data"},
    "evaluation": {"evaluation", "envs", "types", "data", "errors"},
}
FORBIDDEN_EVERYWHERE = {"typer", "dime_offline_cli", "cli"}
TORCH_FREE = {"converters"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "dime_offline" and len(parts) > 1 else None


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    layer = rel.parts[0] if len(rel.parts) > 1 else None
    imports = _imports(path)
    assert not {i.split(".")[0] for i in imports} & FORBIDDEN_EVERYWHERE, "the library never imports the CLI"
    if layer in TORCH_FREE:
        assert not any(i.split(".")[0] == "torch" for i in imports), f"{rel} must stay torch-free"
    if layer in ALLOWED:
        used = {_layer_of(i) for i in imports} - {None}
        assert used <= ALLOWED[layer], f"{rel} imports {sorted(used - ALLOWED[layer])}"
