"""The dependency direction of docs/developer.md, checked on the source's import statements.

Every package module and top-level module of ``dime_offline`` has an entry in :data:`ALLOWED`, and the
entries point one way, from the foundations up (each line may import only from lines above it, and
not all of those):

1. ``errors``, ``types``, ``config_docs``, ``allocator``; ``io``, ``devices``; ``config``
2. ``data``, ``nets``; ``converters``, ``envs``
3. ``agent``; ``regularizers`` (the agent's hook protocol and config only, never the concrete agent)
4. ``evaluation``, ``tracking`` (with ``trackers``), ``checkpoints``; ``policy``; ``export``, ``ope``
5. ``trainers`` (within it, what the stages share, ``loop``, ``resume`` and ``scaffold``, imports no stage)
6. ``compare``; ``sweep``

The CLI (``cli/``, installed as ``dime_offline_cli``) sits on top: the library never imports it, and
its own modules import each other without a cycle.
"""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "dime_offline"
CLI = PACKAGE.parent / "cli"

# Each layer may import only itself and the entries listed for it (plus third-party code); an entry
# "layer.module" allows that one module of a layer.
FOUNDATION = {"errors", "types", "io", "config", "devices", "allocator"}
ALLOWED: dict[str, set[str]] = {
    "errors": set(),
    "types": set(),
    "config_docs": set(),
    "allocator": set(),
    "io": {"errors"},
    "devices": {"errors"},
    "config": {"errors", "io"},
    "data": {"errors", "io", "config", "types"},
    "nets": set(),
    "converters": {"data", "errors", "io", "config"},
    "envs": {"data", "errors", "io", "config", "types"},
    "agent": {"nets", "data", *FOUNDATION},
    "regularizers": {"agent.regularization", "agent.config", "nets", "data", *FOUNDATION},
    "evaluation": {"envs", "types", "data", "errors"},
    "tracking": {"errors", "io", "config"},
    "checkpoints": {"agent", "nets", "data", *FOUNDATION},
    "policy": {"checkpoints", "agent", "nets", "data", *FOUNDATION},
    "export": {"__init__", "policy", "checkpoints", "agent", "nets", "data", *FOUNDATION},
    "ope": {"policy", "checkpoints", "agent", "nets", "data", *FOUNDATION},
    "trainers": {
        "checkpoints", "tracking", "evaluation", "regularizers", "agent", "nets", "data", "envs", *FOUNDATION,
    },
    "compare": {"trainers", "tracking", *FOUNDATION},
    "sweep": {"compare", "trainers", "tracking", "agent", *FOUNDATION},
    "__init__": {"policy"},
}
PART_OF = {"trackers": "tracking"}
"""Top-level modules that form one layer with another, like the modules of a subpackage (the
MLflow/W&B sinks build on the metric sinks, which open them lazily)."""
FORBIDDEN_EVERYWHERE = {"typer", "dime_offline_cli", "cli"}
TORCH_FREE = {"converters"}


def _imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module == "dime_offline" and node.level == 0:
            # from dime_offline import io: a module; from dime_offline import __version__: the package itself
            names.update(
                f"dime_offline.{alias.name}" if _is_package_module(alias.name) else "dime_offline.__init__"
                for alias in node.names
            )
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _is_package_module(name: str) -> bool:
    return (PACKAGE / f"{name}.py").is_file() or (PACKAGE / name).is_dir()


def _layer(path: Path) -> str:
    rel = path.relative_to(PACKAGE)
    name = rel.parts[0] if len(rel.parts) > 1 else rel.stem
    return PART_OF.get(name, name)


def _disallowed(imports: set[str], layer: str) -> set[str]:
    """The package modules among ``imports`` that neither their layer nor their own entry allows."""
    allowed = ALLOWED[layer] | {layer}
    bad = set()
    for module in imports:
        parts = module.split(".")
        if parts[0] != "dime_offline" or len(parts) == 1:
            continue
        if PART_OF.get(parts[1], parts[1]) not in allowed and ".".join(parts[1:3]) not in allowed:
            bad.add(".".join(parts[1:3]))
    return bad


SOURCES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_follow_the_layers(path: Path) -> None:
    rel = path.relative_to(PACKAGE)
    layer = _layer(path)
    imports = _imports(path)
    assert not {i.split(".")[0] for i in imports} & FORBIDDEN_EVERYWHERE, "the library never imports the CLI"
    if layer in TORCH_FREE:
        assert not any(i.split(".")[0] == "torch" for i in imports), f"{rel} must stay torch-free"
    assert layer in ALLOWED, f"{rel}: '{layer}' has no place in ALLOWED (add it where it belongs in the direction)"
    bad = _disallowed(imports, layer)
    assert not bad, f"{rel} imports {sorted(bad)}"


TRAINERS_SHARED = ("loop", "resume", "scaffold", "champion")
"""The trainers' modules every stage builds on: the loop, the resume state, a run's scaffolding and the
policy it deploys."""


@pytest.mark.parametrize("name", TRAINERS_SHARED)
def test_what_the_training_stages_share_imports_no_stage(name: str) -> None:
    """A stage is written against the run's scaffolding, never the other way round (one owner per run)."""
    trainers = {i.split(".")[2] for i in _imports(PACKAGE / "trainers" / f"{name}.py") if i.startswith("dime_offline.trainers.")}
    assert trainers <= set(TRAINERS_SHARED), f"trainers/{name}.py imports the stage modules {sorted(trainers - set(TRAINERS_SHARED))}"


def test_the_allowed_imports_point_one_way() -> None:
    """No two entries may import each other, directly or around a loop: the layers have a direction."""
    graph = {layer: {entry.split(".")[0] for entry in allowed} for layer, allowed in ALLOWED.items()}
    assert set().union(*graph.values()) <= set(graph), "every allowed entry is itself a layer"
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the loop


def _cli_imports(path: Path) -> set[str]:
    """The cli/ modules that ``path`` imports (relative or as dime_offline_cli.*), anywhere in the file."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or node.module == "dime_offline_cli"):
            if node.module and node.module != "dime_offline_cli":
                names.add(node.module.split(".")[-1])
            else:  # from . import train
                names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dime_offline_cli."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[1] for a in node.names if a.name.startswith("dime_offline_cli."))
    return names


def test_the_cli_has_no_import_cycle() -> None:
    graph = {path.stem: _cli_imports(path) - {path.stem} for path in sorted(CLI.glob("*.py"))}
    assert graph["common"] == set(), "cli/common.py is what the commands share: it imports none of them"
    graphlib.TopologicalSorter(graph).prepare()  # raises CycleError naming the loop
