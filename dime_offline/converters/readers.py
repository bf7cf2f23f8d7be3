"""Read historian exports (long or wide; CSV or Parquet; a file, a directory, a DataFrame) in chunks.

Each chunk becomes a :class:`SampleChunk`: one row per sample of a tag the spec uses, with the
timestamp as int64 microseconds since the Unix epoch (UTC), the tag as a small integer, and the
value as float64 where quality-bad samples are NaN. Everything else in the export (other tags,
extra columns) is dropped as early as possible so memory follows the chunk size.

Conventions enforced here (``docs/telemetry.md`` explains them):

* timestamps end up in UTC with microsecond resolution, whatever the source unit ([s], [ms], [us],
  [ns]) and zone; timestamps without an offset need ``spec.timezone``;
* a non-numeric string in a numeric tag (PI digital states such as "Bad Input", "I/O Timeout",
  "Shutdown", "No Data") is a bad sample and is tallied per tag;
* quality codes (OPC UA 32-bit StatusCodes, OPC DA quality words, text) map to good / uncertain /
  bad; bad (and, unless ``keep_uncertain``, uncertain) samples carry NaN: the signal is unknown from
  that sample until the next good one;
* sentinel values and values outside a tag's ``valid_min``/``valid_max`` are bad.
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from dime_offline.converters.spec import (
    ColumnSpec,
    QualitySpec,
    ReaderSpec,
    normalise_label,
)
from dime_offline.data.arrow import arrow_array, numpy_array
from dime_offline.errors import DataError, DatasetNotFoundError, SchemaError

GOOD, UNCERTAIN, BAD = 0, 1, 2
"""Quality classes."""

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".txt")
PARQUET_SUFFIXES = (".parquet", ".pq")
_NUMERIC_RE = r"^\s*[-+]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?\s*$"
_TEXT_START_RE = r"^\s*[^-+.0-9\s]"
_CANDIDATES = {
    "timestamp": ("timestamp", "time", "_time", "ts", "datetime", "date"),
    "tag": ("tag", "tagname", "tag_name", "name", "point", "_field", "sensor_id", "sensor"),
    "value": ("value", "_value", "val"),
    "quality": ("quality", "status", "statuscode", "status_code"),
    "units": ("units", "unit", "unitsabbreviation", "engunits", "uom"),
}
_TEXT_GOOD = ("good", "ok")
_TEXT_UNCERTAIN = ("uncertain", "questionable", "substituted", "suspect")
_TEXT_BAD = ("bad",)
_MAX_TEXT_STATES = 50
_MAX_TAGS_SEEN = 10_000


class ReadOptions(Protocol):
    """What the readers need of a spec: a :class:`~dime_offline.converters.spec.TelemetrySpec`, or
    the profiler's options (which name no tags)."""

    columns: ColumnSpec
    quality: QualitySpec
    reader: ReaderSpec
    timezone: str | None
    ambiguous: str


# --------------------------------------------------------------------------- registry / stats
@dataclass
class SourceTag:
    """A tag the spec reads, with what the reader needs to know about it."""

    tag: str
    kind: str = "numeric"
    valid_min: float | None = None
    valid_max: float | None = None
    offset_us: int = 0
    """Added to the tag's timestamps (clock skew correction)."""
    labels: dict[str, int] = field(default_factory=dict)
    """Text tags: label -> code (codes are the float values the aligner carries)."""

    def code(self, label: str) -> int:
        return self.labels.setdefault(label, len(self.labels))

    def label(self, code: float) -> str | None:
        if not np.isfinite(code):
            return None
        inverse = {v: k for k, v in self.labels.items()}
        return inverse.get(int(code))


@dataclass
class TagStats:
    """Per-tag sample counts for the conversion report."""

    samples: int = 0
    good: int = 0
    uncertain: int = 0
    bad: int = 0
    text_states: Counter[str] = field(default_factory=Counter)
    sentinels: int = 0
    out_of_range: int = 0
    units: Counter[str] = field(default_factory=Counter)


@dataclass
class ReadStats:
    """What the readers saw, for the report."""

    files: list[str] = field(default_factory=list)
    rows_read: int = 0
    rows_used: int = 0
    tags_seen: set[str] = field(default_factory=set)
    per_tag: dict[str, TagStats] = field(default_factory=dict)


class TagRegistry:
    """The distinct source tags of a spec, indexed 0..T-1 (int16 in chunks).

    With ``grow_to`` > 0 (the profiler) every tag the source holds is registered as a numeric tag
    when first seen, up to that many; later ones are skipped.
    """

    def __init__(self, tags: list[SourceTag], *, grow_to: int = 0) -> None:
        self.tags: list[SourceTag] = []
        self.index: dict[str, int] = {}
        self.grow_to = grow_to
        for t in tags:
            self._append(t)

    def _append(self, tag: SourceTag) -> int:
        self.index[tag.tag] = len(self.tags)
        self.tags.append(tag)
        tags = self.tags
        self.is_text = np.array([t.kind == "text" for t in tags], dtype=bool)
        self.vmin = np.array([-np.inf if t.valid_min is None else t.valid_min for t in tags], dtype=np.float64)
        self.vmax = np.array([np.inf if t.valid_max is None else t.valid_max for t in tags], dtype=np.float64)
        offsets = np.array([t.offset_us for t in tags], dtype=np.int64)
        self.offset_us = offsets if offsets.any() else None
        return self.index[tag.tag]

    def lookup(self, name: str) -> int:
        """Index of a tag name, -1 when the source tag is not read."""
        i = self.index.get(name, -1)
        if i < 0 and len(self.tags) < self.grow_to:
            i = self._append(SourceTag(name))
        return i

    def __len__(self) -> int:
        return len(self.tags)


@dataclass
class SampleChunk:
    """Samples of the spec's tags from one chunk of the source (n rows, any time order)."""

    ts: np.ndarray
    """(n,) int64 microseconds since the Unix epoch, UTC."""
    tag: np.ndarray
    """(n,) int16 index into the :class:`TagRegistry`."""
    value: np.ndarray
    """(n,) float64; NaN for bad/missing samples; label codes for text tags."""


# --------------------------------------------------------------------------- sources
@dataclass
class _Part:
    """One readable piece of a source: a file or an in-memory table."""

    name: str
    path: Path | None = None
    table: pa.Table | None = None


def source_parts(source: Any) -> list[_Part]:
    """Files (sorted by name) or the in-memory table behind ``source``."""
    if type(source).__name__ == "DataFrame" and type(source).__module__.startswith("pandas"):
        return [_Part("<DataFrame>", table=_table_from_pandas(source))]
    if isinstance(source, pa.Table):
        return [_Part("<Table>", table=source)]
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = sorted(
                p for p in path.iterdir()
                if p.is_file() and not p.name.startswith(".") and _suffix(p) in CSV_SUFFIXES + PARQUET_SUFFIXES
            )
            if not files:
                raise DatasetNotFoundError(
                    f"no CSV or Parquet files in directory (looked for {', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)})",
                    file=str(path),
                )
            return [_Part(str(p), path=p) for p in files]
        if path.is_file():
            if _suffix(path) not in CSV_SUFFIXES + PARQUET_SUFFIXES:
                raise DataError(
                    f"unsupported file type '{_suffix(path) or path.name}' (expected CSV or Parquet)", file=str(path)
                )
            return [_Part(str(path), path=path)]
        raise DatasetNotFoundError("no such file or directory", file=str(path))
    raise DataError(f"unsupported telemetry source of type {type(source).__name__} (path, DataFrame or pyarrow Table)")


def _suffix(path: Path) -> str:
    name = path.name.lower()
    for suffix in CSV_SUFFIXES + PARQUET_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return path.suffix.lower()


def _table_from_pandas(df: Any) -> pa.Table:
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # Object columns mixing numbers and text (values with digital states): read them as text.
        fixed = df.copy()
        for col in fixed.columns:
            if fixed[col].dtype == object:
                fixed[col] = fixed[col].map(lambda v: None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v))
        return pa.Table.from_pandas(fixed, preserve_index=False)


# --------------------------------------------------------------------------- column layout
@dataclass
class _Layout:
    form: str
    """'long' or 'wide'."""
    timestamp: str
    tag: str | None = None
    value: str | None = None
    quality: str | None = None
    units: str | None = None
    wide_tags: dict[str, tuple[str, str | None]] = field(default_factory=dict)
    """Wide: tag -> (value column, quality column or None)."""


def _find(names: list[str], given: str | None, role: str, required: bool, part: str) -> str | None:
    if given is not None:
        if given not in names:
            raise SchemaError(
                f"column '{given}' (columns.{role}) not found; columns are: {', '.join(names[:30])}", file=part
            )
        return given
    lower = {n.lower().strip(): n for n in names}
    for cand in _CANDIDATES[role]:
        if cand in lower:
            return lower[cand]
    if required:
        raise SchemaError(
            f"no {role} column found (tried {', '.join(_CANDIDATES[role])}); name it under columns.{role}",
            file=part,
        )
    return None


def _layout(names: list[str], spec: ReadOptions, registry: TagRegistry, part: str) -> _Layout:
    cols = spec.columns
    ts = _find(names, cols.timestamp, "timestamp", True, part)
    assert ts is not None
    form = spec.reader.format
    if form == "auto":
        has_tag = cols.tag is not None or any(c in {n.lower() for n in names} for c in _CANDIDATES["tag"])
        has_value = cols.value is not None or any(c in {n.lower() for n in names} for c in _CANDIDATES["value"])
        form = "long" if has_tag and has_value else "wide"
    if form == "long":
        return _Layout(
            "long", ts,
            tag=_find(names, cols.tag, "tag", True, part),
            value=_find(names, cols.value, "value", True, part),
            quality=_find(names, cols.quality, "quality", False, part),
            units=_find(names, cols.units, "units", False, part),
        )
    wide: dict[str, tuple[str, str | None]] = {}
    missing = []
    if registry.grow_to:  # every column but the timestamp and the quality columns is a tag
        for name in names:
            if name != ts and not name.endswith(cols.quality_suffix):
                registry.lookup(name)
    for t in registry.tags:
        if t.tag in names:
            qcol = t.tag + cols.quality_suffix
            wide[t.tag] = (t.tag, qcol if qcol in names else None)
        else:
            missing.append(t.tag)
    if missing:
        import difflib

        close = difflib.get_close_matches(missing[0], names, n=5, cutoff=0.6)
        listing = f"closest columns: {', '.join(close)}" if close else f"columns are: {', '.join(names[:30])}"
        raise SchemaError(
            f"wide export has no column for tag '{missing[0]}' ({len(missing)} spec tag(s) missing); {listing}",
            file=part,
        )
    return _Layout("wide", ts, wide_tags=wide)


# --------------------------------------------------------------------------- arrow batches
def _csv_header(path: Path) -> list[str]:
    with pa.input_stream(str(path), compression="detect") as stream:
        head = stream.read(1 << 16)
    text = head.decode("utf-8-sig", errors="replace")
    first = text.splitlines()[0] if text else ""
    if not first.strip():
        raise DataError("empty file (no header row)", file=str(path))
    return next(csv.reader(io.StringIO(first)))


def _arrow_batches(part: _Part, spec: ReadOptions, registry: TagRegistry) -> tuple[_Layout, Iterator[pa.RecordBatch]]:
    chunk = spec.reader.chunk_rows
    if part.table is not None:
        layout = _layout(part.table.column_names, spec, registry, part.name)
        return layout, iter(part.table.to_batches(max_chunksize=chunk))
    path = part.path
    assert path is not None
    if _suffix(path) in PARQUET_SUFFIXES:
        try:
            pf = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"not a readable Parquet file ({exc})", file=part.name) from None
        layout = _layout(pf.schema_arrow.names, spec, registry, part.name)
        return layout, pf.iter_batches(batch_size=chunk, columns=_needed(layout))
    names = _csv_header(path)
    layout = _layout(names, spec, registry, part.name)
    types: dict[str, pa.DataType] = {}
    unit = spec.columns.timestamp_unit
    types[layout.timestamp] = pa.string() if unit is None else (pa.float64() if unit == "s" else pa.int64())
    # Plain strings; the low-cardinality columns are dictionary-encoded afterwards with pyarrow compute.
    for col in _needed(layout)[1:]:
        types[col] = pa.string()
    convert = pa_csv.ConvertOptions(column_types=types, include_columns=_needed(layout), strings_can_be_null=True)
    block = int(min(max(chunk * 48, 4096), 1 << 30))
    return layout, _csv_tables(path, names, convert, block, part.name)


def _csv_tables(
    path: Path, names: list[str], convert: pa_csv.ConvertOptions, block_bytes: int, name: str,
) -> Iterator[pa.RecordBatch]:
    """Parse a CSV file block by block: each block is whole lines, parsed with threads.

    pyarrow's streaming CSV reader reads ahead without bound when its consumer is slower than the
    disk, so memory would follow the file size; cutting line-aligned blocks ourselves keeps one
    raw block and one parsed table alive at a time. A cut never falls inside a quoted field.
    """
    with pa.input_stream(str(path), compression="detect") as stream:
        carry = b""
        first = True
        while True:
            data = stream.read(block_bytes)
            eof = not data
            buf = carry + data if carry else data
            del data
            view = memoryview(buf)
            if eof:
                block, carry = view, b""
            else:
                cut = _line_cut(buf)
                if cut <= 0:  # a single line longer than the block: read on
                    carry = buf
                    continue
                block, carry = view[:cut], bytes(view[cut:])  # no copy of the block itself
            if len(block) > 4096 or bytes(block).strip():
                read = pa_csv.ReadOptions(column_names=names, skip_rows=1 if first else 0, use_threads=True)
                try:
                    table = pa_csv.read_csv(pa.py_buffer(block), read_options=read, convert_options=convert)
                except pa.ArrowInvalid as exc:
                    raise DataError(f"cannot read CSV ({_short(exc)})", file=name) from None
                first = False
                del block, view, buf
                yield from table.combine_chunks().to_batches()
            if eof:
                return


def _line_cut(buf: bytes) -> int:
    """Position just after the last newline of ``buf`` that is outside quotes (0 if none)."""
    end = len(buf)
    while True:
        nl = buf.rfind(b"\n", 0, end)
        if nl < 0:
            return 0
        if buf.count(b'"', 0, nl) % 2 == 0:
            return nl + 1
        end = nl


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _needed(layout: _Layout) -> list[str]:
    if layout.form == "long":
        return [c for c in (layout.timestamp, layout.tag, layout.value, layout.quality, layout.units) if c is not None]
    cols = [layout.timestamp]
    for vcol, qcol in layout.wide_tags.values():
        cols.append(vcol)
        if qcol is not None:
            cols.append(qcol)
    return list(dict.fromkeys(cols))


# --------------------------------------------------------------------------- parsing
class _Rows:
    """Maps an index into a (possibly filtered) batch to a 1-based data row of the file."""

    def __init__(self, row0: int, positions: np.ndarray | None = None) -> None:
        self.row0 = row0
        self.positions = positions

    def row(self, i: int) -> int:
        return self.row0 + int(i if self.positions is None else self.positions[i]) + 1


def _locate(arr: pa.Array, fn: Any) -> int:
    """Index of the first element on which ``fn`` raises (bisection: O(log n) calls of ``fn``)."""
    lo, hi = 0, len(arr)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            fn(arr.slice(lo, mid - lo))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            hi = mid
        else:
            lo = mid
    return lo


def timestamps_us(arr: pa.Array, spec: ReadOptions, file: str, column: str, rows: _Rows) -> np.ndarray:
    """(n,) int64 microseconds since the epoch (UTC) from any timestamp representation."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        first = int(np.flatnonzero(numpy_array(arr.is_null()))[0])
        raise DataError("missing timestamp", file=file, column=column, row=rows.row(first))
    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    if pa.types.is_timestamp(typ):
        return _from_timestamp(arr, spec, file, column, rows)
    if pa.types.is_date(typ):
        return _from_timestamp(arr.cast(pa.timestamp("s")), spec, file, column, rows)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ):
        unit = spec.columns.timestamp_unit
        if unit is None:
            raise DataError(
                "numeric timestamps need columns.timestamp_unit ('s', 'ms', 'us' or 'ns' since the Unix epoch)",
                file=file, column=column,
            )
        scale = {"s": 1_000_000, "ms": 1_000, "us": 1, "ns": None}[unit]
        if pa.types.is_floating(typ):
            values = numpy_array(arr).astype(np.float64)
            per_us = {"s": 1e6, "ms": 1e3, "us": 1.0, "ns": 1e-3}[unit]
            return np.floor(values * per_us).astype(np.int64)
        values = numpy_array(arr).astype(np.int64)
        return values // 1000 if scale is None else values * scale
    if pa.types.is_string(typ) or pa.types.is_large_string(typ):
        return _from_strings(arr, spec, file, column, rows)
    raise DataError(f"unsupported timestamp type {typ}", file=file, column=column)


def _from_strings(arr: pa.Array, spec: ReadOptions, file: str, column: str, rows: _Rows) -> np.ndarray:
    fmt = spec.columns.timestamp_format
    if fmt is not None:
        parsed = pc.strptime(arr, format=fmt, unit="us", error_is_null=True)
        if parsed.null_count:
            first = int(np.flatnonzero(numpy_array(parsed.is_null()))[0])
            raise DataError(
                f"timestamp {arr[first].as_py()!r} does not match columns.timestamp_format {fmt!r}",
                file=file, column=column, row=rows.row(first),
            )
        return _from_timestamp(parsed, spec, file, column, rows)
    aware, naive = pa.timestamp("ns", "UTC"), pa.timestamp("ns")
    try:
        return _from_timestamp(pc.cast(arr, aware), spec, file, column, rows)
    except pa.ArrowInvalid:
        pass
    # Some element has no zone offset, or is not a timestamp at all: look at the first failure.
    i = _locate(arr, lambda a: pc.cast(a, aware))
    if not _parses(arr.slice(i, 1), naive):
        raise DataError(
            f"cannot parse timestamp {arr[i].as_py()!r}; expected ISO 8601 (e.g. 2024-05-01T12:00:00Z) or set"
            " columns.timestamp_format",
            file=file, column=column, row=rows.row(i),
        )
    try:
        local = pc.cast(arr, naive)
    except pa.ArrowInvalid:
        j = _locate(arr, lambda a: pc.cast(a, naive))
        bad = arr[j].as_py()
        hint = " (the file mixes timestamps with and without zone offsets)" if _parses(arr.slice(j, 1), aware) else ""
        raise DataError(
            f"cannot parse timestamp {bad!r}{hint}; expected ISO 8601 or columns.timestamp_format",
            file=file, column=column, row=rows.row(j),
        ) from None
    return _from_timestamp(local, spec, file, column, rows)


def _parses(arr: pa.Array, typ: pa.DataType) -> bool:
    try:
        pc.cast(arr, typ)
    except pa.ArrowInvalid:
        return False
    return True


def _from_timestamp(arr: pa.Array, spec: ReadOptions, file: str, column: str, rows: _Rows) -> np.ndarray:
    typ = arr.type
    if typ.tz is None:
        if spec.timezone is None:
            raise DataError(
                "timestamps have no time zone; set 'timezone' in the spec (e.g. UTC or Europe/Berlin)"
                " or export them in UTC with an offset",
                file=file, column=column,
            )
        if spec.timezone not in ("UTC", "Etc/UTC"):
            try:
                arr = pc.assume_timezone(arr, timezone=spec.timezone, ambiguous=spec.ambiguous, nonexistent="raise")
            except pa.ArrowInvalid as exc:
                i = _locate(arr, lambda a: pc.assume_timezone(a, timezone=spec.timezone, ambiguous=spec.ambiguous,
                                                               nonexistent="raise"))
                what = "ambiguous (DST fall-back; set 'ambiguous' or export UTC)" if "mbiguous" in str(exc) else (
                    "non-existent (DST spring-forward gap)")
                raise DataError(
                    f"local time {arr[i].as_py()} is {what} in {spec.timezone}",
                    file=file, column=column, row=rows.row(i),
                ) from None
    values = numpy_array(arr.cast(pa.int64()))
    unit = typ.unit
    if unit == "ns":
        return np.floor_divide(values, 1000)
    if unit == "us":
        return values.astype(np.int64, copy=False)
    if unit == "ms":
        return values * 1000
    return values * 1_000_000


def _numeric_values(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 with NaN where missing or text, is_text bool) for a value column slice."""
    typ = arr.type
    if pa.types.is_dictionary(typ):
        arr = arr.cast(typ.value_type)
        typ = arr.type
    n = len(arr)
    if pa.types.is_integer(typ) or pa.types.is_floating(typ) or pa.types.is_boolean(typ) or pa.types.is_decimal(typ):
        return numpy_array(arr.cast(pa.float64())), np.zeros(n, bool)
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        arr = arr.cast(pa.string())
    try:
        values = pc.cast(arr, pa.float64())
        text = np.zeros(n, dtype=bool)
    except pa.ArrowInvalid:
        # Digital states start with a letter: a one-character test is cheap; the full number
        # pattern is the fallback for odd strings ("1.2.3").
        for pattern, is_text in ((_TEXT_START_RE, True), (_NUMERIC_RE, False)):
            hit = pc.match_substring_regex(arr, pattern)
            keep = pc.invert(hit) if is_text else hit
            try:
                values = pc.cast(pc.if_else(keep, arr, pa.nulls(n, pa.string())), pa.float64())
            except pa.ArrowInvalid:
                continue
            text = ~numpy_array(keep, fill=True)
            break
    return numpy_array(values), text


def _strings(arr: pa.Array) -> list[str | None]:
    if pa.types.is_dictionary(arr.type):
        arr = arr.cast(arr.type.value_type)
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        if pa.types.is_floating(arr.type):
            # Batch ids stored as floats (1001.0) should read as "1001".
            values = numpy_array(arr)
            return [None if np.isnan(v) else (str(int(v)) if float(v).is_integer() else str(v)) for v in values]
        arr = arr.cast(pa.string())
    return [None if s is None else s.strip() for s in arr.to_pylist()]


class QualityMap:
    """Maps source quality codes to GOOD/UNCERTAIN/BAD per the spec's quality policy."""

    def __init__(self, spec: ReadOptions) -> None:
        q = spec.quality
        self.explicit: dict[str, int] = {}
        for cls, codes in ((GOOD, q.good), (UNCERTAIN, q.uncertain), (BAD, q.bad)):
            for code in codes:
                self.explicit[str(code).strip().lower()] = cls
        self.scheme = q.numeric_codes
        self.unknown_is_bad = q.unknown == "bad"
        self.cache: dict[Any, int | None] = {}

    def classify(self, code: Any) -> int | None:
        """The class of one code, or None when no rule knows it."""
        if code is None:
            return GOOD
        if code in self.cache:
            return self.cache[code]
        key = str(code).strip().lower()
        result: int | None
        if key in self.explicit:
            result = self.explicit[key]
        elif key == "":
            result = GOOD
        else:
            number = _as_int(code)
            if number is not None:
                result = self._numeric(number)
            elif key.startswith(_TEXT_GOOD):
                result = GOOD
            elif key.startswith(_TEXT_UNCERTAIN):
                result = UNCERTAIN
            elif key.startswith(_TEXT_BAD):
                result = BAD
            else:
                result = BAD if self.unknown_is_bad else None
        self.cache[code] = result
        return result

    def _numeric(self, number: int) -> int:
        if self.scheme == "opcda":
            bits = number & 0xC0
            return GOOD if bits == 0xC0 else UNCERTAIN if bits == 0x40 else BAD
        severity = (number & 0xFFFFFFFF) >> 30
        return GOOD if severity == 0 else UNCERTAIN if severity == 1 else BAD

    def classes(self, arr: pa.Array, file: str, column: str, rows: _Rows) -> np.ndarray:
        """(n,) uint8 quality class per row; DataError naming the first unknown code."""
        typ = arr.type
        if pa.types.is_integer(typ):
            ints = numpy_array(arr, fill=0).astype(np.int64)
            uniq, inverse = np.unique(ints, return_inverse=True)
            table = np.array([self._numeric(int(u)) for u in uniq], dtype=np.uint8)
            out = table[inverse]
            if arr.null_count:
                out[numpy_array(arr.is_null())] = GOOD
            return out
        if not pa.types.is_dictionary(typ):
            if pa.types.is_floating(typ):
                arr = arr.cast(pa.int64(), safe=False)
                return self.classes(arr, file, column, rows)
            arr = pc.dictionary_encode(arr.cast(pa.string()))
        dictionary = arr.dictionary.to_pylist()
        table = np.empty(len(dictionary), dtype=np.uint8)
        for i, code in enumerate(dictionary):
            cls = self.classify(code)
            if cls is None:
                indices = numpy_array(arr.indices)
                row = int(np.flatnonzero(indices == i)[0])
                raise DataError(
                    f"unknown quality code {code!r}; map it under quality.good / quality.uncertain / quality.bad"
                    " or set quality.unknown: bad",
                    file=file, column=column, row=rows.row(row),
                )
            table[i] = cls
        indices = numpy_array(arr.indices, fill=0)
        out = table[indices] if len(table) else np.zeros(len(arr), np.uint8)
        if arr.null_count:
            out[numpy_array(arr.is_null())] = GOOD
        return out


def _as_int(code: Any) -> int | None:
    if isinstance(code, (int, np.integer)) and not isinstance(code, bool):
        return int(code)
    if isinstance(code, float) and code.is_integer():
        return int(code)
    text = str(code).strip().lower()
    try:
        return int(text, 16) if text.startswith("0x") else int(text)
    except ValueError:
        return None


# --------------------------------------------------------------------------- the chunk reader
class ChunkReader:
    """Iterates :class:`SampleChunk`\\ s of a source for one spec, filling :class:`ReadStats`."""

    def __init__(self, source: Any, spec: ReadOptions, registry: TagRegistry) -> None:
        self.parts = source_parts(source)
        self.spec = spec
        self.registry = registry
        self.quality = QualityMap(spec)
        self.sentinels = np.asarray(spec.quality.sentinels, dtype=np.float64)
        self.keep_uncertain = spec.quality.keep_uncertain
        self.stats = ReadStats()

    def __iter__(self) -> Iterator[SampleChunk]:
        self.stats = ReadStats(per_tag={t.tag: TagStats() for t in self.registry.tags})
        for part in self.parts:
            self.stats.files.append(part.name)
            layout, batches = _arrow_batches(part, self.spec, self.registry)
            row0 = 0
            for batch in batches:
                n = batch.num_rows
                self.stats.rows_read += n
                chunk = self._long(batch, layout, part.name, row0) if layout.form == "long" else self._wide(
                    batch, layout, part.name, row0)
                row0 += n
                if chunk is not None and len(chunk.ts):
                    self.stats.rows_used += len(chunk.ts)
                    yield chunk

    # ------------------------------------------------------------------ long
    def _long(self, batch: pa.RecordBatch, layout: _Layout, file: str, row0: int) -> SampleChunk | None:
        tag_col = batch.column(layout.tag)
        if not pa.types.is_dictionary(tag_col.type):
            tag_col = pc.dictionary_encode(tag_col.cast(pa.string()))
        names = tag_col.dictionary.to_pylist()
        if len(self.stats.tags_seen) < _MAX_TAGS_SEEN:
            self.stats.tags_seen.update(str(n).strip() for n in names if n is not None)
        mapping = np.array([self.registry.lookup(str(n).strip()) if n is not None else -1 for n in names] + [-1],
                           dtype=np.int16)
        indices = numpy_array(tag_col.indices, fill=len(names))
        tag_idx = mapping[indices]
        known = tag_idx >= 0
        rows = np.flatnonzero(known)
        if len(rows) == 0:
            return None
        tag_idx = tag_idx[rows]
        sub = batch if len(rows) == batch.num_rows else batch.filter(arrow_array(known))
        where = _Rows(row0, None if sub is batch else rows)
        ts = timestamps_us(sub.column(layout.timestamp), self.spec, file, layout.timestamp, where)
        qual = (self.quality.classes(sub.column(layout.quality), file, layout.quality, where)
                if layout.quality is not None else np.zeros(len(rows), np.uint8))
        value_col = sub.column(layout.value)
        values = np.empty(len(rows), dtype=np.float64)
        text_rows = self.registry.is_text[tag_idx]
        numeric_pos = np.flatnonzero(~text_rows) if text_rows.any() else None
        num_arr = value_col if numeric_pos is None else value_col.take(arrow_array(numeric_pos))
        num_values, is_text = _numeric_values(num_arr)
        num_tags = tag_idx if numeric_pos is None else tag_idx[numeric_pos]
        if is_text.any():
            self._tally_text(num_arr, is_text, num_tags)
        if numeric_pos is None:
            values[:] = num_values
        else:
            values[numeric_pos] = num_values
            text_pos = np.flatnonzero(text_rows)
            values[text_pos] = self._label_codes(value_col.take(arrow_array(text_pos)), tag_idx[text_pos])
        if layout.units is not None:
            self._tally_units(sub.column(layout.units), tag_idx)
        return self._finish(ts, tag_idx, values, qual, ~text_rows)

    # ------------------------------------------------------------------ wide
    def _wide(self, batch: pa.RecordBatch, layout: _Layout, file: str, row0: int) -> SampleChunk | None:
        ts_all = timestamps_us(batch.column(layout.timestamp), self.spec, file, layout.timestamp, _Rows(row0))
        self.stats.tags_seen.update(layout.wide_tags)
        parts_ts, parts_tag, parts_val, parts_q, parts_num = [], [], [], [], []
        for tag, (vcol, qcol) in layout.wide_tags.items():
            idx = self.registry.index[tag]
            col = batch.column(vcol)
            present = np.flatnonzero(~numpy_array(col.is_null())) if col.null_count else None
            arr = col if present is None else col.take(arrow_array(present))
            rows = np.arange(len(col)) if present is None else present
            tags = np.full(len(rows), idx, dtype=np.int16)
            if self.registry.is_text[idx]:
                vals = self._label_codes(arr, tags)
            else:
                vals, is_text = _numeric_values(arr)
                if is_text.any():
                    self._tally_text(arr, is_text, tags)
            if qcol is not None:
                qarr = batch.column(qcol)
                q = self.quality.classes(qarr if present is None else qarr.take(arrow_array(present)), file, qcol,
                                         _Rows(row0, present))
            else:
                q = np.zeros(len(rows), np.uint8)
            parts_ts.append(ts_all[rows])
            parts_tag.append(tags)
            parts_val.append(vals)
            parts_q.append(q)
            parts_num.append(np.full(len(rows), not self.registry.is_text[idx]))
        if not parts_ts:
            return None
        return self._finish(np.concatenate(parts_ts), np.concatenate(parts_tag), np.concatenate(parts_val),
                            np.concatenate(parts_q), np.concatenate(parts_num))

    # ------------------------------------------------------------------ shared
    def _finish(self, ts: np.ndarray, tag_idx: np.ndarray, values: np.ndarray, qual: np.ndarray,
                numeric: np.ndarray) -> SampleChunk:
        n_tags = len(self.registry)
        missing = np.isnan(values)
        sentinel = np.isin(values, self.sentinels) if len(self.sentinels) else np.zeros(len(values), bool)
        out_of_range = numeric & ((values < self.registry.vmin[tag_idx]) | (values > self.registry.vmax[tag_idx]))
        qual = qual.copy()
        qual[missing | sentinel | out_of_range | ~np.isfinite(values)] = BAD
        unusable = qual == BAD if self.keep_uncertain else qual != GOOD
        values = np.where(unusable, np.nan, values)
        tags = tag_idx.astype(np.int64)
        counts = np.bincount(tags * 3 + qual, minlength=3 * n_tags).reshape(n_tags, 3).T
        sent = np.bincount(tags[sentinel], minlength=n_tags) if sentinel.any() else np.zeros(n_tags, np.int64)
        oor_rows = out_of_range & ~sentinel
        oor = np.bincount(tags[oor_rows], minlength=n_tags) if oor_rows.any() else np.zeros(n_tags, np.int64)
        for i in np.flatnonzero(counts.sum(axis=0)):
            st = self.stats.per_tag.setdefault(self.registry.tags[i].tag, TagStats())
            st.good += int(counts[0][i])
            st.uncertain += int(counts[1][i])
            st.bad += int(counts[2][i])
            st.samples += int(counts[0][i] + counts[1][i] + counts[2][i])
            st.sentinels += int(sent[i])
            st.out_of_range += int(oor[i])
        ts = ts.astype(np.int64, copy=False)
        if self.registry.offset_us is not None:
            ts = ts + self.registry.offset_us[tag_idx]
        return SampleChunk(ts=ts, tag=tag_idx.astype(np.int16, copy=False), value=values)

    def _tally_text(self, arr: pa.Array, is_text: np.ndarray, tags: np.ndarray) -> None:
        pos = np.flatnonzero(is_text)
        texts = _strings(arr.take(arrow_array(pos)))
        for t, text in zip(tags[pos].tolist(), texts):
            counter = self.stats.per_tag.setdefault(self.registry.tags[t].tag, TagStats()).text_states
            key = text if (text in counter or len(counter) < _MAX_TEXT_STATES) else "<other text>"
            counter[key] += 1

    def _label_codes(self, arr: pa.Array, tags: np.ndarray) -> np.ndarray:
        labels = _strings(arr)
        out = np.empty(len(labels), dtype=np.float64)
        for i, (t, label) in enumerate(zip(tags.tolist(), labels)):
            out[i] = np.nan if label is None or label == "" else self.registry.tags[t].code(normalise_label(label))
        return out

    def _tally_units(self, arr: pa.Array, tags: np.ndarray) -> None:
        if not pa.types.is_dictionary(arr.type):
            arr = pc.dictionary_encode(arr.cast(pa.string()))
        names = arr.dictionary.to_pylist()
        codes = numpy_array(arr.indices, fill=-1).astype(np.int64)
        counts = np.bincount(tags.astype(np.int64) * (len(names) + 1) + codes + 1,
                             minlength=len(self.registry) * (len(names) + 1))
        for key in np.flatnonzero(counts).tolist():
            count = counts[key]
            t, code = divmod(key, len(names) + 1)
            if code == 0:
                continue
            unit = names[code - 1]
            if unit is not None and str(unit).strip():
                self.stats.per_tag.setdefault(self.registry.tags[t].tag, TagStats()).units[str(unit).strip()] += int(count)
