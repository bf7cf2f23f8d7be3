"""The dependency direction of docs/developer.md, checked on the source's import statements."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dime_offline"

# Each layer may import only itself and the layers listed for it (plus third-party code); an entry
# "layer.module" allows that one module of a layer (the regularisers see the agent's hook protocol and
# config, never the concrete agent).
ALLOWED: dict[str, set[str]] = {
    "data": {"data", "errors", "io", "config", "types"},
    "converters": {"converters", "data", "errors", "io", "config"},
    "nets": {"nets"},
    "envs": {"envs", "data", "errors", "io", "config", "types"},
    "agent": {"agent", "nets", "types", "config", "errors", "data"},
    "regularizers": {"regularizers", "agent.regularization", "agent.config", "nets", "types", "config", "errors", "data"},
    "evaluation": {"evaluation", "envs", "types", "data", "errors"},
}
FORBIDDEN_EVERYWHERE = {"typer", "dime_offline_cli", "cli"}
TORCH_FREE = {"converters"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "dime_offline" and node.level == 0:
            names.update(f"dime_offline.{alias.name}" for alias in node.names)  # from dime_offline import io
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _disallowed(imports: set[str], allowed: set[str]) -> set[str]:
    """The package modules among ``imports`` that neither their layer nor their own entry allows."""
    bad = set()
    for module in imports:
        parts = module.split(".")
        if parts[0] != "dime_offline" or len(parts) == 1:
            continue
        if parts[1] not in allowed and ".".join(parts[1:3]) not in allowed:
            bad.add(".".join(parts[1:3]))
    return bad


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
        bad = _disallowed(imports, ALLOWED[layer])
        assert not bad, f"{rel} imports {sorted(bad)}"
