"""Typed configs: dataclass <-> dict/JSON/YAML, dotted overrides, saving beside checkpoints.

Each component defines its own frozen dataclass next to the code it configures, with one
docstring per field. This module only knows how to move any such dataclass to and from disk, and
how a training run's config takes its typed agent overrides (``agent.<field>=<value>``), resolved
against a preset once (:func:`load_run_config`, :func:`resolve_agent_config`).
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from dime_offline.errors import ConfigError
from dime_offline.io import atomic_write_text

C = TypeVar("C")


def to_dict(cfg: Any) -> dict[str, Any]:
    """A plain, JSON-ready dict of a (nested) config dataclass."""
    return dataclasses.asdict(cfg)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is dict and not isinstance(value, dict):
        raise ConfigError(f"field '{where}': expected a section (a mapping of its fields), got {value!r}")
    if dataclasses.is_dataclass(tp) and isinstance(value, dict):
        return from_dict(tp, value, _prefix=where + ".")
    # A dataclass given something else passes through: its owner may accept a shorthand (a bare tag
    # name for a telemetry TagSpec) and checks the type itself (see check_section).
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(arg, value, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0] if errors else ConfigError(f"field '{where}': cannot be {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"field '{where}': expected one of {list(args)}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"field '{where}': expected a list, got {value!r}")
        inner = args[0] if args else Any
        items = [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict or tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"field '{where}': expected true/false, got {value!r}")
    if tp in (int, float, str):
        if tp is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if tp is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, tp) and not (tp is int and isinstance(value, bool)):
            return value
        if isinstance(value, str):
            try:
                return tp(float(value)) if tp is int and "e" in value.lower() else tp(value)
            except ValueError:
                pass
        raise ConfigError(f"field '{where}': expected {tp.__name__}, got {value!r}")
    return value


def dotted_items(section: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    """A config as a dict (nested sections) as (dotted field, value) pairs: ``("offline.alpha", 0.1)``;
    an empty section stays one pair."""
    pairs: list[tuple[str, Any]] = []
    for key, value in section.items():
        if isinstance(value, dict) and value:
            pairs.extend(dotted_items(value, f"{prefix}{key}."))
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def setting_value_text(value: Any) -> str:
    """A config value as it shows in a setting's label or a tracker parameter: strings as they are,
    everything else as JSON (``0.3``, ``true``, ``[128, 128]``)."""
    return value if isinstance(value, str) else json.dumps(value)


def setting_text(pairs: Iterable[tuple[str, Any]]) -> str:
    """``field=value, ...`` of (dotted field, value) pairs: how sweeps, trackers and ``compare`` name a setting."""
    return ", ".join(f"{key}={setting_value_text(value)}" for key, value in pairs)


def check_section(name: str, value: Any, section: type) -> None:
    """A config's nested ``section`` field must have been given as a mapping (not ``offline: x``)."""
    if not isinstance(value, section):
        raise ConfigError(f"field '{name}': expected a section (a mapping of its fields), got {value!r}")


def from_dict(cls: type[C], data: dict[str, Any], *, _prefix: str = "") -> C:
    """Build ``cls`` from a dict, checking field names and types; unknown keys are an error."""
    return cls(**_typed_fields(cls, data, _prefix))


def _typed_fields(cls: type, data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``data``'s values coerced to ``cls``'s field types (names checked; the class not yet built)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a mapping for '{prefix.rstrip('.') or cls.__name__}', got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data = _moved_into_sections(cls, data, prefix)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown field '{prefix}{unknown[0]}' (known: {', '.join(sorted(fields))})"
        )
    return {k: _coerce(hints[k], v, prefix + k) for k, v in data.items()}


def _moved_into_sections(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """``data`` with the fields ``cls.MOVED_FIELDS`` names ({old name: "section.field"}) moved to their
    section, so config files, ``--set`` values, sweep files and saved run configs written before the
    move still load. The old name's value replaces the section's unless the section holds another
    value than its default there (both names given, differently: an error)."""
    moved = {old: new for old, new in getattr(cls, "MOVED_FIELDS", {}).items() if old in data}
    if not moved:
        return data
    data = dict(data)
    for old, new in moved.items():
        section, name = new.split(".")
        target = data.get(section) or {}
        if not isinstance(target, dict):
            continue  # the section itself is malformed: its own check reports it
        default = getattr(typing.get_type_hints(cls)[section](), name)
        if target.get(name, default) not in (default, data[old]):
            raise ConfigError(f"field '{prefix}{old}' moved to '{prefix}{new}': give only '{prefix}{new}'")
        data[section] = {**target, name: data.pop(old)}
    return data


def apply_overrides(cfg: C, overrides: list[str] | None) -> C:
    """Apply ``section.field=value`` overrides (values parsed as YAML scalars)."""
    data = to_dict(cfg)
    _apply_overrides(type(cfg), data, overrides)
    return from_dict(type(cfg), data)


def _apply_overrides(cls: type, data: dict[str, Any], overrides: list[str] | None, required: frozenset[str] = frozenset()) -> None:
    """Set each ``section.field=value`` of ``overrides`` in ``data`` (``cls`` as a dict; ``required``:
    top-level fields without a default, which ``data`` may still lack). A field that moved into a
    section (``cls.MOVED_FIELDS``) is set there."""
    moved = getattr(cls, "MOVED_FIELDS", {})
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like field=value")
        key, raw = item.split("=", 1)
        key = moved.get(key.strip(), key)
        node = data
        parts = key.strip().split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(f"override '{item}': '{part}' is not a config section")
            node = node[part]
        if parts[-1] not in node and not (node is data and parts[-1] in required):
            raise ConfigError(f"override '{item}': unknown field '{key}'")
        node[parts[-1]] = parse_override_value(key.strip(), raw)


def parse_override_value(field: str, raw: str) -> Any:
    """The value of a ``field=raw`` override, parsed as YAML (``[64, 64]``, ``true``, ``0.3``)."""
    import yaml  # on use, as in _read_config_file: commands without a config start faster

    try:
        return yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or "not valid YAML"
        raise ConfigError(f"field '{field}': {raw!r} is not a valid YAML value ({problem})") from None


def load_config(cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None) -> C:
    """Defaults of ``cls``, updated from a YAML/JSON file, then from dotted overrides."""
    return resolve_config(cls, path, overrides)


def resolve_config(
    cls: type[C], path: str | Path | None = None, overrides: list[str] | None = None, *, base: C | None = None, **given: Any
) -> C:
    """Defaults < YAML/JSON file < ``given`` fields (a command's flags; None: not given) < ``key=value`` overrides.

    ``base`` replaces the class defaults (a preset). The class is built once, at the end, so a field
    that the defaults leave invalid (a required checkpoint path) may come from any of the three. A
    bad value from the file names the file.
    """
    data = _defaults(cls) if base is None else to_dict(base)
    if path is not None:
        _deep_update(data, _read_config_file(Path(path)), str(path))
        try:
            data = _moved_into_sections(cls, data, "")  # so an override of the new name wins over the file
            _typed_fields(cls, data)
            if _defaults_build(cls):  # then whatever fails now is the file's doing
                from_dict(cls, data)
        except ConfigError as exc:  # name the file the bad value came from
            raise ConfigError(exc.message, file=str(path)) from None
    data.update({k: v for k, v in given.items() if v is not None})
    required = [f.name for f in dataclasses.fields(cls) if f.name not in data]  # type: ignore[arg-type]
    _apply_overrides(cls, data, overrides, frozenset(required))
    missing = [name for name in required if name not in data]
    if missing:
        raise ConfigError(f"field '{missing[0]}': required, and not given (e.g. --set {missing[0]}=...)")
    return from_dict(cls, data)


AGENT_OVERRIDE_PREFIX = "agent."


def load_run_config(
    cls: type[C],
    path: str | None = None,
    overrides: list[str] | None = None,
    **fields: Any,
) -> C:
    """Defaults < YAML/JSON file < explicit ``fields`` (CLI flags given) < ``key=value`` overrides.

    ``cls`` must have a ``agent: dict`` field of DIME hyperparameter overrides; overrides written
    ``agent.<field>=<value>`` (dotted further for nested sections) go into it, the rest are
    applied to ``cls`` itself. Fields given as None are treated as not given.
    """
    run_sets: list[str] = []
    agent_sets: list[str] = []
    for item in overrides or []:
        (agent_sets if item.strip().startswith(AGENT_OVERRIDE_PREFIX) else run_sets).append(item)
    cfg = resolve_config(cls, path, run_sets, **fields)
    agent: dict[str, Any] = dict(cfg.agent)  # type: ignore[attr-defined]
    for item in agent_sets:
        key, sep, raw = item.strip()[len(AGENT_OVERRIDE_PREFIX):].partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{item}' must look like agent.field=value")
        node = agent
        parts = key.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}': 'agent.{part}' is not a config section")
        node[parts[-1]] = parse_override_value(AGENT_OVERRIDE_PREFIX + key, raw)
    return dataclasses.replace(cfg, agent=agent)  # type: ignore[type-var]


def resolve_agent_config(agent_cls: type[C], preset: C, overrides: Mapping[str, Any]) -> C:
    """``preset`` with the (possibly nested) ``overrides`` applied; unknown fields are a ConfigError."""
    merged = to_dict(preset)
    _merge(merged, dict(overrides), "agent")
    return from_dict(agent_cls, merged, _prefix="agent.")


def _merge(base: dict[str, Any], new: dict[str, Any], where: str) -> None:
    for key, value in new.items():
        if key not in base:
            raise ConfigError(f"unknown field '{where}.{key}' (known: {', '.join(sorted(base))})")
        if isinstance(value, dict) and isinstance(base[key], dict):
            _merge(base[key], value, f"{where}.{key}")
        else:
            base[key] = value


def _defaults(cls: type) -> dict[str, Any]:
    """``cls``'s defaults as a plain dict (nested configs as dicts); fields without one are left out."""
    data: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            data[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            value = f.default_factory()
            data[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
    return data


def _defaults_build(cls: type) -> bool:
    try:
        from_dict(cls, _defaults(cls))
    except (ConfigError, TypeError):
        return False
    return True


def _read_config_file(path: Path) -> Any:
    """The parsed content of a YAML/JSON config file (an empty file is an empty mapping)."""
    import yaml  # on use: most data commands never read YAML, and the import costs ~0.03 s of start-up

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("config file not found", file=str(path)) from None
    except IsADirectoryError:
        raise ConfigError("is a directory, expected a YAML/JSON config file", file=str(path)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"not a text YAML/JSON config file (byte {exc.object[exc.start]:#04x} at offset {exc.start} is not UTF-8)",
            file=str(path),
        ) from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML/JSON ({exc})", file=str(path)) from None


def _deep_update(base: dict[str, Any], new: dict[str, Any], where: str) -> None:
    if not isinstance(new, dict):
        raise ConfigError(f"{where}: expected a mapping at the top level")
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value, where)
        else:
            base[key] = value


def save_config(cfg: Any, path: str | Path) -> None:
    """Write the resolved config as JSON (atomically)."""
    atomic_write_text(path, json.dumps(to_dict(cfg), indent=2, sort_keys=True) + "\n")
