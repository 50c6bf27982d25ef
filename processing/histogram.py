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

import math
import struct
from collections.abc import Iterable, Mapping

import numpy as np
import numpy.typing as npt

GAMMA = 1.02
ALPHA = (GAMMA - 1) / (GAMMA + 1)  # ~0.0099: the relative error bound
_LOG_GAMMA = math.log(GAMMA)
# Bucket 0 holds everything up to 1 µs; the top bucket is reached near 2.7 hours
# (x = GAMMA ** 1200 µs) and holds everything longer.
MAX_BUCKET = 1200
STRIDE = 2048  # bucket indexes per dimension in a multi-dimensional histogram

_VERSION = 1
_HEADER = struct.Struct("<BI")  # version, number of non-empty buckets

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
    """Compact bytes: a header, then the sorted indexes (uint16) and counts (uint64)."""
    keys = sorted(key for key, count in counts.items() if count)
    indexes = np.asarray(keys, dtype="<u2")
    values = np.asarray([counts[key] for key in keys], dtype="<u8")
    return _HEADER.pack(_VERSION, len(keys)) + indexes.tobytes() + values.tobytes()


def decode_arrays(data: bytes) -> tuple[npt.NDArray[np.uint16], npt.NDArray[np.uint64]]:
    version, size = _HEADER.unpack_from(data)
    if version != _VERSION:
        raise ValueError(f"unknown histogram encoding version {version}")
    start = _HEADER.size
    indexes = np.frombuffer(data, dtype="<u2", count=size, offset=start)
    values = np.frombuffer(data, dtype="<u8", count=size, offset=start + 2 * size)
    return indexes, values


def decode(data: bytes) -> Counts:
    indexes, values = decode_arrays(data)
    return dict(zip(indexes.tolist(), values.tolist(), strict=True))


def merge_encoded(a: bytes | None, b: Mapping[int, int]) -> bytes:
    """Stored bytes plus new counts, as stored bytes."""
    merged = decode(a) if a else {}
    merge_into(merged, b)
    return encode(merged)


class Merged:
    """Many encoded histograms merged per group (e.g. per business transaction).

    Built with one vectorised pass (sort, then sum runs of equal keys), which is
    what lets a query over thousands of stored rows answer in milliseconds.
    """

    def __init__(self, groups: Iterable[int], encoded: Iterable[bytes]) -> None:
        keys: list[npt.NDArray[np.int64]] = []
        counts: list[npt.NDArray[np.uint64]] = []
        for group, data in zip(groups, encoded, strict=True):
            indexes, values = decode_arrays(data)
            keys.append(indexes.astype(np.int64) + np.int64(group) * _GROUP_WIDTH)
            counts.append(values)
        if keys:
            all_keys = np.concatenate(keys)
            all_counts = np.concatenate(counts)
            order = np.argsort(all_keys, kind="stable")
            all_keys, all_counts = all_keys[order], all_counts[order]
            unique, starts = np.unique(all_keys, return_index=True)
            self._keys = unique
            self._counts = np.add.reduceat(all_counts, starts) if len(starts) else all_counts
        else:
            self._keys = np.zeros(0, dtype=np.int64)
            self._counts = np.zeros(0, dtype=np.uint64)

    def _slice(self, group: int, dimension: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint64]]:
        low = group * _GROUP_WIDTH + dimension * STRIDE
        start, end = np.searchsorted(self._keys, [low, low + STRIDE])
        return self._keys[start:end] - low, self._counts[start:end]

    def count(self, group: int, dimension: int = 0) -> int:
        return int(self._slice(group, dimension)[1].sum())

    def quantiles(self, group: int, qs: Iterable[float], dimension: int = 0) -> list[float | None]:
        """Quantiles (µs), ``None`` when empty.

        The rank is ``q * (n - 1)``, between order statistics as numpy's default
        (linear) method takes it, interpolated between the buckets it falls in.
        """
        indexes, counts = self._slice(group, dimension)
        size = int(counts.sum())
        if size == 0:
            return [None for _ in qs]
        cumulative = np.cumsum(counts)
        results: list[float | None] = []
        for q in qs:
            rank = q * (size - 1)
            low, high = math.floor(rank), math.ceil(rank)
            low_value = float(value(int(indexes[np.searchsorted(cumulative, low + 1)])))
            high_value = float(value(int(indexes[np.searchsorted(cumulative, high + 1)])))
            results.append(low_value + (high_value - low_value) * (rank - low))
        return results


_GROUP_WIDTH = STRIDE * 16  # room for up to 16 dimensions per group
