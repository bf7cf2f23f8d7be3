"""`numpy_array`, `arrow_array` and `string_array` move columns between Arrow and numpy through the
buffers (pyarrow's own conversions import pandas): they must give what pyarrow gives."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from dime_offline.data.arrow import arrow_array, numpy_array, string_array

NUMBER_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64(),
                pa.float16(), pa.float32(), pa.float64()]


def _column(arrow_type: pa.DataType, with_nulls: bool) -> pa.Array:
    """17 values (more than two bytes of bits), every third one null if asked, sliced to a nonzero offset."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 100, 20).tolist() if not pa.types.is_boolean(arrow_type) else (rng.random(20) < 0.5).tolist()
    if with_nulls:
        values = [None if i % 3 == 1 else v for i, v in enumerate(values)]
    return pa.array(values, arrow_type).slice(3)


@pytest.mark.parametrize("with_nulls", [False, True])
@pytest.mark.parametrize("arrow_type", NUMBER_TYPES + [pa.bool_()], ids=str)
def test_numpy_array_gives_what_pyarrow_gives(arrow_type: pa.DataType, with_nulls: bool) -> None:
    col = _column(arrow_type, with_nulls)
    expected = col.to_numpy(zero_copy_only=False)
    got = numpy_array(col)
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)  # NaN where null (None in bool object arrays)
    np.testing.assert_array_equal(numpy_array(pa.chunked_array([col.slice(0, 5), col.slice(5)])), expected)


@pytest.mark.parametrize("arrow_type", NUMBER_TYPES + [pa.bool_()], ids=str)
def test_nulls_take_the_fill_value_in_the_array_dtype(arrow_type: pa.DataType) -> None:
    col = _column(arrow_type, with_nulls=True)
    fill = True if pa.types.is_boolean(arrow_type) else 7
    got = numpy_array(col, fill=fill)
    nulls = col.is_null().to_numpy(zero_copy_only=False)
    assert got.dtype == arrow_type.to_pandas_dtype() and got.flags.writeable
    assert (got[nulls] == fill).all()
    np.testing.assert_array_equal(got[~nulls], np.asarray(col.drop_null().to_pylist(), got.dtype))
    no_nulls = _column(arrow_type, with_nulls=False)
    np.testing.assert_array_equal(numpy_array(no_nulls, fill=fill), no_nulls.to_numpy(zero_copy_only=False))


def test_number_views_are_read_only_and_empty_arrays_keep_their_dtype() -> None:
    view = numpy_array(_column(pa.float32(), with_nulls=False))
    assert not view.flags.writeable
    assert numpy_array(pa.array([], pa.int16())).dtype == np.int16
    assert numpy_array(pa.array([], pa.bool_())).dtype == np.bool_


def test_arrow_array_and_string_array_match_pa_array() -> None:
    positions = np.array([4, 0, 2], dtype=np.int64)
    assert arrow_array(positions).equals(pa.array(positions))
    flags = np.array([True, False, True, True, False, False, True, False, True])
    assert arrow_array(flags).equals(pa.array(flags))
    texts = ["TI-101.PV", None, "", "mol/L", "Bad Input", None]
    built = string_array(texts)
    assert built.equals(pa.array(texts, pa.string())) and built.null_count == 2
    assert string_array(["a", "b"]).null_count == 0
