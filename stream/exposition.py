"""The KPI snapshot in the Prometheus text exposition format (version 0.0.4), written by hand.

prometheus_client renders ~10 µs per series here; thousands of campaigns make that seconds on the
worker's event loop. This writer renders each campaign's lines once per row (rows are cached
until the campaign changes or its windows move, see ``stream.snapshot``) and joins them per
metric family, as the format requires (all samples of a family in one group).

Two exports (``KPI_EXPORT``):
- ``lean`` (default): per campaign only what cannot be derived in PromQL — window sums by event
  type, revenue and spend, response-time quantiles, all-time counts by event type, and the
  leads-awaiting figures: at most ``LEAN_SERIES_PER_CAMPAIGN`` series. Ratios and their Wilson
  bounds are Prometheus recording rules (``rulebook.recording``); channels and the response-time
  histogram are exported across campaigns.
- ``full``: also every ratio and bound per campaign and window, counts by campaign and channel,
  and the response-time histogram per campaign (~90 series per campaign).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator
from functools import lru_cache

from . import catalogue as m
from .campaign import WindowTotals
from .catalogue import MetricSpec
from .durations import format_duration
from .events import EVENT_TYPES
from .horizons import DAY_HORIZONS
from .kpis import RATIOS, Kpis
from .leads import HISTOGRAM_BINS, HISTOGRAM_BOUNDS_SECONDS
from .plans import LABELS
from .snapshot import CampaignRow, Snapshot, add_channel_totals, add_histogram
from .wilson import wilson_bounds

EXPORTS = ("lean", "full")
# Over the long horizons: counts of these (sales contacts are judged by response times, which
# are trailing-window figures), and for the flight only revenue and spend (pacing and ROAS to
# date): a campaign stays within 60 series with a plan.
HORIZON_EVENT_TYPES = EVENT_TYPES[:4]
LEAN_SERIES_PER_CAMPAIGN = (
    # 5 all-time + 3 windows x (5 events + revenue + spend + p50 + p95) + 3, the long horizons
    # 3 x (4 events + revenue + spend) + flight revenue and spend, and with a plan at most
    # 8 targets + 2 budgets + 1 info + 2 x 2 budget figures + 1 day elapsed + 1 spend outside
    # the flight (typically 2 targets, a daily budget: 6)
    35 + 20 + 17
)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_KIND_INDEX = {name: kind for kind, name in enumerate(EVENT_TYPES)}


def escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def number(value: float | int) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isfinite(value):
        return repr(value)
    return "NaN" if math.isnan(value) else ("+Inf" if value > 0 else "-Inf")


def header(name: str, kind: str, doc: str) -> str:
    """HELP and TYPE lines; in this format a counter's lines name its samples (``_total``)."""
    if kind == "counter":
        name += "_total"
    return f"# HELP {name} {doc}\n# TYPE {name} {kind}\n"


class _Family:
    """A per-campaign metric family: its header and a function rendering one row's lines."""

    def __init__(
        self, spec: MetricSpec, lines: Callable[[CampaignRow, str, tuple[str, ...]], str]
    ) -> None:
        self.name, self.kind, self.doc, self.lines = spec.name, spec.kind, spec.doc, lines


def window_labels(windows_ms: Iterable[int]) -> tuple[str, ...]:
    return tuple(format_duration(w // 1000) for w in windows_ms)


# -- per-campaign families (c is the escaped campaign, w the window labels) ------------------------
# The frequent families format one campaign's values into a cached template with one ``%``:
# a campaign's lines cost one C-level format call per family instead of one f-string per line.


@lru_cache(maxsize=1 << 16)
def _templates(c: str, w: tuple[str, ...]) -> dict[str, str]:
    c = c.replace("%", "%%")
    out = {
        "events": "".join(
            f'{m.EVENTS.sample}{{campaign="{c}",event_type="{t}"}} %d\n' for t in EVENT_TYPES
        ),
        "window_events": "".join(
            f'{m.WINDOW_EVENTS.name}{{campaign="{c}",event_type="{t}",window="{label}"}} %d\n'
            for label in w
            for t in EVENT_TYPES
        ),
    }
    for name in (
        m.WINDOW_REVENUE.name,
        m.WINDOW_SPEND.name,
        m.RESPONSE_P50.name,
        m.RESPONSE_P95.name,
    ):
        out[name] = "".join(f'{name}{{campaign="{c}",window="{label}"}} %r\n' for label in w)
    out["long_events"] = "".join(
        f'{m.WINDOW_EVENTS.name}{{campaign="{c}",event_type="{t}",window="{label}"}} %d\n'
        for label in DAY_HORIZONS
        for t in HORIZON_EVENT_TYPES
    )
    for name in (m.WINDOW_REVENUE.name, m.WINDOW_SPEND.name):
        out["long_" + name] = "".join(
            f'{name}{{campaign="{c}",window="{label}"}} %r\n' for label in DAY_HORIZONS
        )
    return out


def _events_by_type(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    return _templates(c, w)["events"] % tuple(row.kind_totals())


def _events_by_channel(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    return "".join(
        f'{m.EVENTS.sample}{{campaign="{c}",channel="{escape(ch)}",event_type="{t}"}} {counts[k]}\n'
        for ch, counts in sorted(row.by_channel.items())
        for k, t in enumerate(EVENT_TYPES)
    )


def _window_events(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    templates = _templates(c, w)
    short = templates["window_events"] % tuple(n for win in row.windows for n in win.counts)
    horizons = row.horizons
    if all(label in horizons for label in DAY_HORIZONS):
        return short + templates["long_events"] % tuple(
            n for label in DAY_HORIZONS for n in horizons[label].counts[: len(HORIZON_EVENT_TYPES)]
        )
    return short + "".join(
        f'{m.WINDOW_EVENTS.name}{{campaign="{c}",event_type="{t}",window="{label}"}} {n}\n'
        for label, sums in horizons.items()
        if label != "flight"
        for t, n in zip(HORIZON_EVENT_TYPES, sums.counts)
    )


def _money(attr: str, name: str) -> Callable[[CampaignRow, str, tuple[str, ...]], str]:
    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        templates = _templates(c, w)
        short = templates[name] % tuple(getattr(win, attr) / 1_000_000 for win in row.windows)
        horizons = row.horizons
        rest: Iterable[tuple[str, WindowTotals]] = horizons.items()
        if all(label in horizons for label in DAY_HORIZONS):
            short += templates["long_" + name] % tuple(
                getattr(horizons[label], attr) / 1_000_000 for label in DAY_HORIZONS
            )
            rest = [(label, sums) for label, sums in rest if label not in DAY_HORIZONS]
        return short + "".join(
            f'{name}{{campaign="{c}",window="{label}"}} {getattr(sums, attr) / 1_000_000!r}\n'
            for label, sums in rest
        )

    return lines


def _plan_values(spec: MetricSpec, label: str, field: str) -> Callable[..., str]:
    """Lines of one of the plan's mappings (targets by KPI, budgets by period)."""

    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        if row.plan is None:
            return ""
        return "".join(
            f'{spec.name}{{campaign="{c}",{label}="{key}"}} {number(value)}\n'
            for key, value in sorted(getattr(row.plan, field).items())
        )

    return lines


def _plan_info(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    plan = row.plan
    if plan is None:
        return ""
    labels = "".join(f'{name}="{escape(plan.labels.get(name, ""))}",' for name in LABELS)
    return f'{m.PLAN_INFO.name}{{campaign="{c}",{labels}timezone="{plan.timezone or ""}"}} 1\n'


def _pacing(field: str, daily: str, flight: str | None) -> Callable[..., str]:
    """Lines of one pacing figure: the daily one, and the flight's if it has one."""

    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        pace = row.pacing()
        if pace is None:
            return ""
        out = []
        for period, attr in (("daily", daily), ("flight", flight)):
            value = getattr(pace, attr) if attr else None
            if value is not None:
                out.append(f'{field}{{campaign="{c}",period="{period}"}} {number(value)}\n')
        return "".join(out)

    return lines


def _day_elapsed(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    if row.plan is None or not row.plan.budgets:  # read by the budget rules (``after``) only
        return ""
    return f'{m.DAY_ELAPSED.name}{{campaign="{c}"}} {number(row.day_elapsed_s)}\n'


def _baselines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    return "".join(
        f'{m.BASELINE.name}{{campaign="{c}",kpi="{kpi}",window="{window}",baseline="{label}"}} '
        f"{number(value)}\n"
        for (kpi, window, label), value in row.baselines().items()
        if value is not None
    )


def _spend_outside_flight(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    today = row.horizons.get("today")
    if not row.outside_flight or today is None:
        return ""
    return f'{m.SPEND_OUTSIDE_FLIGHT.name}{{campaign="{c}"}} {today.spend_micros / 1_000_000!r}\n'


def _projected_spend(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    pace = row.pacing()
    if pace is None or pace.projected_spend is None:
        return ""
    return f'{m.PROJECTED_SPEND.name}{{campaign="{c}"}} {number(pace.projected_spend)}\n'


def _quantile(attr: str, name: str) -> Callable[[CampaignRow, str, tuple[str, ...]], str]:
    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        values = [getattr(win, attr) for win in row.windows]
        if None not in values:
            return _templates(c, w)[name] % tuple(v / 1000 for v in values)
        return "".join(
            f'{name}{{campaign="{c}",window="{label}"}} {number(value / 1000)}\n'
            for value, label in zip(values, w)
            if value is not None
        )

    return lines


def _per_campaign(name: str, value: Callable[[CampaignRow], int]) -> Callable[..., str]:
    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        v = value(row)
        return f'{name}{{campaign="{c}"}} {v}\n' if v else ""

    return lines


def _every_window(row: CampaignRow, w: tuple[str, ...]) -> Iterator[tuple[str, Kpis, list[int]]]:
    """(label, KPIs, counts) of the trailing windows, then of the long horizons."""
    for win, label in zip(row.windows, w):
        yield label, win.kpis(), win.counts
    kpis = row.horizon_kpis()
    for label, sums in row.horizons.items():
        yield label, kpis[label], sums.counts


def _ratio(index: int) -> Callable[[CampaignRow, str, tuple[str, ...]], str]:
    metric = RATIOS[index].metric

    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        out = []
        for label, kpis, _ in _every_window(row, w):
            value = kpis[index]
            if value is not None:
                out.append(f'{metric}{{campaign="{c}",window="{label}"}} {number(value)}\n')
        return "".join(out)

    return lines


def _bound(index: int, side: int) -> Callable[[CampaignRow, str, tuple[str, ...]], str]:
    ratio = RATIOS[index]
    name = f"{ratio.metric}_{('lower', 'upper')[side]}"
    successes, trials = _KIND_INDEX[ratio.numerator], _KIND_INDEX[ratio.denominator]

    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        out = []
        for label, _, counts in _every_window(row, w):
            bounds = wilson_bounds(counts[successes], counts[trials])
            if bounds is not None:
                out.append(f'{name}{{campaign="{c}",window="{label}"}} {number(bounds[side])}\n')
        return "".join(out)

    return lines


def _histogram_lines(name: str, labels: str, bins: list[int], sum_ms: int) -> str:
    out, cumulative = [], 0
    for bound, count in zip(HISTOGRAM_BOUNDS_SECONDS, bins):
        cumulative += count
        out.append(f'{name}_bucket{{{labels}le="{float(bound)}"}} {cumulative}\n')
    cumulative += bins[-1]
    out.append(f'{name}_bucket{{{labels}le="+Inf"}} {cumulative}\n')
    bare = "{" + labels.rstrip(",") + "}" if labels else ""
    out.append(f"{name}_count{bare} {cumulative}\n")
    out.append(f"{name}_sum{bare} {number(sum_ms / 1000)}\n")
    return "".join(out)


def _campaign_histogram(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    if not any(row.histogram):
        return ""  # no all-zero histogram per campaign
    return _histogram_lines(
        m.RESPONSE_SECONDS.name, f'campaign="{c}",', row.histogram, row.histogram_sum_ms
    )


_COMMON = [
    _Family(m.WINDOW_EVENTS, _window_events),
    _Family(m.WINDOW_REVENUE, _money("revenue_micros", m.WINDOW_REVENUE.name)),
    _Family(m.WINDOW_SPEND, _money("spend_micros", m.WINDOW_SPEND.name)),
    _Family(m.RESPONSE_P50, _quantile("p50_ms", m.RESPONSE_P50.name)),
    _Family(m.RESPONSE_P95, _quantile("p95_ms", m.RESPONSE_P95.name)),
    _Family(m.LEADS_AWAITING, _per_campaign(m.LEADS_AWAITING.name, lambda r: r.awaiting)),
    _Family(m.CONTACTS_UNMATCHED, _per_campaign(m.CONTACTS_UNMATCHED.name, lambda r: r.unmatched)),
    _Family(m.PLAN_TARGET, _plan_values(m.PLAN_TARGET, "kpi", "targets")),
    _Family(m.PLAN_BUDGET, _plan_values(m.PLAN_BUDGET, "period", "budgets")),
    _Family(m.PLAN_INFO, _plan_info),
    _Family(
        m.BUDGET_USED,
        _pacing(m.BUDGET_USED.name, "budget_used_ratio", "flight_budget_used_ratio"),
    ),
    _Family(m.BUDGET_PACING, _pacing(m.BUDGET_PACING.name, "pacing_ratio", "flight_pacing_ratio")),
    _Family(m.DAY_ELAPSED, _day_elapsed),
    _Family(m.BASELINE, _baselines),
    _Family(m.SPEND_OUTSIDE_FLIGHT, _spend_outside_flight),
]

FAMILIES: dict[str, list[_Family]] = {
    "lean": [_Family(m.EVENTS, _events_by_type), *_COMMON],
    "full": [
        _Family(m.EVENTS, _events_by_channel),
        *_COMMON,
        *(_Family(m.CATALOGUE[r.metric], _ratio(i)) for i, r in enumerate(RATIOS)),
        *(
            _Family(m.CATALOGUE[f"{r.metric}_{side}"], _bound(i, s))
            for i, r in enumerate(RATIOS)
            if r.rate
            for s, side in enumerate(("lower", "upper"))
        ),
        _Family(m.RESPONSE_SECONDS, _campaign_histogram),
        _Family(m.PROJECTED_SPEND, _projected_spend),
    ],
}


def render_row(row: CampaignRow, export: str, window_labels: tuple[str, ...]) -> list[str]:
    """One row's lines per family of ``export``, cached on the row."""
    lines = row.formatted.get(export)
    if lines is None:
        c = escape(row.campaign)
        lines = row.formatted[export] = [f.lines(row, c, window_labels) for f in FAMILIES[export]]
    return lines


def render(snap: Snapshot, export: str = "lean") -> str:
    """The whole KPI exposition of ``snap``."""
    return "".join(render_parts(snap, export))


ROWS_PER_PART = 500


def render_parts(snap: Snapshot, export: str = "lean") -> Iterator[str]:
    """The exposition of ``snap`` in small parts (each at most ``ROWS_PER_PART`` rows' worth of
    work, some empty), in order, for callers that let the event loop run in between."""
    if export not in EXPORTS:
        raise ValueError(f"export must be one of {EXPORTS}, got {export!r}")
    labels = window_labels(snap.windows_ms)
    chunks = [snap.rows[i : i + ROWS_PER_PART] for i in range(0, len(snap.rows), ROWS_PER_PART)]
    per_chunk = []
    for rows in chunks:
        per_chunk.append([render_row(row, export, labels) for row in rows])
        yield ""
    for i, family in enumerate(FAMILIES[export]):
        yield header(family.name, family.kind, family.doc)
        for per_row in per_chunk:
            yield "".join(lines[i] for lines in per_row)
    # Depends on the clock, not only on the row: never cached.
    yield spec_header(m.OLDEST_AWAITING_AGE)
    for rows in chunks:
        out = []
        for row in rows:
            age = row.oldest_awaiting_age_seconds(snap.now_ms)
            if age is not None:
                out.append(
                    f'{m.OLDEST_AWAITING_AGE.name}{{campaign="{escape(row.campaign)}"}} '
                    f"{number(age)}\n"
                )
        yield "".join(out)
    channels: dict[tuple[str, int], int] = {}
    bins = [0] * HISTOGRAM_BINS
    sum_ms = 0
    for rows in chunks:
        add_channel_totals(channels, rows)
        sum_ms += add_histogram(bins, rows)
        yield ""
    yield _worker_families(snap, export, channels, bins, sum_ms)


def spec_header(spec: MetricSpec, doc_suffix: str = "") -> str:
    return header(spec.name, spec.kind, spec.doc + doc_suffix)


def _counter(spec: MetricSpec, values: dict[str, int]) -> str:
    lines = [spec_header(spec)]
    label = spec.labels[0]
    lines.extend(f'{spec.sample}{{{label}="{escape(k)}"}} {v}\n' for k, v in sorted(values.items()))
    return "".join(lines)


def _worker_families(
    snap: Snapshot, export: str, channels: dict[tuple[str, int], int], bins: list[int], sum_ms: int
) -> str:
    out = [
        _counter(m.EVENTS_REJECTED, snap.rejected),
        _counter(m.EVENTS_LATE, dict(zip(EVENT_TYPES, snap.late))),
        _counter(m.EVENTS_DUPLICATE, dict(zip(EVENT_TYPES, snap.duplicate))),
        _counter(m.EVENTS_FOLDED, snap.folded_events),
        spec_header(m.CHANNEL_EVENTS),
    ]
    out.extend(
        f'{m.CHANNEL_EVENTS.sample}{{channel="{escape(ch)}",event_type="{EVENT_TYPES[k]}"}} {v}\n'
        for (ch, k), v in sorted(channels.items())
    )
    out.append(spec_header(m.CAMPAIGNS_TRACKED))
    out.append(f"{m.CAMPAIGNS_TRACKED.name} {snap.campaigns_tracked}\n")
    out.append(spec_header(m.CAMPAIGN_BUDGET))
    out.append(f"{m.CAMPAIGN_BUDGET.name} {snap.campaign_budget}\n")
    if export == "lean":
        out.append(spec_header(m.RESPONSE_SECONDS, " (all campaigns)"))
        out.append(_histogram_lines(m.RESPONSE_SECONDS.name, "", bins, sum_ms))
    return "".join(out)
