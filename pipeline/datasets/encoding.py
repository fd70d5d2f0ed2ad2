"""The two ways a run root stores a float16 vector in a binary column (pyarrow 14 and Spark 3.5 have no half float).

- **NdarrayCodec** (features/, epochs/): each value is ``np.save`` bytes of float16[D], a ``.npy``
  header then the values, which Petastorm's NdarrayCodec decodes (the trainer's graph slices the
  header off, the same length on every row, and bitcasts the rest).
- **raw** (index/ embeddings): each value is just the little-endian float16[d] (2·d bytes).

Every row of a column holds one dtype and shape, so both are encoded and decoded for a whole
column at once, over its one values buffer.
"""
from __future__ import annotations

import io

import numpy as np
import pyarrow as pa


def _fixed_rows(column: pa.Array) -> np.ndarray:
    """A binary column whose values all have one length -> uint8[N, length], a view of its buffer."""
    column = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(column)
    if column.null_count:
        raise ValueError("feature column holds nulls")
    if n == 0:
        return np.zeros((0, 0), np.uint8)
    offsets = np.frombuffer(column.buffers()[1], dtype=np.int32, count=n + 1, offset=column.offset * 4)
    lengths = np.diff(offsets)
    if np.any(lengths != lengths[0]):
        raise ValueError("feature arrays differ in size; expected one dtype and shape for every image")
    return np.frombuffer(column.buffers()[2], dtype=np.uint8, count=n * int(lengths[0]),
                         offset=int(offsets[0])).reshape(n, int(lengths[0]))


def _binary(rows: np.ndarray) -> pa.BinaryArray:
    """uint8[N, length] -> N binary values of ``length`` bytes each, without a copy per row."""
    n, length = rows.shape
    offsets = np.arange(n + 1, dtype=np.int32) * length
    return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(rows))])


def encode_ndarray(values: np.ndarray) -> pa.BinaryArray:
    """float[N, D] -> N values of Petastorm's NdarrayCodec for float16[D] (``np.save`` bytes).

    Every row's ``.npy`` header is the same, so it is written once and repeated; the bytes equal
    ``NdarrayCodec().encode(field, row.astype(np.float16))`` for each row.
    """
    values = np.ascontiguousarray(values, dtype="<f2")
    n, dim = values.shape
    header = io.BytesIO()
    np.save(header, np.zeros(dim, dtype="<f2"))
    header = np.frombuffer(header.getvalue()[:-2 * dim], dtype=np.uint8)
    rows = np.empty((n, header.size + 2 * dim), dtype=np.uint8)
    rows[:, :header.size] = header
    rows[:, header.size:] = values.view(np.uint8).reshape(n, 2 * dim)
    return _binary(rows)


def decode_ndarray(column: pa.Array) -> np.ndarray:
    """NdarrayCodec values (one ``.npy`` array per row, one dtype and shape) -> float16[N, D].

    The header is read once, from the first row, with numpy's public ``np.load``.

    Raises:
        ValueError: nulls, rows of different sizes, or values that are not such arrays.
    """
    rows = _fixed_rows(column)
    if len(rows) == 0:
        return np.zeros((0, 0), np.float16)
    first = np.load(io.BytesIO(rows[0].tobytes()), allow_pickle=False)
    header = rows.shape[1] - first.nbytes
    if first.ndim != 1 or header <= 0:
        raise ValueError("feature values are not Petastorm NdarrayCodec (np.save) arrays of one dimension")
    return np.ascontiguousarray(rows[:, header:]).view(first.dtype).astype(np.float16, copy=False)


def encode_raw(values: np.ndarray) -> pa.BinaryArray:
    """float[N, d] -> N binary values of raw little-endian float16[d] (2·d bytes each, no header)."""
    values = np.ascontiguousarray(values, dtype="<f2")
    return _binary(values.view(np.uint8).reshape(len(values), -1))


def decode_raw(column: pa.Array) -> np.ndarray:
    """Raw little-endian float16 values (:func:`encode_raw`) -> float16[N, d]."""
    rows = _fixed_rows(column)
    return np.ascontiguousarray(rows).view("<f2").astype(np.float16, copy=False)
