"""A mergeable quantile sketch with bounded relative error (the DDSketch idea), over plain dicts.

Response times are counted in logarithmic bins; any quantile is then known to within
``RELATIVE_ACCURACY`` of the true sample value, in memory that grows with the log of the range,
not with the number of leads. Bins can be added and removed, so a retracted observation
(an earlier first contact arriving late) leaves no trace.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

RELATIVE_ACCURACY = 0.01
_GAMMA = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA = math.log(_GAMMA)
ZERO_BIN = -(10**6)  # responses under one millisecond


def bin_of(value_ms: int) -> int:
    if value_ms < 1:
        return ZERO_BIN
    return math.ceil(math.log(value_ms) / _LOG_GAMMA)


def bin_value(index: int) -> float:
    """Representative value of a bin, within RELATIVE_ACCURACY of any value in it."""
    if index == ZERO_BIN:
        return 0.0
    return 2 * _GAMMA**index / (_GAMMA + 1)


def add(sketch: dict[int, int], value_ms: int, count: int = 1) -> None:
    index = bin_of(value_ms)
    new = sketch.get(index, 0) + count
    if new:
        sketch[index] = new
    else:
        del sketch[index]


def add_sketch(target: dict[int, int], other: Mapping[int, int] | None, sign: int) -> None:
    """Add (sign 1) or subtract (-1) ``other`` into ``target``, dropping bins that reach 0."""
    if not other:
        return
    for index, count in other.items():
        new = target.get(index, 0) + sign * count
        if new:
            target[index] = new
        else:
            del target[index]


def merge(sketches: Iterable[Mapping[int, int]]) -> dict[int, int]:
    merged: dict[int, int] = {}
    for sketch in sketches:
        for index, count in sketch.items():
            merged[index] = merged.get(index, 0) + count
    return merged


def quantile(sketch: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0..1) in milliseconds, or None for an empty sketch.

    Uses the lower rank convention: the smallest value with at least ceil(q*n) samples at or
    below it (so p50 of [1, 2] is 1, as with nearest-rank percentiles).
    """
    total = sum(sketch.values())
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total))
    seen = 0
    for index in sorted(sketch):
        seen += sketch[index]
        if seen >= rank:
            return bin_value(index)
    return bin_value(max(sketch))  # pragma: no cover - unreachable with positive counts


def quantiles(sketch: Mapping[int, int], qs: tuple[float, ...]) -> list[float | None]:
    """Several quantiles (ascending ``qs``) with one sort; each as :func:`quantile` gives it."""
    total = sum(sketch.values())
    if total <= 0:
        return [None] * len(qs)
    ranks = [max(1, math.ceil(q * total)) for q in qs]
    out: list[float | None] = []
    seen = 0
    indexes = sorted(sketch)
    position = 0
    for rank in ranks:
        while position < len(indexes) and seen + sketch[indexes[position]] < rank:
            seen += sketch[indexes[position]]
            position += 1
        out.append(bin_value(indexes[min(position, len(indexes) - 1)]))
    return out


_ONE_BIN_BIAS = 1 << 21  # > -ZERO_BIN, so a biased bin index is never negative
_COUNT_BITS = 32
_COUNT_MASK = (1 << _COUNT_BITS) - 1


class BucketSketches:
    """One sketch per time bucket, held compactly.

    Most buckets of most campaigns hold one response (leads are rare next to impressions), and a
    dict per bucket costs ~200 bytes: a one-bin sketch is held as one packed int instead, and
    becomes a dict at its second bin.
    """

    __slots__ = ("_by_start",)

    def __init__(self) -> None:
        self._by_start: dict[int, int | dict[int, int]] = {}

    def __bool__(self) -> bool:
        return bool(self._by_start)

    def __len__(self) -> int:
        return len(self._by_start)

    def __contains__(self, start: int) -> bool:
        return start in self._by_start

    def starts(self) -> list[int]:
        return list(self._by_start)

    def add(self, start: int, value_ms: int, count: int) -> None:
        index = bin_of(value_ms)
        held = self._by_start.get(start)
        if held is None:
            if count > 0:
                self._by_start[start] = _pack(index, count)
            return
        sketch = _unpack(held) if isinstance(held, int) else held
        new = sketch.get(index, 0) + count
        if new:
            sketch[index] = new
        else:
            del sketch[index]
        if not sketch:
            del self._by_start[start]
        elif len(sketch) == 1 and next(iter(sketch.values())) <= _COUNT_MASK:
            ((only, only_count),) = sketch.items()
            self._by_start[start] = _pack(only, only_count)
        else:
            self._by_start[start] = sketch

    def get(self, start: int) -> dict[int, int] | None:
        held = self._by_start.get(start)
        if held is None:
            return None
        return _unpack(held) if isinstance(held, int) else held

    def add_into(self, target: dict[int, int], start: int, sign: int) -> bool:
        """Add (sign 1) or subtract (-1) bucket ``start``'s sketch into ``target``, dropping bins
        that reach 0; False if the bucket holds nothing."""
        held = self._by_start.get(start)
        if held is None:
            return False
        if isinstance(held, int):
            index = (held >> _COUNT_BITS) - _ONE_BIN_BIAS
            new = target.get(index, 0) + sign * (held & _COUNT_MASK)
            if new:
                target[index] = new
            else:
                del target[index]
        else:
            add_sketch(target, held, sign)
        return True

    def drop_before(self, cutoff_start: int) -> bool:
        """Forget buckets starting before ``cutoff_start``; True if any was."""
        old = [start for start in self._by_start if start < cutoff_start]
        for start in old:
            del self._by_start[start]
        return bool(old)

    def as_dict(self) -> dict[int, dict[int, int]]:
        return {start: dict(self.get(start) or {}) for start in self._by_start}


def _pack(index: int, count: int) -> int:
    return ((index + _ONE_BIN_BIAS) << _COUNT_BITS) | count


def _unpack(packed: int) -> dict[int, int]:
    return {(packed >> _COUNT_BITS) - _ONE_BIN_BIAS: packed & _COUNT_MASK}
