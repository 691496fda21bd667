"""Event-time buckets and trailing windows as sums of buckets.

A bucket ``[start, start + size)`` holds additive counters. The trailing window of length W at
time ``now`` is the sum of the W/size buckets ending with the bucket that contains ``now``; it
moves with the clock passed in, so a quiet campaign's windows drain to zero.
"""

from __future__ import annotations

from typing import Iterable, Mapping, NamedTuple


def bucket_start(occurred_ms: int, bucket_ms: int) -> int:
    return occurred_ms - occurred_ms % bucket_ms


def is_expired(start_ms: int, bucket_ms: int, now_ms: int, retention_ms: int) -> bool:
    """A bucket is gone once its end is older than the retention (longest window + grace)."""
    return start_ms + bucket_ms <= now_ms - retention_ms


class WindowSums(NamedTuple):
    counts: list[int]
    revenue_micros: int
    spend_micros: int
    response_sketch: dict[int, int]


def trailing_window_sums(
    buckets: Mapping[int, "object"],
    sketches: Mapping[int, Mapping[int, int]],
    now_ms: int,
    bucket_ms: int,
    windows_ms: Iterable[int],
) -> dict[int, WindowSums]:
    """Sums per window length over ``buckets`` ({start_ms: Bucket-like}) and ``sketches``
    ({start_ms: response-time sketch of first contacts in that bucket}).

    A Bucket-like has ``counts`` (list of 5 ints), ``revenue`` and ``spend`` (micros). Each bucket
    is visited once, whatever the number of windows.
    """
    current = bucket_start(now_ms, bucket_ms)
    windows = sorted(windows_ms)
    counts = {w: [0, 0, 0, 0, 0] for w in windows}
    revenue = {w: 0 for w in windows}
    spend = {w: 0 for w in windows}
    merged: dict[int, dict[int, int]] = {w: {} for w in windows}
    for start, bucket in buckets.items():
        if start > current:
            continue  # accepted future events count once their time has come
        age = current - start
        for window in windows:
            if age < window:
                target = counts[window]
                for kind, count in enumerate(bucket.counts):
                    target[kind] += count
                revenue[window] += bucket.revenue
                spend[window] += bucket.spend
    for start, sketch in sketches.items():
        if start > current:
            continue
        age = current - start
        for window in windows:
            if age < window:
                target_sketch = merged[window]
                for index, count in sketch.items():
                    target_sketch[index] = target_sketch.get(index, 0) + count
    return {w: WindowSums(counts[w], revenue[w], spend[w], merged[w]) for w in windows}
