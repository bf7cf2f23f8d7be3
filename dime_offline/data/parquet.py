"""Canonical Parquet: read in record batches straight to numpy, write atomically.

A dataset is one ``.parquet`` file or a directory whose ``*.parquet`` files (sorted by name) are
read one after another; every file must have the same columns, widths and ``dime`` metadata.
The schema is documented in ``docs/data-format.md``; wide files (``obs.<name>`` columns, as
written by ``TransitionData.to_wide().to_parquet(...)``) are read as well.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dime_offline.data.arrow import (
    ROW_GROUP_ROWS,
    VECTOR_FIELDS,
    ArrowLayout,
    batch_to_transitions,
    resolve_layout,
    transitions_to_table,
)
from dime_offline.data.schema import DatasetMetadata, TransitionData, empty_like_schema
from dime_offline.errors import DataError, DatasetNotFoundError, SchemaError
from dime_offline.io import atomic_path, broken_link_reason

PathLike = str | os.PathLike[str]


def parquet_files(path: PathLike) -> list[Path]:
    """The files of a Parquet dataset: the file itself, or a directory's ``*.parquet`` in sorted order.

    A link among a directory's files that leads nowhere is an error, not skipped: skipping it would
    train on part of the data without a word.
    """
    path = Path(path)
    if path.is_dir():
        candidates = sorted(path.glob("*.parquet"))
        for candidate in candidates:
            reason = broken_link_reason(candidate)
            if reason is not None:
                raise DatasetNotFoundError(f"dataset file {reason}", file=str(candidate))
        files = [p for p in candidates if p.is_file()]
        if not files:
            raise DatasetNotFoundError("directory holds no *.parquet files", file=str(path))
        return files
    if not path.exists():
        raise DatasetNotFoundError("no such file or directory", file=str(path))
    return [path]


def _open(file: Path) -> pq.ParquetFile:
    try:
        # pre_buffer=False: pyarrow's default pre-buffering keeps the whole compressed file in memory
        # while streaming record batches; memory-mapping lets the OS page the file instead.
        return pq.ParquetFile(file, pre_buffer=False, memory_map=True)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"not a readable Parquet file (corrupt or truncated?): {_short(exc)}", file=str(file)) from None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200]


def _layout(pf: pq.ParquetFile, file: Path, columns: Sequence[str] | None) -> ArrowLayout:
    schema = pf.schema_arrow
    first = None
    needs_peek = any(
        (pa.types.is_list(schema.field(n).type) or pa.types.is_large_list(schema.field(n).type))
        for n in VECTOR_FIELDS if n in schema.names
    )
    if needs_peek and pf.metadata.num_rows:
        list_cols = [n for n in VECTOR_FIELDS if n in schema.names]
        try:
            first = next(pf.iter_batches(batch_size=1024, columns=list_cols))
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"cannot read Parquet data (corrupt or truncated?): {_short(exc)}", file=str(file)) from None
    return resolve_layout(schema, file=str(file), first=first, columns=columns)


def _dataset_layouts(path: PathLike, columns: Sequence[str] | None) -> list[tuple[Path, pq.ParquetFile, ArrowLayout]]:
    """Open every file and check that they agree with the first one."""
    opened = []
    for file in parquet_files(path):
        pf = _open(file)
        opened.append((file, pf, _layout(pf, file, columns)))
    first_file, _, first = opened[0]
    for file, _, layout in opened[1:]:
        for what in ("obs_dim", "action_dim", "vector_columns", "optional"):
            if getattr(layout, what) != getattr(first, what):
                raise SchemaError(
                    f"{what} {getattr(layout, what)!r} differs from {getattr(first, what)!r} in {first_file.name};"
                    " all files of a dataset directory need the same columns",
                    file=str(file),
                )
        if layout.metadata != first.metadata:
            raise SchemaError(
                f"dataset metadata differs from that of {first_file.name}; all files of a dataset directory"
                " need the same 'dime' metadata",
                file=str(file),
            )
    return opened


def read_parquet_metadata(path: PathLike) -> tuple[DatasetMetadata, int, int, int]:
    """``(metadata, obs_dim, action_dim, num_rows)`` of a Parquet file or directory, reading no row data.

    (Except one row when vectors are stored as variable-size lists, to learn their width.)
    """
    opened = _dataset_layouts(path, None)
    layout = opened[0][2]
    num_rows = sum(pf.metadata.num_rows for _, pf, _ in opened)
    return layout.metadata, layout.obs_dim, layout.action_dim, int(num_rows)


def iter_parquet_chunks(
    path: PathLike, *, batch_rows: int = ROW_GROUP_ROWS, columns: Sequence[str] | None = None
) -> Iterator[TransitionData]:
    """Yield the rows of a Parquet file or directory as :class:`TransitionData` chunks of <= batch_rows rows.

    ``columns`` selects which *optional* columns (``timestamp``, ``obs_valid``, ``action_valid``, ``episode_key``)
    to read; the required ones are always read. None reads every optional column present.
    Fixed-size float32 list columns without nulls are zero-copy views of Arrow memory
    (read-only arrays); copy them before writing into them. Chunks are not validated as a whole:
    call :meth:`TransitionData.validate` on the concatenation (or let the replay store do it).
    """
    if batch_rows <= 0:
        raise ValueError(f"batch_rows must be positive, got {batch_rows}")
    return _iter_opened(_dataset_layouts(path, columns), batch_rows)


def _iter_opened(
    opened: list[tuple[Path, pq.ParquetFile, ArrowLayout]], batch_rows: int
) -> Iterator[TransitionData]:
    for file, pf, layout in opened:
        row_offset = 0
        try:
            batches = pf.iter_batches(batch_size=batch_rows, columns=layout.read_columns())
            for batch in batches:
                yield batch_to_transitions(batch, layout, file=str(file), row_offset=row_offset)
                row_offset += batch.num_rows
        except (pa.ArrowException, OSError) as exc:
            raise DataError(
                f"cannot read Parquet data after row {row_offset} (corrupt or truncated?): {_short(exc)}",
                file=str(file),
            ) from None


def read_parquet(path: PathLike, *, columns: Sequence[str] | None = None) -> tuple[TransitionData, list[str]]:
    """Read a whole Parquet dataset into one :class:`TransitionData` plus notes (ignored columns).

    The result is not validated; :func:`dime_offline.data.load.load_dataset` does that.
    """
    opened = _dataset_layouts(path, columns)
    layout = opened[0][2]
    chunks = list(_iter_opened(opened, ROW_GROUP_ROWS))
    notes = []
    if layout.ignored:
        notes.append(f"ignored non-canonical column(s): {', '.join(layout.ignored)}")
    if not chunks:
        return empty_like_schema(layout.obs_dim, layout.action_dim, layout.metadata), notes
    return TransitionData.concatenate(chunks), notes


def write_parquet(
    data: TransitionData,
    path: PathLike,
    *,
    row_group_rows: int = ROW_GROUP_ROWS,
    rows_per_file: int | None = None,
) -> Path:
    """Write ``data`` as canonical Parquet (zstd), atomically; returns the path written.

    With ``rows_per_file`` the target is a directory of ``part-00000.parquet``... files, split at
    episode boundaries (a file may exceed the limit by one episode); otherwise a single file.
    """
    path = Path(path)
    table = transitions_to_table(data)
    with atomic_path(path) as tmp:
        if rows_per_file is None:
            pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_rows)
        else:
            tmp.mkdir()
            for i, (start, stop) in enumerate(_file_slices(data, rows_per_file)):
                pq.write_table(
                    table.slice(start, stop - start), tmp / f"part-{i:05d}.parquet",
                    compression="zstd", row_group_size=row_group_rows,
                )
    return path


def _file_slices(data: TransitionData, rows_per_file: int) -> list[tuple[int, int]]:
    """Row ranges of about ``rows_per_file`` rows that never split an episode."""
    if rows_per_file <= 0:
        raise ValueError(f"rows_per_file must be positive, got {rows_per_file}")
    n = len(data)
    ends = np.concatenate([data.episode_starts()[1:], [n]]) if n else np.zeros(0, np.int64)
    slices: list[tuple[int, int]] = []
    start = 0
    for end in ends:
        if end - start >= rows_per_file:
            slices.append((start, int(end)))
            start = int(end)
    if start < n or not slices:
        slices.append((start, n))
    return slices
