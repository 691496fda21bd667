"""The KPI snapshot in the Prometheus text exposition format (version 0.0.4), written by hand.

prometheus_client renders ~10 µs per series here; thousands of campaigns make that seconds on the
worker's event loop. This writer renders each campaign's lines once per row (rows are cached
until the campaign changes or its windows move, see ``stream.snapshot``) and joins them per
metric family, as the format requires (all samples of a family in one group).

Two exports (``KPI_EXPORT``):
- ``lean`` (default): per campaign only what cannot be derived in PromQL — window sums by event
  type, revenue and spend, response-time quantiles, all-time counts by event type, and the
  leads-awaiting figures: at most ``LEAN_SERIES_PER_CAMPAIGN`` series. Ratios and their Wilson
  bounds are Prometheus recording rules (``stream.recording``); channels and the response-time
  histogram are exported across campaigns.
- ``full``: also every ratio and bound per campaign and window, counts by campaign and channel,
  and the response-time histogram per campaign (~90 series per campaign).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Callable, Iterable, Iterator

from .durations import format_duration
from .events import EVENT_TYPES
from .kpis import RATIOS
from .leads import HISTOGRAM_BINS, HISTOGRAM_BOUNDS_SECONDS
from .snapshot import CampaignRow, Snapshot, add_channel_totals, add_histogram

EXPORTS = ("lean", "full")
LEAN_SERIES_PER_CAMPAIGN = 35  # 5 all-time + 3 windows x (5 events + revenue + spend + p50 + p95) + 3
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

    def __init__(self, name: str, kind: str, doc: str,
                 lines: Callable[[CampaignRow, str, tuple[str, ...]], str]) -> None:
        self.name, self.kind, self.doc, self.lines = name, kind, doc, lines


def window_labels(windows_ms: Iterable[int]) -> tuple[str, ...]:
    return tuple(format_duration(w // 1000) for w in windows_ms)


# -- per-campaign families (c is the escaped campaign, w the window labels) ------------------------
# The frequent families format one campaign's values into a cached template with one ``%``:
# a campaign's lines cost one C-level format call per family instead of one f-string per line.

@lru_cache(maxsize=1 << 16)
def _templates(c: str, w: tuple[str, ...]) -> dict[str, str]:
    c = c.replace("%", "%%")
    out = {
        "events": "".join(f'kpi_events_total{{campaign="{c}",event_type="{t}"}} %d\n'
                          for t in EVENT_TYPES),
        "window_events": "".join(f'kpi_window_events{{campaign="{c}",event_type="{t}",window="{label}"}} %d\n'
                                 for label in w for t in EVENT_TYPES),
    }
    for name in ("kpi_window_revenue", "kpi_window_spend", "kpi_sales_response_p50_seconds",
                 "kpi_sales_response_p95_seconds"):
        out[name] = "".join(f'{name}{{campaign="{c}",window="{label}"}} %r\n' for label in w)
    return out


def _events_by_type(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    return _templates(c, w)["events"] % tuple(row.kind_totals())


def _events_by_channel(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    return "".join(
        f'kpi_events_total{{campaign="{c}",channel="{escape(ch)}",event_type="{t}"}} {counts[k]}\n'
        for ch, counts in sorted(row.by_channel.items()) for k, t in enumerate(EVENT_TYPES))


def _window_events(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
    return _templates(c, w)["window_events"] % tuple(n for win in row.windows for n in win.counts)


def _money(attr: str, name: str) -> Callable[[CampaignRow, str, tuple[str, ...]], str]:
    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        return _templates(c, w)[name] % tuple(getattr(win, attr) / 1_000_000 for win in row.windows)
    return lines


def _quantile(attr: str, name: str) -> Callable[[CampaignRow, str, tuple[str, ...]], str]:
    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        values = [getattr(win, attr) for win in row.windows]
        if None not in values:
            return _templates(c, w)[name] % tuple(v / 1000 for v in values)
        return "".join(f'{name}{{campaign="{c}",window="{label}"}} {number(value / 1000)}\n'
                       for value, label in zip(values, w) if value is not None)
    return lines


def _per_campaign(name: str, value: Callable[[CampaignRow], int]) -> Callable[..., str]:
    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        v = value(row)
        return f'{name}{{campaign="{c}"}} {v}\n' if v else ""
    return lines


def _ratio(index: int) -> Callable[[CampaignRow, str, tuple[str, ...]], str]:
    metric = RATIOS[index].metric

    def lines(row: CampaignRow, c: str, w: tuple[str, ...]) -> str:
        out = []
        for win, label in zip(row.windows, w):
            value = win.kpis()[index]
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
        for win, label in zip(row.windows, w):
            bounds = win.wilson(successes, trials)
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
    return _histogram_lines("kpi_sales_response_seconds", f'campaign="{c}",', row.histogram,
                            row.histogram_sum_ms)


_HISTOGRAM_DOC = "Time from a lead to its first sales contact, once per lead"

_COMMON = [
    _Family("kpi_window_events", "gauge", "Events in the trailing window", _window_events),
    _Family("kpi_window_revenue", "gauge", "Revenue in the trailing window (reporting currency)",
            _money("revenue_micros", "kpi_window_revenue")),
    _Family("kpi_window_spend", "gauge", "Spend in the trailing window (reporting currency)",
            _money("spend_micros", "kpi_window_spend")),
    _Family("kpi_sales_response_p50_seconds", "gauge",
            "Median lead-to-first-contact time of contacts in the window",
            _quantile("p50_ms", "kpi_sales_response_p50_seconds")),
    _Family("kpi_sales_response_p95_seconds", "gauge",
            "95th percentile lead-to-first-contact time of contacts in the window",
            _quantile("p95_ms", "kpi_sales_response_p95_seconds")),
    _Family("kpi_leads_awaiting_contact", "gauge", "Leads with no sales contact yet",
            _per_campaign("kpi_leads_awaiting_contact", lambda r: r.awaiting)),
    _Family("kpi_sales_contacts_unmatched", "gauge", "Sales contacts whose lead has not been seen",
            _per_campaign("kpi_sales_contacts_unmatched", lambda r: r.unmatched)),
]

FAMILIES: dict[str, list[_Family]] = {
    "lean": [_Family("kpi_events", "counter", "Valid events counted, by campaign and type",
                     _events_by_type), *_COMMON],
    "full": [
        _Family("kpi_events", "counter", "Valid events counted, by campaign, channel and type",
                _events_by_channel),
        *_COMMON,
        *(_Family(r.metric, "gauge", r.doc, _ratio(i)) for i, r in enumerate(RATIOS)),
        *(_Family(f"{r.metric}_{side}", "gauge", f"95% Wilson {side} bound of {r.metric}",
                  _bound(i, s))
          for i, r in enumerate(RATIOS) if r.rate for s, side in enumerate(("lower", "upper"))),
        _Family("kpi_sales_response_seconds", "histogram", _HISTOGRAM_DOC, _campaign_histogram),
    ],
}


def render_row(row: CampaignRow, export: str, window_labels: tuple[str, ...]) -> list[str]:
    """One row's lines per family of ``export``, cached on the row."""
    lines = row.formatted.get(export)
    if lines is None:
        c = escape(row.campaign)
        lines = row.formatted[export] = [f.lines(row, c, window_labels) for f in FAMILIES[export]]
    return lines  # type: ignore[return-value]


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
    chunks = [snap.rows[i:i + ROWS_PER_PART] for i in range(0, len(snap.rows), ROWS_PER_PART)]
    per_chunk = []
    for rows in chunks:
        per_chunk.append([render_row(row, export, labels) for row in rows])
        yield ""
    for i, family in enumerate(FAMILIES[export]):
        yield header(family.name, family.kind, family.doc)
        for per_row in per_chunk:
            yield "".join(lines[i] for lines in per_row)
    # Depends on the clock, not only on the row: never cached.
    yield header("kpi_oldest_uncontacted_lead_age_seconds", "gauge",
                 "Age of the oldest lead still awaiting its first contact")
    for rows in chunks:
        out = []
        for row in rows:
            age = row.oldest_awaiting_age_seconds(snap.now_ms)
            if age is not None:
                out.append(f'kpi_oldest_uncontacted_lead_age_seconds{{campaign="{escape(row.campaign)}"}} '
                           f"{number(age)}\n")
        yield "".join(out)
    channels: dict[tuple[str, int], int] = {}
    bins = [0] * HISTOGRAM_BINS
    sum_ms = 0
    for rows in chunks:
        add_channel_totals(channels, rows)
        sum_ms += add_histogram(bins, rows)
        yield ""
    yield _worker_families(snap, export, channels, bins, sum_ms)


def _counter(name: str, doc: str, label: str, values: dict[str, int]) -> str:
    lines = [header(name, "counter", doc)]
    lines.extend(f'{name}_total{{{label}="{escape(k)}"}} {v}\n' for k, v in sorted(values.items()))
    return "".join(lines)


def _worker_families(snap: Snapshot, export: str, channels: dict[tuple[str, int], int],
                     bins: list[int], sum_ms: int) -> str:
    out = [
        _counter("kpi_events_rejected", "Events rejected to the dead-letter topic", "reason",
                 snap.rejected),
        _counter("kpi_events_late", "Events whose bucket had expired: in totals, in no window",
                 "event_type", dict(zip(EVENT_TYPES, snap.late))),
        _counter("kpi_events_duplicate", "Events dropped as producer-side duplicates (same event_id)",
                 "event_type", dict(zip(EVENT_TYPES, snap.duplicate))),
        _counter("kpi_events_folded",
                 'Events counted under "__other__" because the partition\'s campaign or channel '
                 "budget was full", "budget", snap.folded_events),
        header("kpi_channel_events", "counter", "Valid events counted, by channel and type (all campaigns)"),
    ]
    out.extend(f'kpi_channel_events_total{{channel="{escape(ch)}",event_type="{EVENT_TYPES[k]}"}} {v}\n'
               for (ch, k), v in sorted(channels.items()))
    out.append(header("kpi_campaigns_tracked", "gauge",
                      "Campaigns with their own state in the partitions this worker owns"))
    out.append(f"kpi_campaigns_tracked {snap.campaigns_tracked}\n")
    out.append(header("kpi_campaign_budget", "gauge",
                      "Campaigns the owned partitions may track before folding into __other__"))
    out.append(f"kpi_campaign_budget {snap.campaign_budget}\n")
    if export == "lean":
        out.append(header("kpi_sales_response_seconds", "histogram",
                          _HISTOGRAM_DOC + " (all campaigns)"))
        out.append(_histogram_lines("kpi_sales_response_seconds", "", bins, sum_ms))
    return "".join(out)
