"""Each config field's documentation and default, read from the dataclass's source.

Every config dataclass documents a field with the string literal right under it. Reading those
strings (and the defaults) from the source, rather than copying them into a table, means ``--help``
and ``dime-offline config show`` can never drift from the code. :class:`ConfigSource` reads a file
without importing it, so the command table stays free of torch.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class FieldSource:
    """One field as written in its class body."""

    default: Any
    """The default's value when it is a literal (or a module-level literal constant), else
    :data:`NOT_LITERAL` (a ``default_factory``, a call)."""
    doc: str
    """The field's docstring, dedented ("" when the field has none)."""


NOT_LITERAL = object()
"""The default of a field whose default is computed (``field(default_factory=...)``, a call)."""


def class_fields(source: str, class_name: str) -> dict[str, FieldSource]:
    """The annotated fields of class ``class_name`` in ``source``, in dataclass order: those of its
    bases first (a base defined in ``source``, or imported from a ``dime_offline`` module and read
    from that module's file), then its own; a field declared again keeps its base's place, as in a
    dataclass."""
    tree = _parsed(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            fields: dict[str, FieldSource] = {}
            for base in node.bases:
                fields.update(_base_fields(tree, source, base))
            fields.update(_fields(node, _module_constants(tree)))
            return fields
    raise LookupError(f"class {class_name} not found")


@functools.lru_cache(maxsize=32)
def _parsed(source: str) -> ast.Module:
    """``source``'s syntax tree, parsed once per process: the command table reads several classes
    (and their shared bases) from the same files, and every parse costs start-up time."""
    return ast.parse(source)


def _base_fields(tree: ast.Module, source: str, base: ast.expr) -> dict[str, FieldSource]:
    """The fields of base class ``base`` of a class in ``tree`` (none for a base from outside
    ``dime_offline``, such as ``Protocol``)."""
    if not isinstance(base, ast.Name):
        return {}
    if any(isinstance(node, ast.ClassDef) and node.name == base.id for node in tree.body):
        return class_fields(source, base.id)
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and node.module.startswith("dime_offline."):
            for alias in node.names:
                if (alias.asname or alias.name) == base.id:
                    module = PACKAGE_DIR.joinpath(*node.module.split(".")[1:])
                    path = module / "__init__.py" if module.is_dir() else module.with_suffix(".py")
                    return class_fields(path.read_text(encoding="utf-8"), alias.name)
    return {}


def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of dataclass ``cls``, by field name (inherited fields' included)."""
    fields = class_fields(inspect.getsource(sys.modules[cls.__module__]), cls.__name__)
    return {f.name: fields[f.name].doc if f.name in fields else "" for f in dataclasses.fields(cls)}


class ConfigSource:
    """A config dataclass named by its file under ``dime_offline/``, read without importing it."""

    def __init__(self, path: str, class_name: str) -> None:
        self.path = PACKAGE_DIR / path
        self.class_name = class_name

    @functools.cached_property
    def fields(self) -> dict[str, FieldSource]:
        return class_fields(self.path.read_text(encoding="utf-8"), self.class_name)

    def help(self, field: str, text: str) -> str:
        """The help of a CLI option whose own default is None (not given): ``text`` with the field's
        literal, non-None default appended as ``(default: ...)`` (rich help reads brackets as markup)."""
        default = self.fields[field].default
        if default is NOT_LITERAL or default is None:
            return text
        shown = default if isinstance(default, str) else json.dumps(default)
        return f"{text} (default: {shown})"


def _module_constants(tree: ast.Module) -> dict[str, Any]:
    constants: dict[str, Any] = {}
    for node in tree.body:
        target = node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else getattr(node, "target", None)
        if isinstance(target, ast.Name) and isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
            value = _literal(node.value, {})
            if value is not NOT_LITERAL:
                constants[target.id] = value
    return constants


def _literal(node: ast.expr, constants: dict[str, Any]) -> Any:
    if isinstance(node, ast.Name) and node.id in constants:
        return constants[node.id]
    try:
        return ast.literal_eval(node)
    except ValueError:
        return NOT_LITERAL


def _fields(cls: ast.ClassDef, constants: dict[str, Any]) -> dict[str, FieldSource]:
    fields: dict[str, FieldSource] = {}
    body = cls.body
    for stmt, following in zip(body, [*body[1:], None]):
        if not (isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)):
            continue
        doc = ""
        if (isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)
                and isinstance(following.value.value, str)):
            doc = inspect.cleandoc(following.value.value)
        default = NOT_LITERAL if stmt.value is None else _literal(stmt.value, constants)
        fields[stmt.target.id] = FieldSource(default=default, doc=doc)
    return fields


def documented_yaml(cfg: Any, sections: dict[str, Any] | None = None, *, title: str = "") -> str:
    """``cfg`` (a config dataclass) as YAML with each field's documentation as comments above it;
    a valid ``--config`` file. ``sections`` replace the named fields with a nested dataclass shown
    field by field (the resolved agent config in place of its override dict)."""
    lines = [f"# {line}" if line else "#" for line in title.splitlines()]
    _emit(cfg, sections or {}, lines, indent="")
    return "\n".join(lines) + "\n"


def _shown_fields(cfg: Any) -> list[dataclasses.Field[Any]]:
    """``cfg``'s fields in the order ``config show`` lists them: the class's own first, then each
    base's (a command's data and budget lead, the run settings it shares with others follow)."""
    classes = type(cfg).__mro__
    introduced = {name: depth for depth, klass in enumerate(classes) for name in inspect.get_annotations(klass)}
    return sorted(dataclasses.fields(cfg), key=lambda f: introduced[f.name])


def _emit(cfg: Any, sections: dict[str, Any], lines: list[str], indent: str) -> None:
    docs = field_docs(type(cfg))
    for f in _shown_fields(cfg):
        value = sections.get(f.name, getattr(cfg, f.name))
        if lines and not indent:
            lines.append("")
        lines.extend(f"{indent}# {line}".rstrip() for line in docs[f.name].splitlines())
        if dataclasses.is_dataclass(value):
            lines.append(f"{indent}{f.name}:")
            _emit(value, {}, lines, indent + "  ")
        else:
            lines.append(f"{indent}{f.name}: {json.dumps(value)}")


def documented_dict(cfg: Any, sections: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"config": values, "docs": {"dotted.field": doc}}`` of ``cfg`` (``sections`` as in
    :func:`documented_yaml`): the JSON form of ``config show``."""
    values: dict[str, Any] = {}
    docs: dict[str, str] = {}
    _collect(cfg, sections or {}, values, docs, prefix="")
    return {"config": values, "docs": docs}


def _collect(cfg: Any, sections: dict[str, Any], values: dict[str, Any], docs: dict[str, str], prefix: str) -> None:
    field_doc = field_docs(type(cfg))
    for f in _shown_fields(cfg):
        value = sections.get(f.name, getattr(cfg, f.name))
        docs[prefix + f.name] = field_doc[f.name]
        if dataclasses.is_dataclass(value):
            values[f.name] = {}
            _collect(value, {}, values[f.name], docs, prefix + f.name + ".")
        else:
            values[f.name] = value
