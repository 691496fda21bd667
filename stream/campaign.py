"""One campaign's additive state in one partition: event-time buckets at two resolutions (minutes
for the short trailing windows, hours for the long horizons) and all-time totals.

Buckets are packed rows of one ``array('q')``, dense from the oldest kept bucket: row ``i`` is the
bucket starting at ``first_start + i * bucket_ms``. A row is ``ROW`` int64s: five counts (by event
kind), then revenue and spend (micros). A row whose counts are all 0 is a gap: no event of that
bucket was folded. Kept buckets span at most the retention plus the future tolerance, so a campaign
costs at most 56 bytes per bucket of that span (a month of hours: 43 KB), instead of the ~550 of an
object per bucket. A row holds no positions: a bucket's record gets its ``hw`` when it is written
(``stream.changelog``), and only rows restored ahead of their partition's checkpoint need theirs in
memory (``PartitionState.replay_hw``).
"""

from __future__ import annotations

from array import array
from collections.abc import Iterator
from typing import NamedTuple

KINDS = 5
REVENUE, SPEND = 5, 6
ROW = KINDS + 2
_GAP_ROW = array("q", [0] * ROW)
_INT64_MAX = (1 << 63) - 1
_NOTHING_SEALED = -(1 << 62)


class Bucket(NamedTuple):
    counts: list[int]
    revenue: int  # micros
    spend: int  # micros


class WindowTotals(NamedTuple):
    """Sums over one trailing window: counts by kind, revenue and spend in micros."""

    counts: list[int]
    revenue_micros: int
    spend_micros: int


class BucketRows:
    """One resolution of a campaign's buckets: dense packed rows from ``first_start``.

    Sums over long spans (a month of hours) are read far more often than the past changes, so
    ``sums_between`` remembers the part of a span before the reader's current bucket (the
    *sealed* part) until an event lands there: every fold of a bucket before ``sealed_before``
    bumps ``epoch``, which drops what was remembered."""

    __slots__ = ("epoch", "first_start", "rows", "sealed", "sealed_before")

    def __init__(self) -> None:
        self.rows = array("q")
        self.first_start = 0
        self.sealed_before = _NOTHING_SEALED
        self.epoch = 0
        self.sealed: dict[tuple[int, int, int, int], WindowTotals] = {}

    def _row_of(self, start: int, bucket_ms: int) -> int:
        """Index of the row for ``start``, growing the dense span to hold it."""
        rows = self.rows
        if not rows:
            self.first_start = start
            rows.extend(_GAP_ROW)
            return 0
        index = (start - self.first_start) // bucket_ms
        if index < 0:
            rows[0:0] = _GAP_ROW * -index
            self.first_start = start
            return 0
        missing = index + 1 - len(rows) // ROW
        if missing > 0:
            rows.extend(_GAP_ROW * missing)
        return index

    def add(self, kind: int, start: int, amount: int, money_column: int, bucket_ms: int) -> None:
        """Fold one event into its bucket."""
        if start < self.sealed_before:
            self.epoch += 1
        base = self._row_of(start, bucket_ms) * ROW
        rows = self.rows
        rows[base + kind] += 1
        if amount:
            total = rows[base + money_column] + amount
            rows[base + money_column] = total if total <= _INT64_MAX else _INT64_MAX

    def bucket(self, start: int, bucket_ms: int) -> Bucket | None:
        index = (start - self.first_start) // bucket_ms
        if not self.rows or index < 0 or index >= len(self.rows) // ROW:
            return None
        base = index * ROW
        row = self.rows[base : base + ROW]
        if not any(row[:KINDS]):
            return None
        return Bucket(list(row[:KINDS]), row[REVENUE], row[SPEND])

    def row_values(self, start: int, bucket_ms: int) -> list[int] | None:
        """The ``ROW`` values of bucket ``start`` as a list (counts, revenue, spend), or None if
        it holds no event: ``bucket`` without the objects, for the changelog writer."""
        index = (start - self.first_start) // bucket_ms
        if index < 0:
            return None
        row = self.rows[index * ROW : index * ROW + ROW].tolist()
        return row if row and any(row[:KINDS]) else None

    def buckets(self, bucket_ms: int) -> Iterator[tuple[int, Bucket]]:
        """(start, bucket) of every kept bucket, oldest first."""
        for index in range(len(self.rows) // ROW):
            start = self.first_start + index * bucket_ms
            bucket = self.bucket(start, bucket_ms)
            if bucket is not None:
                yield start, bucket

    def put_bucket(self, start: int, bucket: Bucket, bucket_ms: int) -> None:
        self.epoch += 1
        base = self._row_of(start, bucket_ms) * ROW
        self.rows[base : base + ROW] = array("q", [*bucket.counts, bucket.revenue, bucket.spend])

    def drop_buckets_before(self, cutoff_start: int, bucket_ms: int) -> list[int]:
        """Forget buckets starting before ``cutoff_start``; return the starts of those that held
        events (their records are to be deleted)."""
        if not self.rows:
            return []
        count = min(len(self.rows) // ROW, max(0, (cutoff_start - self.first_start) // bucket_ms))
        if count == 0:
            return []
        self.epoch += 1
        dropped = [
            self.first_start + i * bucket_ms
            for i in range(count)
            if any(self.rows[i * ROW : i * ROW + KINDS])
        ]
        del self.rows[: count * ROW]
        self.first_start += count * bucket_ms
        return dropped

    @property
    def has_buckets(self) -> bool:
        return bool(self.rows)

    def any_between(self, first: int, last: int, bucket_ms: int) -> bool:
        """Whether a bucket starting in ``[first, last]`` holds an event."""
        rows = self.rows
        if not rows or last < first:
            return False
        count = len(rows) // ROW
        lo = max(0, -(-(first - self.first_start) // bucket_ms))
        hi = min(count, (last - self.first_start) // bucket_ms + 1)
        return any(any(rows[base : base + KINDS]) for base in range(lo * ROW, hi * ROW, ROW))

    def window_totals(
        self, current_start: int, windows_ms: tuple[int, ...], bucket_ms: int
    ) -> list[WindowTotals]:
        """Sums of the buckets in each trailing window ending with the bucket ``current_start``.

        Buckets after it (accepted future events) count once their time has come. Windows are
        nested, so each bucket is summed once: the smallest window first, then what each larger
        one adds.
        """
        rows = self.rows
        count = len(rows) // ROW
        hi = min(count, (current_start - self.first_start) // bucket_ms + 1) if count else 0
        out: dict[int, WindowTotals] = {}  # by window index
        sums = [0] * ROW  # counts by kind, revenue, spend
        covered = max(0, hi)  # rows [covered, hi) are in ``sums``
        for i in sorted(range(len(windows_ms)), key=windows_ms.__getitem__):
            lo = max(0, (current_start - windows_ms[i] + bucket_ms - self.first_start) // bucket_ms)
            if lo < covered:
                a, b = lo * ROW, covered * ROW
                for column in range(ROW):
                    sums[column] += sum(rows[a + column : b : ROW])
                covered = lo
            out[i] = WindowTotals(sums[:KINDS], sums[REVENUE], sums[SPEND])
        return [out[i] for i in range(len(windows_ms))]

    def sums_between(
        self, first: int, last: int, bucket_ms: int, current: int | None = None
    ) -> WindowTotals:
        """Sums of the buckets starting in ``[first, last]`` (a calendar window: the long
        horizons' ``today``, ``7d``, ``30d`` and ``flight``). With ``current`` (the reader's
        current bucket), the part before it is remembered until a fold changes it."""
        if current is None or first >= current:
            return self._sums_between(first, last, bucket_ms)
        if self.sealed_before != current:
            self.sealed_before = current
            self.sealed = {}
        sealed_last = min(last, current - bucket_ms)
        key = (first, sealed_last, self.first_start, self.epoch)
        past = self.sealed.get(key)
        if past is None:
            if len(self.sealed) > 16:  # stale epochs' entries
                self.sealed = {}
            past = self.sealed[key] = self._sums_between(first, sealed_last, bucket_ms)
        if last < current:
            return past
        if last == current:  # the usual case: the current bucket alone, one row
            row = self.row_values(current, bucket_ms)
            if row is None:
                return past
            return WindowTotals(
                [a + b for a, b in zip(past.counts, row)],
                past.revenue_micros + row[REVENUE],
                past.spend_micros + row[SPEND],
            )
        now = self._sums_between(current, last, bucket_ms)
        return WindowTotals(
            [a + b for a, b in zip(past.counts, now.counts)],
            past.revenue_micros + now.revenue_micros,
            past.spend_micros + now.spend_micros,
        )

    def _sums_between(self, first: int, last: int, bucket_ms: int) -> WindowTotals:
        rows = self.rows
        count = len(rows) // ROW
        lo = max(0, -(-(first - self.first_start) // bucket_ms))
        hi = min(count, (last - self.first_start) // bucket_ms + 1)
        sums = [0] * ROW
        if lo < hi:
            a, b = lo * ROW, hi * ROW
            for column in range(ROW):
                sums[column] = sum(rows[a + column : b : ROW])
        return WindowTotals(sums[:KINDS], sums[REVENUE], sums[SPEND])


class CampaignState(BucketRows):
    """A campaign's minute buckets (its own rows), its hour buckets (``hours``, the long
    horizons), and its all-time totals."""

    __slots__ = (
        "archived_histogram",
        "archived_leads",
        "archived_sum_ms",
        "by_channel",
        "hours",
        "hw",
        "version",
    )

    def __init__(self, histogram_bins: int) -> None:
        super().__init__()
        self.hours = BucketRows()
        self.by_channel: dict[str, list[int]] = {}  # all-time counts by channel and kind
        self.hw = [-1] * KINDS  # of the totals
        # Response times of lead records already deleted; live records are added at read time.
        self.archived_histogram = [0] * histogram_bins
        self.archived_sum_ms = 0
        self.archived_leads: list[str] = []  # lead ids of the latest archive fold
        self.version = 0  # bumped on every change: readers cache what they derive from it

    @property
    def holds_buckets(self) -> bool:
        """Whether any bucket of either resolution is kept (a campaign retires without)."""
        return bool(self.rows) or bool(self.hours.rows)

    # -- totals ------------------------------------------------------------------------------

    def count(self, kind: int, pos: int, channel: str) -> bool:
        """Count one event in the all-time totals; False if they already hold that position."""
        if self.hw[kind] >= pos:
            return False
        per_channel = self.by_channel.get(channel)
        if per_channel is None:
            per_channel = self.by_channel[channel] = [0] * KINDS
        per_channel[kind] += 1
        self.hw[kind] = pos
        return True

    def kind_totals(self) -> list[int]:
        return kind_totals(self.by_channel)


def kind_totals(by_channel: dict[str, list[int]]) -> list[int]:
    """All-time counts by event kind, over every channel."""
    sums = [0] * KINDS
    for counts in by_channel.values():
        for kind in range(KINDS):
            sums[kind] += counts[kind]
    return sums
