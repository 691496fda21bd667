"""Rows of KPI figures per campaign, read from the partition states at one instant.

One pure function (``build_rows``) builds the rows that both ``/metrics`` and ``/kpis`` format.
A campaign's row depends only on its state's version and on the current bucket (windows move
once per bucket), so a ``RowCache`` keeps rows, and what formatters derive from them, until either
changes: a scrape costs in proportion to the campaigns that changed, not to all of them.

A campaign normally lives in one partition (producers key by campaign). ``__other__`` lives in
every partition that folded events, and a misrouted campaign in several: their rows are merged.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field, replace

from . import baselines as base
from . import sketch as qsketch
from .campaign import KINDS, CampaignState, WindowTotals, kind_totals
from .horizons import Horizons, horizons
from .kpis import Kpis, compute_kpis
from .leads import HISTOGRAM_BINS
from .pacing import Pacing, pacing, share_elapsed
from .plans import Plan, effective_plan, main_channel
from .state import FOLDED_CAMPAIGN, FOLDED_CHANNEL, PartitionState
from .windows import bucket_start, first_kept_start

QUANTILES = (0.5, 0.95)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WindowRow:
    window_ms: int
    counts: list[int]
    revenue_micros: int
    spend_micros: int
    sketch: dict[int, int]  # response times of the first contacts made in the window
    p50_ms: float | None = None
    p95_ms: float | None = None
    _kpis: Kpis | None = None

    def kpis(self) -> Kpis:
        if self._kpis is None:
            self._kpis = compute_kpis(self.counts, self.revenue_micros, self.spend_micros)
        return self._kpis


@dataclass(slots=True, eq=False)
class CampaignRow:
    campaign: str
    windows: list[WindowRow]
    by_channel: dict[str, list[int]]  # all-time counts by channel and kind
    histogram: list[int]  # all-time response-time bins (see stream.leads)
    histogram_sum_ms: int
    awaiting: int  # leads with no contact yet
    oldest_awaiting_ms: int | None
    unmatched: int  # contacts whose lead was not seen
    formatted: dict[str, list[str]] = field(default_factory=dict)  # formatters' cache, by format
    # The long horizons (stream.horizons), by label: today, 7d, 30d, and flight once begun.
    horizons: dict[str, WindowTotals] = field(default_factory=dict)
    plan: Plan | None = None  # the effective plan (its own, filled from its channel's default)
    day_share: float = 0.0  # of the campaign's day elapsed, in its time zone
    flight_share: float | None = None  # of its flight elapsed (a flight with start and end)
    day_elapsed_s: float = 0.0  # since the campaign's last midnight
    day_start_ms: int | None = None  # that midnight: the instant its local day began
    day_end_ms: int | None = None  # its next midnight
    outside_flight: bool = False  # today is before its plan's flight or after it
    # The baselines the rules read (stream.baselines), as their spans' sums and whether the
    # campaign's history covers each span: additive, so a split campaign's rows merge exactly.
    baseline_parts: dict[base.BaselineRef, tuple[list[WindowTotals], list[bool]]] = field(
        default_factory=dict
    )
    _horizon_kpis: dict[str, Kpis] | None = None
    _baselines: dict[tuple[str, str, str], float | None] | None = None
    # Readers' cache of what they derive from the row's sums (never from its clock figures,
    # which a carried row has set anew), by the reader's key.
    derived: dict[object, object] = field(default_factory=dict)

    def horizon_kpis(self) -> dict[str, Kpis]:
        """The KPIs of each long horizon, computed once per row (every format reads them)."""
        if self._horizon_kpis is None:
            self._horizon_kpis = {
                label: compute_kpis(sums.counts, sums.revenue_micros, sums.spend_micros)
                for label, sums in self.horizons.items()
            }
        return self._horizon_kpis

    def kind_totals(self) -> list[int]:
        return kind_totals(self.by_channel)

    def baselines(self) -> dict[tuple[str, str, str], float | None]:
        """Each baseline's value by (kpi, window, baseline label); None: none yet (cold start)."""
        if self._baselines is None:
            self._baselines = {
                ref.key: base.value(ref, sums, covered)
                for ref, (sums, covered) in self.baseline_parts.items()
            }
        return self._baselines

    def pacing(self) -> Pacing | None:
        """Spend against the plan's budgets; None without a budget."""
        if self.plan is None or not self.plan.budgets:
            return None
        today = self.horizons.get("today")
        flight = self.horizons.get("flight")
        return pacing(
            today.spend_micros / 1_000_000 if today else 0.0,
            flight.spend_micros / 1_000_000 if flight else None,
            self.plan.budgets,
            self.day_share,
            self.flight_share,
        )

    def oldest_awaiting_age_seconds(self, now_ms: int) -> float | None:
        """Age of the oldest lead still awaiting a first contact (0 if it is in the future)."""
        if self.oldest_awaiting_ms is None:
            return None
        return max(0, now_ms - self.oldest_awaiting_ms) / 1000


@dataclass
class Snapshot:
    now_ms: int
    windows_ms: tuple[int, ...]
    rows: list[CampaignRow]
    rejected: dict[str, int]
    late: list[int]
    duplicate: list[int]
    folded_events: dict[str, int]  # by budget: "campaign", "channel"
    campaigns_tracked: int
    campaign_budget: int


def add_channel_totals(
    out: dict[tuple[str, int], int], rows: Iterable[CampaignRow]
) -> dict[tuple[str, int], int]:
    """Add the rows' all-time counts by (channel, kind) into ``out``."""
    for row in rows:
        for channel, counts in row.by_channel.items():
            for kind, count in enumerate(counts):
                out[(channel, kind)] = out.get((channel, kind), 0) + count
    return out


def add_histogram(bins: list[int], rows: Iterable[CampaignRow]) -> int:
    """Add the rows' response-time bins into ``bins``; the sum of their response times (ms)."""
    total = 0
    for row in rows:
        for i, count in enumerate(row.histogram):
            bins[i] += count
        total += row.histogram_sum_ms
    return total


class RowCache:
    """Rows of (partition, campaign), valid while the state's version and the bucket stand.

    Response-time windows (merged sketches and quantiles, the dearest part of a row) are kept
    apart, valid while the campaign's response view and the bucket stand: most events are
    impressions and clicks, which change a row but not its response times.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[int, str], tuple[CampaignState, int, int, CampaignRow]] = {}
        self._responses: dict[tuple[int, str], tuple[object, int, int, list]] = {}
        self._seen: set[tuple[int, str]] = set()
        self.hits = self.misses = self.carries = 0

    def responses(
        self, partition: int, campaign: str, view: object, version: int
    ) -> tuple[int, list] | None:
        """(bucket they were computed at, windows) if the response data has not changed since."""
        entry = self._responses.get((partition, campaign))
        if entry is not None and entry[0] is view and entry[1] == version:
            return entry[2], entry[3]
        return None

    def put_responses(
        self, partition: int, campaign: str, view: object, version: int, current: int, windows: list
    ) -> None:
        self._responses[(partition, campaign)] = (view, version, current, windows)

    def get(
        self,
        partition_state: PartitionState,
        campaign: str,
        state: CampaignState,
        current: int,
        bucket_ms: int,
        windows_ms: tuple[int, ...],
        zone: str,
    ) -> CampaignRow | None:
        """The cached row of (partition, campaign) at bucket ``current``: the one built there
        (``hits``), or else (``misses``) one carried from an earlier bucket (``carries``), or
        None: the caller builds it."""
        key = (partition_state.partition, campaign)
        self._seen.add(key)
        entry = self._rows.get(key)
        if entry is not None and entry[0] is state and entry[1] == state.version:
            if entry[2] == current:
                self.hits += 1
                return entry[3]
            self.misses += 1
            return self._carried(
                partition_state, campaign, state, current, bucket_ms, windows_ms, zone
            )
        self.misses += 1
        return None

    def _carried(
        self,
        partition_state: PartitionState,
        campaign: str,
        state: CampaignState,
        current: int,
        bucket_ms: int,
        windows_ms: tuple[int, ...],
        zone: str,
    ) -> CampaignRow | None:
        """The row built at an earlier bucket of the same hour, brought to ``current`` if nothing
        it sums has moved since: the campaign unchanged (its version), no bucket holding events
        or responses entered or left a window, and its day not ended. Only the clock's figures
        (the day and flight elapsed) are set anew, and its text dropped if they moved."""
        key = (partition_state.partition, campaign)
        _, _, then, row = self._rows[key]  # the campaign's version unchanged: ``get``
        long_ms = partition_state.config.long_bucket_ms
        if not (
            then < current
            and then - then % long_ms == current - current % long_ms
            and (row.day_end_ms is None or current < row.day_end_ms)
            and (
                not row.baseline_parts
                or base.nearest_boundary(then, long_ms) == base.nearest_boundary(current, long_ms)
            )
            and (  # where a flight's sums stop being reported (a retention off the hour grid)
                first_kept_start(then, long_ms, partition_state.config.long_retention_ms)
                == first_kept_start(current, long_ms, partition_state.config.long_retention_ms)
            )
            and _quiet(partition_state, campaign, state, then, current, bucket_ms, windows_ms)
        ):
            return None
        self.carries += 1
        # A copy: a reader may still hold the row as it was (a decision round judged in slices,
        # a page rendered after the build). Its sums and the caches derived from them are shared.
        carried = replace(row)
        if set_clock(carried, current, long_ms, zone) and carried.plan is not None:
            carried.formatted = {}  # its budget and flight lines moved with the clock
        self._rows[key] = (state, state.version, current, carried)
        return carried

    def put(
        self, partition: int, campaign: str, state: CampaignState, current: int, row: CampaignRow
    ) -> None:
        self._rows[(partition, campaign)] = (state, state.version, current, row)

    def sweep(self) -> None:
        """Forget rows of campaigns not read since the last sweep (retired or moved away)."""
        self._rows = {k: v for k, v in self._rows.items() if k in self._seen}
        self._responses = {k: v for k, v in self._responses.items() if k in self._seen}
        self._seen = set()


def snapshot_header(
    states: list[PartitionState], now_ms: int, windows_ms: tuple[int, ...]
) -> Snapshot:
    """Everything but the rows: partition-level counters summed over ``states``."""
    snap = Snapshot(
        now_ms, windows_ms, [], {}, [0] * KINDS, [0] * KINDS, {"campaign": 0, "channel": 0}, 0, 0
    )
    for state in states:
        meta = state.meta
        for reason, count in meta.rejected.items():
            snap.rejected[reason] = snap.rejected.get(reason, 0) + count
        for kind in range(KINDS):
            snap.late[kind] += meta.late[kind]
            snap.duplicate[kind] += meta.duplicate[kind]
        snap.folded_events["campaign"] += meta.folded[FOLDED_CAMPAIGN]
        snap.folded_events["channel"] += meta.folded[FOLDED_CHANNEL]
        snap.campaigns_tracked += state.admitted_campaigns
        snap.campaign_budget += state.config.max_campaigns
    return snap


_FAILED_ROWS_LOGGED: set[str] = set()


def _row_failed(campaign: str) -> None:
    """A campaign whose row raised (a defect, or a plan no check foresaw): logged once per
    campaign (up to 100), left out of the snapshot; the other campaigns are served and judged."""
    if campaign not in _FAILED_ROWS_LOGGED and len(_FAILED_ROWS_LOGGED) < 100:
        _FAILED_ROWS_LOGGED.add(campaign)
        log.exception("the row of campaign %r raised: left out of /metrics and decisions", campaign)


def build_rows(
    states: Iterable[PartitionState],
    now_ms: int,
    bucket_ms: int,
    windows_ms: tuple[int, ...],
    cache: RowCache | None = None,
    zone: str = "UTC",
    baselines: tuple[base.BaselineRef, ...] = (),
    only: Collection[str] | None = None,
) -> Iterator[CampaignRow]:
    """One row per campaign label, in label order; ``zone`` is the day of campaigns whose plan
    names no time zone (``KPI_TIMEZONE``). With ``only``, the rows of those campaigns alone (the
    cache then keeps the others' rows)."""
    current = bucket_start(now_ms, bucket_ms)
    holders: dict[str, list[PartitionState]] = {}
    for state in sorted(states, key=lambda s: s.partition):
        for campaign in list(state.campaigns):
            holders.setdefault(campaign, []).append(state)
    for campaign in sorted(holders if only is None else holders.keys() & set(only)):
        rows = []
        for state in holders[campaign]:
            campaign_state = state.campaigns.get(campaign)
            if campaign_state is None:  # retired while the caller yielded
                continue
            row = (
                cache.get(state, campaign, campaign_state, current, bucket_ms, windows_ms, zone)
                if cache
                else None
            )
            if row is None:
                try:
                    row = campaign_row(
                        state, campaign, current, bucket_ms, windows_ms, cache, zone, baselines
                    )
                except Exception:  # one campaign's defect must not blind every other one
                    _row_failed(campaign)
                    continue
                if cache is not None:
                    cache.put(state.partition, campaign, campaign_state, current, row)
            rows.append(row)
        if rows:
            yield rows[0] if len(rows) == 1 else merge_rows(rows)
    if cache is not None and only is None:
        cache.sweep()


def campaign_row(
    state: PartitionState,
    campaign: str,
    current: int,
    bucket_ms: int,
    windows_ms: tuple[int, ...],
    cache: RowCache | None = None,
    zone: str = "UTC",
    baselines: tuple[base.BaselineRef, ...] = (),
) -> CampaignRow:
    s = state.campaigns[campaign]
    responses = _response_windows(state, campaign, current, bucket_ms, windows_ms, cache)
    windows = []
    for window, sums, (sketch, p50, p95) in zip(
        windows_ms, s.window_totals(current, windows_ms, bucket_ms), responses
    ):
        windows.append(
            WindowRow(window, sums.counts, sums.revenue_micros, sums.spend_micros, sketch, p50, p95)
        )
    histogram, sum_ms = state.response_histogram(campaign) or ([0] * HISTOGRAM_BINS, 0)
    waiting = state.index.awaiting_contact.get(campaign)
    row = CampaignRow(
        campaign,
        windows,
        {c: list(v) for c, v in s.by_channel.items()},
        histogram,
        sum_ms,
        len(waiting) if waiting else 0,
        min(waiting.values()) if waiting else None,
        state.index.unmatched_contacts.get(campaign, 0),
    )
    _add_horizons(row, state, s, current, zone)
    long_ms = state.config.long_bucket_ms
    hours = s.hours
    week_zone = _zone_of(row.plan, zone)  # same_hour_of_week: the campaign's local weeks
    for ref in baselines:
        spans = base.spans(ref, current, long_ms, week_zone)
        row.baseline_parts[ref] = (
            [hours.sums_between(span.first, span.last, long_ms) for span in spans],
            [hours.has_buckets and hours.first_start <= span.first for span in spans],
        )
    return row


def _add_horizons(
    row: CampaignRow, state: PartitionState, s: CampaignState, now_ms: int, zone: str
) -> None:
    """The long horizons, the effective plan and the elapsed shares that pacing reads. The
    clock is the row's bucket, so a cached row stays what it was built as."""
    plan = row.plan = effective_plan(state.plans, row.campaign, main_channel(s.by_channel))
    long_ms = state.config.long_bucket_ms
    spans = _spans(plan, now_ms, long_ms, zone)
    # A flight that began before the oldest kept hour would be summed in part: not reported.
    kept_from = first_kept_start(now_ms, long_ms, state.config.long_retention_ms)
    current = now_ms - now_ms % long_ms
    row.horizons = {
        name: s.hours.sums_between(span.first, span.last, long_ms, current)
        for name, span in spans.spans.items()
        if name != "flight" or span.first >= kept_from
    }
    set_clock(row, now_ms, long_ms, zone)


def _zone_of(plan: Plan | None, zone: str) -> str:
    """The campaign's time zone: its plan's, else ``KPI_TIMEZONE``."""
    return (plan.timezone if plan else None) or zone


def _spans(plan: Plan | None, now_ms: int, long_ms: int, zone: str) -> Horizons:
    return horizons(
        now_ms,
        _zone_of(plan, zone),
        long_ms,
        plan.flight_start if plan else None,
        plan.flight_end if plan else None,
    )


def set_clock(row: CampaignRow, now_ms: int, long_ms: int, zone: str) -> bool:
    """The row's figures that move with the clock alone (the shares of its day and flight
    elapsed, whether today is outside its flight), at ``now_ms``; whether any moved. The day's
    share is of its buckets (those ``today`` sums), its elapsed time and edges exact instants:
    the same where the zone fits the bucket grid, as the workers and the plan fold require."""
    plan = row.plan
    spans = _spans(plan, now_ms, long_ms, zone)
    before = (
        row.day_share,
        row.day_elapsed_s,
        row.day_start_ms,
        row.day_end_ms,
        row.outside_flight,
        row.flight_share,
    )
    row.day_share = share_elapsed(now_ms, spans.day_first_ms, spans.day_next_ms)
    row.day_elapsed_s = (now_ms - spans.day_start_ms) / 1000
    row.day_start_ms = spans.day_start_ms
    row.day_end_ms = spans.day_end_ms
    row.outside_flight = plan is not None and (
        (spans.flight_start_ms is not None and now_ms < spans.flight_start_ms)
        or (spans.flight_end_ms is not None and now_ms >= spans.flight_end_ms)
    )
    start, end = spans.flight_start_ms, spans.flight_end_ms
    row.flight_share = None
    if start is not None and end is not None and ("flight" in row.horizons or start > now_ms):
        row.flight_share = share_elapsed(now_ms, start, end)
    return before != (
        row.day_share,
        row.day_elapsed_s,
        row.day_start_ms,
        row.day_end_ms,
        row.outside_flight,
        row.flight_share,
    )


def _quiet(
    state: PartitionState,
    campaign: str,
    s: CampaignState,
    then: int,
    current: int,
    bucket_ms: int,
    windows_ms: tuple[int, ...],
) -> bool:
    """Whether the trailing windows at ``current`` sum what they summed at ``then``: no bucket
    holding events (or responses) entered them (accepted future events) or left them."""
    if s.any_between(then + bucket_ms, current, bucket_ms):
        return False
    for window in windows_ms:
        if s.any_between(then - window + bucket_ms, current - window, bucket_ms):
            return False
    view = state.index.responses.get(campaign)
    if view is not None and view.sketches:
        sketches = view.sketches
        for start in range(then + bucket_ms, current + 1, bucket_ms):
            if start in sketches:
                return False
            for window in windows_ms:
                if start - window in sketches:
                    return False
    return True


_NO_RESPONSES: tuple[dict[int, int], float | None, float | None] = ({}, None, None)


def _response_windows(
    state: PartitionState,
    campaign: str,
    current: int,
    bucket_ms: int,
    windows_ms: tuple[int, ...],
    cache: RowCache | None,
) -> list:
    """(merged sketch, p50, p95) per window."""
    view = state.index.responses.get(campaign)
    if view is None or not view.sketches:
        return [_NO_RESPONSES] * len(windows_ms)
    out = None
    if cache is not None:
        cached = cache.responses(state.partition, campaign, view, view.version)
        if cached is not None:
            then, windows = cached
            if then == current:
                return windows
            out = _advance(view.sketches, then, current, bucket_ms, windows_ms, windows)
    if out is None:
        out = [
            _with_quantiles(sketch)
            for sketch in _window_sketches(view.sketches, current, windows_ms)
        ]
    if cache is not None:
        cache.put_responses(state.partition, campaign, view, view.version, current, out)
    return out


def _with_quantiles(sketch: dict[int, int]) -> tuple[dict[int, int], float | None, float | None]:
    p50, p95 = qsketch.quantiles(sketch, QUANTILES)
    return sketch, p50, p95


_MAX_ADVANCE_BUCKETS = 4


def _advance(
    by_bucket: qsketch.BucketSketches,
    then: int,
    current: int,
    bucket_ms: int,
    windows_ms: tuple[int, ...],
    windows: list,
) -> list | None:
    """The windows at ``current`` from those at ``then`` (same response data): each window
    loses the buckets that left it and gains those that entered; a window that neither lost nor
    gained a response is kept as it was. None if the clock moved back or too far for that to be
    cheaper than merging again."""
    if current <= then or (current - then) // bucket_ms > _MAX_ADVANCE_BUCKETS:
        return None
    out = []
    for window, old in zip(windows_ms, windows):
        merged: dict[int, int] | None = None
        for start in range(then + bucket_ms, current + 1, bucket_ms):
            for moved, sign in ((start, 1), (start - window, -1)):  # entered, left
                if moved in by_bucket:
                    if merged is None:
                        merged = dict(old[0])
                    by_bucket.add_into(merged, moved, sign)
        out.append(old if merged is None else _with_quantiles(merged))
    return out


def _window_sketches(
    by_bucket: qsketch.BucketSketches, current: int, windows_ms: tuple[int, ...]
) -> list[dict[int, int]]:
    """The merged sketch of each (ascending, nested) window; each bucket's sketch merged once."""
    if not by_bucket:
        return [{} for _ in windows_ms]
    newest_first = sorted((start for start in by_bucket.starts() if start <= current), reverse=True)
    merged: dict[int, int] = {}
    out = []
    i = 0
    for window in windows_ms:
        oldest = current - window
        while i < len(newest_first) and newest_first[i] > oldest:
            by_bucket.add_into(merged, newest_first[i], 1)
            i += 1
        out.append(dict(merged))
    return out


def merge_rows(rows: list[CampaignRow]) -> CampaignRow:
    first = rows[0]
    windows = []
    for i, w in enumerate(first.windows):
        parts = [r.windows[i] for r in rows]
        sketch = qsketch.merge(p.sketch for p in parts)
        p50, p95 = qsketch.quantiles(sketch, QUANTILES)
        windows.append(
            WindowRow(
                w.window_ms,
                [sum(p.counts[k] for p in parts) for k in range(KINDS)],
                sum(p.revenue_micros for p in parts),
                sum(p.spend_micros for p in parts),
                sketch,
                p50,
                p95,
            )
        )
    by_channel: dict[str, list[int]] = {}
    for row in rows:
        for channel, counts in row.by_channel.items():
            target = by_channel.setdefault(channel, [0] * KINDS)
            for kind in range(KINDS):
                target[kind] += counts[kind]
    oldest = [r.oldest_awaiting_ms for r in rows if r.oldest_awaiting_ms is not None]
    merged = CampaignRow(
        first.campaign,
        windows,
        by_channel,
        [sum(r.histogram[i] for r in rows) for i in range(HISTOGRAM_BINS)],
        sum(r.histogram_sum_ms for r in rows),
        sum(r.awaiting for r in rows),
        min(oldest) if oldest else None,
        sum(r.unmatched for r in rows),
    )
    merged.plan, merged.day_share, merged.flight_share = (
        first.plan,
        first.day_share,
        first.flight_share,
    )
    merged.day_elapsed_s, merged.outside_flight = first.day_elapsed_s, first.outside_flight
    merged.day_start_ms, merged.day_end_ms = first.day_start_ms, first.day_end_ms
    for ref, (sums, covered) in first.baseline_parts.items():
        for other in rows[1:]:
            more, reached = other.baseline_parts[ref]
            sums = [base.add_sums(a, b) for a, b in zip(sums, more)]
            covered = [a or b for a, b in zip(covered, reached)]
        merged.baseline_parts[ref] = (sums, covered)
    for name in first.horizons:
        sums = [r.horizons[name] for r in rows if name in r.horizons]
        merged.horizons[name] = WindowTotals(
            [sum(t.counts[k] for t in sums) for k in range(KINDS)],
            sum(t.revenue_micros for t in sums),
            sum(t.spend_micros for t in sums),
        )
    return merged
