"""The live page's campaign table: the rows of the KPI snapshot, filtered, sorted and cut to one
page, each as a compact summary (the KPIs that matter per window, targets, pacing, what the
rules say of it). Pure: rows, flags and a query in, plain data out.

The worker formats only the page it returns, so the cost of a request is the sort over every row
(one number each) plus the page's summaries, whatever the number of campaigns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from .events import EVENT_TYPES
from .horizons import HORIZONS
from .kpis import compute_kpis
from .plans import effective_plan, main_channel
from .snapshot import CampaignRow
from .state import PartitionState

KPI_COLUMNS = ("ctr", "conversion", "cpa", "roas")
MAX_LIMIT = 500
DEFAULT_LIMIT = 100
# Sort keys other than "<kpi>:<window>".
ATTENTION, CAMPAIGN, OLDEST_LEAD = "attention", "campaign", "oldest_lead"


class TableQuery(NamedTuple):
    sort: str = ATTENTION  # attention | campaign | oldest_lead | <kpi>:<window>
    descending: bool = False
    channel: str | None = None
    owner: str | None = None
    search: str | None = None  # a substring of the campaign id
    limit: int = DEFAULT_LIMIT
    offset: int = 0


class Flags(NamedTuple):
    """What the decision engine says of a campaign: the rules whose condition holds now (from
    the last decision round) and the cluster's last verdict per rule (``/decisions``)."""

    holding: tuple[dict, ...] = ()
    verdicts: Mapping[str, str] = {}


NO_FLAGS = Flags()


def parse_query(params: Mapping[str, str], labels: Iterable[str]) -> TableQuery:
    """The query string of ``/kpis?view=table``; ``ValueError`` names the bad parameter.
    ``labels`` are the trailing windows; the long horizons sort too."""
    labels = {*labels, *HORIZONS}
    sort = params.get("sort") or ATTENTION
    if sort not in (ATTENTION, CAMPAIGN, OLDEST_LEAD):
        kpi, _, window = sort.partition(":")
        if kpi not in (*KPI_COLUMNS, "spend", "revenue", "impressions", "clicks") or (
            window not in labels
        ):
            raise ValueError(
                f"sort: {sort!r} is not attention, campaign, oldest_lead or <kpi>:<window> "
                f"(kpi one of {', '.join(KPI_COLUMNS)}, spend, revenue, impressions, clicks; "
                f"window one of {', '.join(sorted(labels))})"
            )
    order = params.get("order") or ("asc" if sort in (ATTENTION, CAMPAIGN) else "desc")
    if order not in ("asc", "desc"):
        raise ValueError(f"order: {order!r} is not asc or desc")
    limit = _integer(params, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    offset = _integer(params, "offset", 0, 0, 10**9)
    return TableQuery(
        sort,
        order == "desc",
        params.get("channel") or None,
        params.get("owner") or None,
        params.get("q") or None,
        limit,
        offset,
    )


def _integer(params: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = params.get(name)
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}: {raw!r} is not a whole number") from None
    if not low <= value <= high:
        raise ValueError(f"{name}: {value} is not within {low}..{high}")
    return value


def channel_of(row: CampaignRow) -> str | None:
    return main_channel(row.by_channel)


def owner_of(row: CampaignRow) -> str | None:
    return row.plan.labels.get("owner") if row.plan is not None else None


def attention(flags: Flags) -> int:
    """0: paused (a standing pause verdict), 1: a rule's condition holds, 2: quiet."""
    if any(v == "pause" for v in flags.verdicts.values()):
        return 0
    return 1 if flags.holding else 2


def window_figures(row: CampaignRow, labels: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per window label (trailing windows, then the long horizons): counts, money and KPIs."""
    out: dict[str, dict[str, Any]] = {}
    for label, win in zip(labels, row.windows):
        out[label] = _figures(win.counts, win.revenue_micros, win.spend_micros)
        out[label]["response_p95_seconds"] = None if win.p95_ms is None else win.p95_ms / 1000
    for label, sums in row.horizons.items():
        out[label] = _figures(sums.counts, sums.revenue_micros, sums.spend_micros)
    return out


def _figures(counts: list[int], revenue_micros: int, spend_micros: int) -> dict[str, Any]:
    kpis = compute_kpis(counts, revenue_micros, spend_micros)
    figures: dict[str, Any] = dict(zip(EVENT_TYPES, counts))
    figures["impressions"] = figures.pop("impression")
    figures["clicks"] = figures.pop("click")
    figures["leads"] = figures.pop("lead")
    figures["sales"] = figures.pop("sale")
    figures["contacts"] = figures.pop("sales_contact")
    figures["spend"] = spend_micros / 1_000_000
    figures["revenue"] = revenue_micros / 1_000_000
    figures.update(kpis._asdict())  # every ratio KPI (the page shows KPI_COLUMNS)
    return figures


def summary(
    row: CampaignRow, labels: tuple[str, ...], now_ms: int, flags: Flags = NO_FLAGS
) -> dict[str, Any]:
    pace = row.pacing()
    return {
        "campaign": row.campaign,
        "channel": channel_of(row),
        "owner": owner_of(row),
        "windows": window_figures(row, labels),
        "targets": dict(row.plan.targets) if row.plan is not None else {},
        "pacing": pace._asdict() if pace is not None else None,
        "leads_awaiting_contact": row.awaiting,
        "oldest_uncontacted_lead_age_seconds": row.oldest_awaiting_age_seconds(now_ms),
        "holding": list(flags.holding),
        "verdicts": dict(flags.verdicts),
        "attention": attention(flags),
    }


def _sort_value(row: CampaignRow, sort: str, labels: tuple[str, ...], now_ms: int) -> Any:
    if sort == OLDEST_LEAD:
        return row.oldest_awaiting_age_seconds(now_ms)
    kpi, _, window = sort.partition(":")
    if window in labels:
        win = row.windows[labels.index(window)]
        counts, revenue, spend = win.counts, win.revenue_micros, win.spend_micros
    elif window in row.horizons:
        sums = row.horizons[window]
        counts, revenue, spend = sums.counts, sums.revenue_micros, sums.spend_micros
    else:
        return None
    if kpi == "spend":
        return spend
    if kpi == "revenue":
        return revenue
    if kpi == "impressions":
        return counts[0]
    if kpi == "clicks":
        return counts[1]
    return getattr(compute_kpis(counts, revenue, spend), kpi)


class Candidate(NamedTuple):
    """What the table filters and orders by without building a row."""

    campaign: str
    channel: str | None
    owner: str | None


def candidates(states: Iterable[PartitionState]) -> list[Candidate]:
    """Every campaign of ``states`` (a split campaign once, its channels summed), with its main
    channel and its effective plan's owner: read from the state, no row built."""
    channels: dict[str, dict[str, int]] = {}
    holders: dict[str, PartitionState] = {}
    for state in sorted(states, key=lambda s: s.partition):
        for name, campaign_state in list(state.campaigns.items()):
            totals = channels.setdefault(name, {})
            holders.setdefault(name, state)
            for channel, counts in campaign_state.by_channel.items():
                totals[channel] = totals.get(channel, 0) + sum(counts)
    out = []
    for name, totals in channels.items():
        main = min(totals, key=lambda ch: (-totals[ch], ch)) if totals else None
        plan = effective_plan(holders[name].plans, name, main)
        out.append(Candidate(name, main, plan.labels.get("owner") if plan else None))
    return out


def needs_rows(query: TableQuery) -> bool:
    """Whether the order reads the campaigns' figures (every row built) or not (the page's)."""
    return query.sort not in (ATTENTION, CAMPAIGN)


def select(
    items: Iterable[Candidate], flags: Mapping[str, Flags], query: TableQuery
) -> tuple[list[str], dict[str, Any]]:
    """For an order that reads no figure (attention, campaign): the campaigns of the page, in
    order, and the page's counts (``total``, ``matched``, ``channels``, ``owners``)."""
    assert not needs_rows(query)
    counts, matched = _filtered(items, query)
    matched.sort(key=_name_order(query, flags), reverse=query.descending)
    return [c.campaign for c in matched[query.offset : query.offset + query.limit]], counts


def _name_order(query: TableQuery, flags: Mapping[str, Flags]) -> Callable[[Any], tuple]:
    """The sort key of an order that reads no figure, for rows and candidates alike."""
    if query.sort == ATTENTION:
        return lambda item: (attention(flags.get(item.campaign, NO_FLAGS)), item.campaign)
    return lambda item: (item.campaign,)


def _filtered(items: Iterable[Any], query: TableQuery) -> tuple[dict[str, Any], list[Any]]:
    """Items (rows or candidates: ``campaign``, and ``channel``/``owner`` or a row's) that pass
    the filters, and the counts of the page."""
    matched = []
    channels: set[str] = set()
    owners: set[str] = set()
    total = 0
    for item in items:
        total += 1
        if isinstance(item, Candidate):
            channel, owner = item.channel, item.owner
        else:
            channel, owner = channel_of(item), owner_of(item)
        if channel:
            channels.add(channel)
        if owner:
            owners.add(owner)
        if query.channel is not None and channel != query.channel:
            continue
        if query.owner is not None and owner != query.owner:
            continue
        if query.search is not None and query.search.lower() not in item.campaign.lower():
            continue
        matched.append(item)
    counts = {
        "total": total,
        "matched": len(matched),
        "channels": sorted(channels),
        "owners": sorted(owners),
    }
    return counts, matched


def table(
    rows: Iterable[CampaignRow],
    labels: tuple[str, ...],
    now_ms: int,
    flags: Mapping[str, Flags],
    query: TableQuery,
) -> dict[str, Any]:
    """One page of the campaign table from every row: campaigns needing attention first
    (paused, then a rule holding) unless sorted otherwise; a value that is not there (no data)
    sorts last either way. ``channels`` and ``owners`` list what the filters can take."""
    counts, matched = _filtered(rows, query)

    def by_figure(row: CampaignRow) -> tuple:
        value = _sort_value(row, query.sort, labels, now_ms)
        if value is None:
            return (1, 0, row.campaign)
        return (0, -value if query.descending else value, row.campaign)

    if needs_rows(query):
        matched.sort(key=by_figure)
    else:
        matched.sort(key=_name_order(query, flags), reverse=query.descending)
    page = matched[query.offset : query.offset + query.limit]
    return page_body(page, labels, now_ms, flags, query, counts)


def page_body(
    page: list[CampaignRow],
    labels: tuple[str, ...],
    now_ms: int,
    flags: Mapping[str, Flags],
    query: TableQuery,
    counts: Mapping[str, Any],
) -> dict[str, Any]:
    """The JSON of one page of rows (in the page's order)."""
    return {
        "generated_at_ms": now_ms,
        **counts,
        "offset": query.offset,
        "limit": query.limit,
        "sort": query.sort,
        "order": "desc" if query.descending else "asc",
        "windows": [*labels, *_horizon_labels(page)],
        "campaigns": [
            summary(row, labels, now_ms, flags.get(row.campaign, NO_FLAGS)) for row in page
        ],
    }


def _horizon_labels(rows: list[CampaignRow]) -> list[str]:
    seen: dict[str, None] = {}
    for row in rows:
        for label in row.horizons:
            seen.setdefault(label, None)
    return list(seen)
