"""Arrow <-> :class:`TransitionData` conversion shared by the Parquet and pandas adapters.

Two column layouts are understood for the vector fields ``obs``, ``action``, ``next_obs`` (and the
optional ``obs_valid``):

* **list** (canonical): one column holding a fixed-size list per row
  (``fixed_size_list<float32>[width]``); variable-size lists of equal length are accepted too.
* **wide**: one scalar column per feature, named ``<field>.<feature name>`` as produced by
  :meth:`TransitionData.to_wide` (``obs.temperature``, ``action.valve``, ...).

Conversion goes straight from Arrow buffers to numpy without pandas; fixed-size lists of float32
without nulls are viewed, not copied.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from dime_offline.data.schema import (
    METADATA_KEY,
    OPTIONAL_COLUMNS,
    PANDAS_ATTRS_KEY,
    REQUIRED_COLUMNS,
    DatasetMetadata,
    TransitionData,
)
from dime_offline.errors import SchemaError

VECTOR_FIELDS = ("obs", "action", "next_obs", "obs_valid", "action_valid")
MASK_FIELDS = ("obs_valid", "action_valid")
"""Fields holding one value per feature; stored as a list column or as wide ``<field>.<name>`` columns."""

SCALAR_TYPES: dict[str, np.dtype] = {
    "episode_id": np.dtype(np.int64),
    "step": np.dtype(np.int32),
    "reward": np.dtype(np.float32),
    "terminated": np.dtype(np.bool_),
    "truncated": np.dtype(np.bool_),
}

ROW_GROUP_ROWS = 65536
"""Rows per Parquet row group (and default record-batch size when reading)."""


def canonical_schema(
    obs_dim: int,
    action_dim: int,
    metadata: DatasetMetadata,
    *,
    timestamp: bool = False,
    obs_valid: bool = False,
    action_valid: bool = False,
    episode_key: bool = False,
) -> pa.Schema:
    """The Arrow schema of the canonical Parquet form (``docs/data-format.md``), metadata attached."""
    fields = [pa.field("episode_id", pa.int64(), nullable=False), pa.field("step", pa.int32(), nullable=False)]
    if timestamp:
        fields.append(pa.field("timestamp", pa.timestamp("us", tz="UTC")))
    fields += [
        pa.field("obs", pa.list_(pa.float32(), obs_dim), nullable=False),
        pa.field("action", pa.list_(pa.float32(), action_dim), nullable=False),
        pa.field("reward", pa.float32(), nullable=False),
        pa.field("next_obs", pa.list_(pa.float32(), obs_dim), nullable=False),
        pa.field("terminated", pa.bool_(), nullable=False),
        pa.field("truncated", pa.bool_(), nullable=False),
    ]
    if obs_valid:
        fields.append(pa.field("obs_valid", pa.list_(pa.bool_(), obs_dim)))
    if action_valid:
        fields.append(pa.field("action_valid", pa.list_(pa.bool_(), action_dim)))
    if episode_key:
        fields.append(pa.field("episode_key", pa.dictionary(pa.int32(), pa.string())))
    return pa.schema(fields, metadata={METADATA_KEY: metadata.to_json().encode()})


NUMPY_TYPES: dict[pa.DataType, type] = {
    pa.int8(): np.int8, pa.int16(): np.int16, pa.int32(): np.int32, pa.int64(): np.int64,
    pa.uint8(): np.uint8, pa.uint16(): np.uint16, pa.uint32(): np.uint32, pa.uint64(): np.uint64,
    pa.float16(): np.float16, pa.float32(): np.float32, pa.float64(): np.float64,
}
"""Arrow number types whose buffers numpy reads as they are."""


# pyarrow's Array.to_numpy, pa.array (of an ndarray or a list), pa.scalar and compute calls given a
# Python scalar import pandas on first use (0.3-0.6 s, more than a small file's whole read), so the data
# and telemetry commands move numbers, flags and strings through the buffers instead.
def arrow_array(values: np.ndarray) -> pa.Array:
    """A 1-D numeric or bool numpy array as an Arrow array (numbers wrapped without a copy)."""
    values = np.ascontiguousarray(values)
    if values.dtype == np.bool_:
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
    return pa.Array.from_buffers(pa.from_numpy_dtype(values.dtype), len(values), [None, pa.py_buffer(values)])


def numpy_array(arr: pa.Array | pa.ChunkedArray, fill: float | None = None) -> np.ndarray:
    """``arr.to_numpy(zero_copy_only=False)`` for numbers and bools, read from the buffers.

    Without nulls, numbers are a read-only view of the buffer and bools are unpacked. Nulls read as
    ``fill`` in the array's own dtype; without ``fill`` they read as NaN, integers becoming float64
    (as pyarrow converts them; floats keep their width). Other types, and bools with nulls but no
    ``fill``, go through pyarrow.
    """
    arr = _combine(arr)
    dtype = NUMPY_TYPES.get(arr.type)
    boolean = pa.types.is_boolean(arr.type)
    if (dtype is None and not boolean) or (boolean and arr.null_count and fill is None):
        return arr.to_numpy(zero_copy_only=False)
    values = _buffer_values(arr, dtype)
    if arr.null_count == 0:
        return values
    if fill is None:
        fill = np.nan
        values = values.astype(np.float64) if values.dtype.kind in "iu" else values.copy()
    elif not values.flags.writeable:
        values = values.copy()
    # The slots under nulls hold arbitrary bytes: overwrite them.
    values[_buffer_values(arr.is_null(), None)] = fill
    return values


def _buffer_values(arr: pa.Array, dtype: type | None) -> np.ndarray:
    """The data buffer of a number (``dtype``) or bool (None) array, validity ignored."""
    if len(arr) == 0:
        return np.empty(0, bool if dtype is None else dtype)
    if dtype is None:
        bits = np.frombuffer(arr.buffers()[1], np.uint8)
        return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset:].view(np.bool_)
    view = np.frombuffer(arr.buffers()[1], dtype, count=len(arr), offset=arr.offset * np.dtype(dtype).itemsize)
    view.flags.writeable = False  # Arrow memory (possibly a memory-mapped file) is never written through
    return view


def string_array(strings: Sequence[str | None]) -> pa.Array:
    """Python strings (None: null) as an Arrow string array, built from its buffers."""
    encoded = [b"" if text is None else text.encode() for text in strings]
    offsets = np.zeros(len(encoded) + 1, np.int32)
    np.cumsum([len(e) for e in encoded], out=offsets[1:])
    missing = np.fromiter((text is None for text in strings), bool, len(encoded))
    validity = pa.py_buffer(np.packbits(~missing, bitorder="little")) if missing.any() else None
    return pa.Array.from_buffers(
        pa.string(), len(encoded), [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))],
        null_count=int(missing.sum()),
    )


def _compute():
    """``pyarrow.compute``, imported on first use: the common layouts (fixed-size lists, dictionary
    keys, no nulls) never need it, and importing it adds ~0.03 s to every data command's start-up."""
    import pyarrow.compute

    return pyarrow.compute


def _episode_keys(keys: pa.Array) -> np.ndarray:
    """An episode_key column (dictionary or plain strings) as an object array of str; each distinct
    key becomes a Python string once."""
    if not pa.types.is_dictionary(keys.type):
        if not (pa.types.is_string(keys.type) or pa.types.is_large_string(keys.type)):
            keys = keys.cast(pa.string())
        keys = _compute().dictionary_encode(keys)
    names = keys.dictionary
    if not (pa.types.is_string(names.type) or pa.types.is_large_string(names.type)):
        names = names.cast(pa.string())
    if keys.null_count:  # rare: missing keys stay None, as pyarrow converts them
        return keys.dictionary_decode().to_numpy(zero_copy_only=False).astype(object, copy=False)
    return np.asarray(names.to_pylist(), dtype=object)[numpy_array(keys.indices)]


def transitions_to_table(data: TransitionData) -> pa.Table:
    """The canonical Arrow table of ``data`` (numeric buffers are wrapped without copying)."""

    def fixed_list(values: np.ndarray, width: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(arrow_array(values.reshape(-1)), width)

    schema = canonical_schema(
        data.obs_dim, data.action_dim, data.metadata,
        timestamp=data.timestamp is not None, obs_valid=data.obs_valid is not None,
        action_valid=data.action_valid is not None,
        episode_key=data.episode_key is not None,
    )
    columns: dict[str, pa.Array] = {
        "episode_id": arrow_array(np.asarray(data.episode_id, np.int64)),
        "step": arrow_array(np.asarray(data.step, np.int32)),
        "obs": fixed_list(np.asarray(data.obs, np.float32), data.obs_dim),
        "action": fixed_list(np.asarray(data.action, np.float32), data.action_dim),
        "reward": arrow_array(np.asarray(data.reward, np.float32)),
        "next_obs": fixed_list(np.asarray(data.next_obs, np.float32), data.obs_dim),
        "terminated": arrow_array(np.asarray(data.terminated, bool)),
        "truncated": arrow_array(np.asarray(data.truncated, bool)),
    }
    if data.timestamp is not None:
        columns["timestamp"] = arrow_array(np.asarray(data.timestamp, np.int64)).cast(pa.timestamp("us", tz="UTC"))
    if data.obs_valid is not None:
        columns["obs_valid"] = fixed_list(np.asarray(data.obs_valid, bool), data.obs_dim)
    if data.action_valid is not None:
        columns["action_valid"] = fixed_list(np.asarray(data.action_valid, bool), data.action_dim)
    if data.episode_key is not None:
        names, codes = np.unique(np.asarray([str(k) for k in data.episode_key], dtype=object), return_inverse=True)
        columns["episode_key"] = pa.DictionaryArray.from_arrays(
            arrow_array(codes.astype(np.int32)), string_array([str(n) for n in names])
        )
    return pa.Table.from_arrays([columns[f.name] for f in schema], schema=schema)


@dataclass
class ArrowLayout:
    """How the canonical fields map onto the columns of one Arrow schema."""

    metadata: DatasetMetadata
    """Dataset metadata (from the ``dime`` key, completed with wide column names)."""
    obs_dim: int
    """Observation width."""
    action_dim: int
    """Action width."""
    vector_columns: dict[str, list[str]]
    """For each vector field present: ``[name]`` (list layout) or the wide column names in order."""
    wide: dict[str, bool]
    """For each vector field present: True for the wide layout."""
    optional: tuple[str, ...]
    """Optional canonical fields present in the schema and selected for reading."""
    ignored: list[str] = field(default_factory=list)
    """Columns present in the source that are not part of the canonical schema."""

    def read_columns(self) -> list[str]:
        """Names of the source columns needed to build :class:`TransitionData`."""
        names = [c for c in REQUIRED_COLUMNS if c not in VECTOR_FIELDS]
        names += [c for c in self.optional if c not in VECTOR_FIELDS]
        for fieldname, cols in self.vector_columns.items():
            if fieldname in REQUIRED_COLUMNS or fieldname in self.optional:
                names += cols
        return names


def _expected_columns() -> str:
    return (
        "episode_id, step, obs (list) or obs.<name>..., action (list) or action.<name>..., reward,"
        " next_obs (list) or next_obs.<name>..., terminated, truncated"
    )


def _list_width(schema: pa.Schema, name: str, first: pa.Table | pa.RecordBatch | None, file: str | None) -> int:
    """Width of a list column: the fixed size, else the length of the first row's list."""
    arrow_type = schema.field(name).type
    if _is_number(arrow_type):  # a plain numeric column is a width-1 vector
        return 1
    if pa.types.is_fixed_size_list(arrow_type):
        return int(arrow_type.list_size)
    if not (pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type)):
        raise SchemaError(f"expected a list of numbers per row, got Arrow type {arrow_type}", file=file, column=name)
    if first is None or first.num_rows == 0:
        return 0
    col = first.column(name)
    lengths = numpy_array(_compute().list_value_length(col))
    valid = np.flatnonzero(~np.isnan(lengths.astype(np.float64)))
    return int(lengths[valid[0]]) if len(valid) else 0


def resolve_layout(
    schema: pa.Schema,
    *,
    file: str | None = None,
    first: pa.Table | pa.RecordBatch | None = None,
    columns: Sequence[str] | None = None,
) -> ArrowLayout:
    """Map a source schema onto the canonical fields; raise :class:`SchemaError` naming what is missing.

    ``first`` (a few leading rows) is only needed to learn the width of variable-size list columns.
    ``columns`` selects optional fields (None: every optional field present).
    """
    raw_meta = (schema.metadata or {}).get(METADATA_KEY) or _pandas_attrs_metadata(schema)
    metadata = DatasetMetadata.from_json(raw_meta, file=file) if raw_meta is not None else DatasetMetadata()
    names = list(schema.names)
    vector_columns: dict[str, list[str]] = {}
    wide: dict[str, bool] = {}
    used: set[str] = set()
    for fieldname in VECTOR_FIELDS:
        if fieldname in names:
            vector_columns[fieldname] = [fieldname]
            wide[fieldname] = False
            used.add(fieldname)
            continue
        prefix = fieldname + "."
        cols = [n for n in names if n.startswith(prefix)]
        if cols:
            vector_columns[fieldname] = cols
            wide[fieldname] = True
            used.update(cols)
        elif fieldname in REQUIRED_COLUMNS:
            raise SchemaError(
                f"missing column '{fieldname}' (or wide columns '{fieldname}.<name>'); expected {_expected_columns()};"
                f" found {', '.join(names) or 'no columns'}",
                file=file, column=fieldname,
            )
    for name in SCALAR_TYPES:
        if name not in names:
            hint = [n for n in names if n.lower().replace("-", "_").replace(" ", "_") == name or n.lower() in _ALIASES.get(name, ())]
            suggestion = f" (found '{hint[0]}': rename it)" if hint else ""
            raise SchemaError(
                f"missing column '{name}'{suggestion}; expected {_expected_columns()}; found {', '.join(names)}",
                file=file, column=name,
            )
        used.add(name)

    def width(fieldname: str) -> int:
        if wide[fieldname]:
            return len(vector_columns[fieldname])
        return _list_width(schema, fieldname, first, file)

    obs_dim, action_dim = width("obs"), width("action")
    if width("next_obs") != obs_dim:
        raise SchemaError(f"has width {width('next_obs')}, obs has width {obs_dim}", file=file, column="next_obs")
    obs_names = _wide_names(vector_columns, wide, "obs")
    if obs_names is not None and wide["next_obs"]:
        next_names = [c[len("next_obs."):] for c in vector_columns["next_obs"]]
        if next_names != obs_names:
            raise SchemaError(
                f"wide next_obs columns {next_names} do not match the obs columns {obs_names} (same names, same order)",
                file=file, column="next_obs",
            )
    action_names = _wide_names(vector_columns, wide, "action")
    if metadata.obs_names is None and obs_names is not None and obs_names != [str(i) for i in range(obs_dim)]:
        metadata = dataclasses.replace(metadata, obs_names=obs_names)
    if metadata.action_names is None and action_names is not None and action_names != [
        str(i) for i in range(action_dim)
    ]:
        metadata = dataclasses.replace(metadata, action_names=action_names)
    _check_metadata_widths(metadata, obs_dim, action_dim, file)

    present_optional = [
        n for n in OPTIONAL_COLUMNS if n in names or (n in vector_columns)
    ]
    if columns is not None:
        unknown = [c for c in columns if c not in OPTIONAL_COLUMNS]
        if unknown:
            raise SchemaError(
                f"cannot select {unknown}: only optional columns {list(OPTIONAL_COLUMNS)} are selectable",
                file=file, column=unknown[0],
            )
        present_optional = [n for n in present_optional if n in columns]
    if "obs_valid" in vector_columns and width("obs_valid") != obs_dim:
        raise SchemaError(f"has width {width('obs_valid')}, obs has width {obs_dim}", file=file, column="obs_valid")
    if "action_valid" in vector_columns and width("action_valid") != action_dim:
        raise SchemaError(f"has width {width('action_valid')}, action has width {action_dim}", file=file,
                          column="action_valid")
    used.update(n for n in OPTIONAL_COLUMNS if n in names)
    ignored = [n for n in names if n not in used]
    return ArrowLayout(
        metadata=metadata, obs_dim=obs_dim, action_dim=action_dim, vector_columns=vector_columns,
        wide=wide, optional=tuple(present_optional), ignored=ignored,
    )


_ALIASES: dict[str, tuple[str, ...]] = {
    "episode_id": ("episode", "episodes", "episode_ids", "ep", "episode_index"),
    "step": ("t", "steps", "timestep", "step_id"),
    "reward": ("rewards", "r"),
    "terminated": ("terminals", "terminal", "terminations", "done", "dones"),
    "truncated": ("timeouts", "timeout", "truncations", "truncation"),
}
"""Common misnamings, used only to suggest the right name in error messages."""


def _pandas_attrs_metadata(schema: pa.Schema) -> str | None:
    """Dataset metadata a DataFrame carried in ``attrs`` (:data:`PANDAS_ATTRS_KEY`), which pyarrow
    keeps in the schema's pandas metadata; None when there is none."""
    raw = (schema.metadata or {}).get(b"pandas")
    if raw is None:
        return None
    try:
        attrs = json.loads(raw).get("attributes") or {}
    except (ValueError, AttributeError):
        return None
    meta = attrs.get(PANDAS_ATTRS_KEY) if isinstance(attrs, dict) else None
    return json.dumps(meta) if isinstance(meta, dict) else None


def _wide_names(vector_columns: dict[str, list[str]], wide: dict[str, bool], fieldname: str) -> list[str] | None:
    if not wide.get(fieldname):
        return None
    return [c[len(fieldname) + 1:] for c in vector_columns[fieldname]]


def _check_metadata_widths(metadata: DatasetMetadata, obs_dim: int, action_dim: int, file: str | None) -> None:
    for key, width in (
        ("obs_names", obs_dim), ("obs_units", obs_dim), ("obs_low", obs_dim), ("obs_high", obs_dim),
        ("action_names", action_dim), ("action_units", action_dim), ("action_low", action_dim),
        ("action_high", action_dim),
    ):
        value = getattr(metadata, key)
        if value is not None and len(value) != width:
            raise SchemaError(
                f"metadata field '{key}' has {len(value)} entries, the data has width {width}",
                file=file, column=key,
            )


def _first_null(arr: pa.Array | pa.ChunkedArray) -> int:
    return int(np.flatnonzero(numpy_array(arr.is_null()))[0])


def _combine(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def _scalar(batch: pa.Table | pa.RecordBatch, name: str, file: str | None, row_offset: int) -> np.ndarray:
    col = _combine(batch.column(name))
    dtype = SCALAR_TYPES[name]
    if col.null_count:
        if dtype.kind == "f":  # missing rewards become NaN and go through the non-finite policy
            return np.asarray(numpy_array(col.cast(pa.float64())), dtype=dtype)
        raise SchemaError(
            f"has {col.null_count} missing value(s); every row needs one", file=file, column=name,
            row=row_offset + _first_null(col),
        )
    try:
        if pa.types.is_timestamp(col.type) or pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            raise TypeError
        values = numpy_array(col)
        if dtype.kind == "b" and values.dtype.kind in "iuf":
            bad = np.flatnonzero((values != 0) & (values != 1))
            if len(bad):
                raise SchemaError(
                    f"flag must be 0/1 or true/false, got {values[bad[0]]!r}", file=file, column=name,
                    row=row_offset + int(bad[0]),
                )
        if dtype.kind in "iu" and values.dtype.kind == "f":
            bad = np.flatnonzero(values != np.round(values))
            if len(bad):
                raise SchemaError(
                    f"expected whole numbers, got {values[bad[0]]!r}", file=file, column=name, row=row_offset + int(bad[0])
                )
        return values.astype(dtype, copy=False)
    except (TypeError, ValueError, pa.ArrowException):
        raise SchemaError(f"expected {dtype.name} values, got Arrow type {col.type}", file=file, column=name) from None


def _is_number(arrow_type: pa.DataType) -> bool:
    return pa.types.is_integer(arrow_type) or pa.types.is_floating(arrow_type) or pa.types.is_boolean(arrow_type)


def _float_values(col: pa.Array, dtype: np.dtype) -> np.ndarray:
    """Numbers of a flat Arrow array as ``dtype``; nulls become NaN (floats) or False (bools)."""
    if dtype.kind == "b":
        if col.null_count:
            col = _compute().fill_null(col, False)
        return numpy_array(col).astype(bool, copy=False)
    if col.null_count:
        col = col.cast(pa.float64())
    return numpy_array(col).astype(dtype, copy=False)


def _vector(
    batch: pa.Table | pa.RecordBatch, layout: ArrowLayout, fieldname: str, file: str | None, row_offset: int
) -> np.ndarray:
    """(rows, width) array of a vector field; missing entries become NaN (False for masks)."""
    dtype = np.dtype(np.bool_) if fieldname in MASK_FIELDS else np.dtype(np.float32)
    width = layout.action_dim if fieldname in ("action", "action_valid") else layout.obs_dim
    n = batch.num_rows
    if layout.wide[fieldname]:
        out = np.empty((n, width), dtype=dtype)
        for j, name in enumerate(layout.vector_columns[fieldname]):
            col = _combine(batch.column(name))
            if not (_is_number(col.type) or pa.types.is_null(col.type)):
                raise SchemaError(f"expected numbers, got Arrow type {col.type}", file=file, column=name)
            out[:, j] = _float_values(col, dtype) if not pa.types.is_null(col.type) else (
                False if dtype.kind == "b" else np.nan
            )
        return out
    col = _combine(batch.column(fieldname))
    if _is_number(col.type):
        return _float_values(col, dtype).reshape(n, 1)
    value_type = col.type.value_type
    if not _is_number(value_type):
        raise SchemaError(f"expected lists of numbers, got Arrow type {col.type}", file=file, column=fieldname)
    if pa.types.is_fixed_size_list(col.type):
        if col.type.list_size != width:
            raise SchemaError(f"has width {col.type.list_size}, expected {width}", file=file, column=fieldname)
        # .values ignores the slice offset and keeps the slots of null rows, so slice it explicitly.
        values = col.values.slice(col.offset * width, n * width)
    else:
        lengths = numpy_array(_compute().list_value_length(col))
        lengths = np.where(np.isnan(lengths.astype(np.float64)), width, lengths)
        ragged = np.flatnonzero(lengths != width)
        if len(ragged):
            r = int(ragged[0])
            raise SchemaError(
                f"row has {int(lengths[r])} values, expected {width} (same width on every row)",
                file=file, column=fieldname, row=row_offset + r,
            )
        if col.null_count:
            # Null rows take no slots in a variable-size list; give them placeholder lists first.
            col = _compute().if_else(col.is_null(), pa.scalar([None] * width, col.type), col)
        values = col.flatten()
    out = _float_values(values, dtype).reshape(n, width)
    if col.null_count:
        out = out.copy() if not out.flags.writeable else out
        out[numpy_array(col.is_null())] = False if dtype.kind == "b" else np.nan
    return out


def _timestamp(batch: pa.Table | pa.RecordBatch, file: str | None, row_offset: int) -> np.ndarray | None:
    col = _combine(batch.column("timestamp"))
    if col.null_count == len(col):
        return None
    if col.null_count:
        raise SchemaError(
            "has missing values; give every row a timestamp or none", file=file, column="timestamp",
            row=row_offset + _first_null(col),
        )
    if pa.types.is_timestamp(col.type):
        if col.type.tz is None:  # naive times are taken as UTC (documented in docs/data-format.md)
            col = col.cast(pa.timestamp(col.type.unit))
        else:
            col = col.cast(pa.timestamp(col.type.unit, tz="UTC"))
        return numpy_array(col.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()))
    if pa.types.is_integer(col.type):  # already microseconds since the epoch
        return numpy_array(col.cast(pa.int64()))
    raise SchemaError(f"expected timestamps, got Arrow type {col.type}", file=file, column="timestamp")


def batch_to_transitions(
    batch: pa.Table | pa.RecordBatch, layout: ArrowLayout, *, file: str | None = None, row_offset: int = 0
) -> TransitionData:
    """Convert one Arrow batch into :class:`TransitionData` (no validation of episode structure).

    ``row_offset`` is the index of the batch's first row in the whole source, so that error messages
    name rows of the file, not of the batch.
    """
    optional: dict[str, np.ndarray | None] = {name: None for name in OPTIONAL_COLUMNS}
    if "timestamp" in layout.optional:
        optional["timestamp"] = _timestamp(batch, file, row_offset)
    for mask in MASK_FIELDS:
        if mask in layout.optional:
            optional[mask] = _vector(batch, layout, mask, file, row_offset)
    if "episode_key" in layout.optional:
        optional["episode_key"] = _episode_keys(_combine(batch.column("episode_key")))
    return TransitionData(
        episode_id=_scalar(batch, "episode_id", file, row_offset),
        step=_scalar(batch, "step", file, row_offset),
        obs=_vector(batch, layout, "obs", file, row_offset),
        action=_vector(batch, layout, "action", file, row_offset),
        reward=_scalar(batch, "reward", file, row_offset),
        next_obs=_vector(batch, layout, "next_obs", file, row_offset),
        terminated=_scalar(batch, "terminated", file, row_offset),
        truncated=_scalar(batch, "truncated", file, row_offset),
        metadata=layout.metadata,
        **optional,
    )
