"""Latency histograms that merge: logarithmic buckets with bounded relative error.

A duration ``x`` (microseconds) falls in bucket ``ceil(log(x) / log(GAMMA))``;
every value in a bucket is within ``ALPHA`` (about 1 %) of the bucket's
representative value, so any quantile read from the histogram is within about
1 % of the true order statistic, however many histograms were merged — the
DDSketch construction. Merging is adding counts per bucket, which makes
histograms of different minutes, collectors and processing runs combine
exactly.

Histograms are sparse: a few dozen non-empty buckets for a business
transaction's minute. They are stored as compact bytes (:func:`encode`) that
numpy reads without a Python loop, so a query can merge thousands of them
quickly (:func:`merge_many`).
"""

from __future__ import annotations

import array
import math
import struct
import sys
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import numpy.typing as npt

GAMMA = 1.02
ALPHA = (GAMMA - 1) / (GAMMA + 1)  # ~0.0099: the relative error bound
_LOG_GAMMA = math.log(GAMMA)
# Bucket 0 holds everything up to 1 µs; the top bucket is reached near 2.7 hours
# (x = GAMMA ** 1200 µs) and holds everything longer.
MAX_BUCKET = 1200
STRIDE = 2048  # bucket indexes per dimension in a multi-dimensional histogram

# Stored form: an 8-byte header (magic, version, number of buckets), then one
# little-endian 64-bit word per non-empty bucket: the bucket key in the top 16
# bits, its count in the low 48. Fixed-size words let a query read thousands of
# stored histograms, concatenated, as a single numpy array.
_MAGIC = b"tsh"
_VERSION = 2
_HEADER = struct.Struct("<3sBI")
_HEADER_LOW = int.from_bytes(_MAGIC + bytes([_VERSION]), "little")  # a header word's lower half
_COUNT_BITS = 48
_COUNT_MASK = (1 << _COUNT_BITS) - 1

Counts = dict[int, int]


def bucket(micros: float) -> int:
    """The bucket index of a duration in microseconds."""
    if micros <= 1:
        return 0
    index = math.ceil(math.log(micros) / _LOG_GAMMA)
    return index if index < MAX_BUCKET else MAX_BUCKET


def value(index: int) -> float:
    """The representative duration (µs) of a bucket: within ALPHA of every value in it."""
    return 1.0 if index == 0 else 2 * GAMMA**index / (GAMMA + 1)


def add(counts: Counts, micros: float, weight: int = 1, dimension: int = 0) -> None:
    """Count one duration (in the given dimension of a multi-dimensional histogram)."""
    key = dimension * STRIDE + bucket(micros)
    counts[key] = counts.get(key, 0) + weight


def merge_into(target: Counts, other: Mapping[int, int]) -> None:
    for key, count in other.items():
        target[key] = target.get(key, 0) + count


def encode(counts: Mapping[int, int]) -> bytes:
    """The stored form of a histogram (see the module's notes on the format)."""
    keys = sorted(key for key, count in counts.items() if count)
    words = (np.asarray(keys, dtype=np.uint64) << np.uint64(_COUNT_BITS)) | np.asarray(
        [min(counts[key], _COUNT_MASK) for key in keys], dtype=np.uint64
    )
    return _HEADER.pack(_MAGIC, _VERSION, len(keys)) + words.astype("<u8").tobytes()


def _words(data: bytes) -> npt.NDArray[np.uint64]:
    magic, version, size = _HEADER.unpack_from(data)
    if magic != _MAGIC or version != _VERSION or len(data) != _HEADER.size + 8 * size:
        raise ValueError("not a tierscope histogram (or an unknown version of one)")
    return np.frombuffer(data, dtype="<u8", offset=_HEADER.size)


def decode_arrays(data: bytes) -> tuple[npt.NDArray[np.uint64], npt.NDArray[np.uint64]]:
    words = _words(data)
    return words >> np.uint64(_COUNT_BITS), words & np.uint64(_COUNT_MASK)


def decode(data: bytes) -> Counts:
    keys, values = decode_arrays(data)
    return dict(zip(keys.tolist(), values.tolist(), strict=True))


class Merged:
    """Many encoded histograms merged per group (e.g. per business transaction).

    Built in one vectorised pass: every stored histogram is concatenated and
    read as one array of words, and the counts are summed into a dense
    ``groups x buckets`` array with a single ``bincount``. No per-row numpy
    work and no sort is what lets a query over thousands of stored rows
    answer in milliseconds. The array has a column per bucket that some group
    uses, not per possible bucket: a nine-tier histogram over hundreds of
    points of a series stays a few megabytes.
    """

    def __init__(self, groups: Iterable[int], encoded: Iterable[bytes]) -> None:
        blobs = list(encoded)
        group_of_blob = list(groups)
        self._dense: npt.NDArray[np.float64] = np.zeros((0, 0))
        # The key of each column (dimension * STRIDE + bucket), increasing.
        self._keys: npt.NDArray[np.int64] = np.zeros(0, dtype=np.int64)
        if not blobs:
            return
        # A blob may hold several histograms back to back (SQL's string_agg of
        # stored ones): walk the headers. The walk is the one sequential step, so
        # it reads each header's bucket count (its upper 32 bits) from an array
        # of 32-bit halves and leaves every check to numpy afterwards.
        if len(group_of_blob) != len(blobs):
            raise ValueError(f"{len(group_of_blob)} groups for {len(blobs)} histograms")
        if any(len(blob) % 8 for blob in blobs):
            raise ValueError("not a tierscope histogram (or an unknown version of one)")
        joined = b"".join(blobs)
        words = np.frombuffer(joined, dtype="<u8")
        halves: Sequence[int] = memoryview(joined).cast("I")  # no copy
        if sys.byteorder != "little":
            swapped = array.array("I", joined)
            swapped.byteswap()
            halves = swapped
        heads: list[int] = []
        position, total = 0, len(words)
        while position < total:
            heads.append(position)
            position += halves[2 * position + 1] + 1
        headers = np.asarray(heads, dtype=np.int64)
        sizes = (words[headers] >> np.uint64(32)).astype(np.int64) + 1  # words, header included
        blob_starts = np.cumsum([0] + [len(blob) // 8 for blob in blobs])
        owner_blob = np.searchsorted(blob_starts, headers, side="right") - 1
        starts = blob_starts[:-1][np.diff(blob_starts) > 0]  # of the non-empty blobs
        found = np.searchsorted(headers, starts)
        if (
            position != total
            or np.any(words[headers] & np.uint64(0xFFFFFFFF) != _HEADER_LOW)
            or np.any(headers + sizes > blob_starts[owner_blob + 1])  # ran past its blob
            or np.any(found >= len(headers))
            or np.any(headers[np.minimum(found, len(headers) - 1)] != starts)  # a blob not starting with one
        ):
            raise ValueError("not a tierscope histogram (or an unknown version of one)")
        # Every word is read in place, headers included, with a count of 0 for
        # headers: no copy of the words without them. The key is the top 16 bits
        # of a little-endian word, its fourth 16-bit half.
        keys = words.view("<u2")[3::4]  # dimension * STRIDE + bucket
        counts = (words & np.uint64(_COUNT_MASK)).astype(np.float64)
        counts[headers] = 0.0
        owners_per_blob = np.asarray(group_of_blob, dtype=np.int64)
        owners = np.repeat(owners_per_blob[owner_blob], sizes)
        # Only the columns some group uses (a stored bucket never counts 0), found without a sort.
        used = np.bincount(keys, weights=counts, minlength=1) > 0
        self._keys = np.flatnonzero(used)
        column = np.maximum(np.cumsum(used) - 1, 0)  # (headers' keys, unused, go to column 0 with 0)
        width = max(len(self._keys), 1)
        rows = int(owners_per_blob.max()) + 1
        dense = np.bincount(owners * width + column[keys], weights=counts, minlength=rows * width)
        self._dense = dense.reshape(rows, width)

    def _columns(self, dimension: int) -> tuple[int, int]:
        """The columns of a dimension: ``[first, end)``."""
        first = int(np.searchsorted(self._keys, dimension * STRIDE))
        return first, int(np.searchsorted(self._keys, (dimension + 1) * STRIDE))

    def _buckets(self, first: int, end: int, dimension: int) -> npt.NDArray[np.int64]:
        return self._keys[first:end] - dimension * STRIDE

    def count(self, group: int, dimension: int = 0) -> int:
        if group >= self._dense.shape[0]:
            return 0
        first, end = self._columns(dimension)
        return int(self._dense[group, first:end].sum())

    def at_most(self, micros: float, dimension: int = 0) -> npt.NDArray[np.float64]:
        """Per group, how many values are at most ``micros``: the buckets whose
        representative value is (to the histogram's ~1 % resolution)."""
        last = bucket(micros)
        if value(last) > micros:
            last -= 1
        first = int(np.searchsorted(self._keys, dimension * STRIDE))
        end = int(np.searchsorted(self._keys, dimension * STRIDE + last, side="right"))
        return self._dense[:, first:end].sum(axis=1)

    def quantile_of_each(self, q: float, dimension: int = 0) -> npt.NDArray[np.float64]:
        """The ``q`` quantile (µs) of every group at once, NaN for empty groups: the
        same rank rule as :meth:`quantiles`, vectorised (alerting judges thousands)."""
        return self.quantiles_of_each((q,), dimension)[:, 0]

    def quantiles_of_each(self, qs: Sequence[float], dimension: int = 0) -> npt.NDArray[np.float64]:
        """Several quantiles of every group at once: ``groups x len(qs)``, NaN for
        empty groups (a list of 200 transactions needs no loop per group)."""
        ranked = self._ranked(dimension)
        if ranked is None:
            return np.full((self._dense.shape[0], len(qs)), np.nan)
        values, size, cumulative = ranked
        results = np.empty((len(size), len(qs)))
        for column, q in enumerate(qs):
            rank = q * np.maximum(size - 1, 0)
            low, high = np.floor(rank), np.ceil(rank)
            low_value, high_value = _value_at(values, cumulative, low), _value_at(values, cumulative, high)
            result = low_value + (high_value - low_value) * (rank - low)
            results[:, column] = np.where(size > 0, result, np.nan)
        return results

    def largest_of_each(self, k: int, dimension: int = 0) -> npt.NDArray[np.float64]:
        """The ``k``-th largest value (µs, ``k`` = 1 the largest) of every group at
        once, NaN for groups of fewer than ``k`` values."""
        ranked = self._ranked(dimension)
        if ranked is None:
            return np.full(self._dense.shape[0], np.nan)
        values, size, cumulative = ranked
        return np.where(size >= k, _value_at(values, cumulative, size - k), np.nan)

    def _ranked(
        self, dimension: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], npt.NDArray[np.float64]] | None:
        """Each bucket's value, each group's size and running counts: what an
        order statistic of every group is read from (None: no bucket used)."""
        first, end = self._columns(dimension)
        rows = self._dense[:, first:end]
        if not rows.shape[1]:
            return None
        values = np.asarray([value(int(i)) for i in self._buckets(first, end, dimension)])
        return values, rows.sum(axis=1), np.cumsum(rows, axis=1)

    def quantiles(
        self, group: int, qs: Iterable[float], dimension: int = 0, zeros: int = 0
    ) -> list[float | None]:
        """Quantiles (µs), ``None`` when empty.

        The rank is ``q * (n - 1)``, between order statistics as numpy's default
        (linear) method takes it, interpolated between the buckets it falls in.
        ``zeros`` more values of exactly 0 count too (a trace that spent no time
        in a tier is not in the tier's histogram, yet is one of its calls).
        """
        first, end = self._columns(dimension)
        row = self._dense[group, first:end] if group < self._dense.shape[0] else np.zeros(0)
        buckets = self._buckets(first, end, dimension)
        size = row.sum() + zeros
        if size <= 0:
            return [None for _ in qs]
        cumulative = np.cumsum(row)

        def at(position: int) -> float:  # the order statistic at this 0-based position
            if position < zeros:
                return 0.0
            index = min(int(np.searchsorted(cumulative, position - zeros + 1)), len(buckets) - 1)
            return value(int(buckets[index]))

        results: list[float | None] = []
        for q in qs:
            rank = q * (size - 1)
            low, high = math.floor(rank), math.ceil(rank)
            low_value, high_value = at(low), at(high)
            results.append(low_value + (high_value - low_value) * (rank - low))
        return results


def _value_at(
    values: npt.NDArray[np.float64], cumulative: npt.NDArray[np.float64], position: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Per group, the value of the bucket holding its order statistic at the
    0-based ``position``."""
    index = np.minimum((cumulative < (position + 1)[:, None]).sum(axis=1), cumulative.shape[1] - 1)
    result: npt.NDArray[np.float64] = values[index]
    return result
