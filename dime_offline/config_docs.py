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
import textwrap
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
    """The annotated fields of class ``class_name`` in ``source``, in order."""
    tree = ast.parse(source)
    constants = _module_constants(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return _fields(node, constants)
    raise LookupError(f"class {class_name} not found")


def field_docs(cls: type) -> dict[str, str]:
    """The docstring of each field of dataclass ``cls``, by field name."""
    fields = class_fields(textwrap.dedent(inspect.getsource(cls)), cls.__name__)
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


def _emit(cfg: Any, sections: dict[str, Any], lines: list[str], indent: str) -> None:
    docs = field_docs(type(cfg))
    for f in dataclasses.fields(cfg):
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
    for f in dataclasses.fields(cfg):
        value = sections.get(f.name, getattr(cfg, f.name))
        docs[prefix + f.name] = field_doc[f.name]
        if dataclasses.is_dataclass(value):
            values[f.name] = {}
            _collect(value, {}, values[f.name], docs, prefix + f.name + ".")
        else:
            values[f.name] = value
