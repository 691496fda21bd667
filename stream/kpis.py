"""KPI formulas over window sums. A ratio whose denominator is zero is None: absent, not 0."""

from __future__ import annotations

from typing import NamedTuple

from .events import CLICK, IMPRESSION, LEAD, MICROS, SALE


class Kpis(NamedTuple):
    ctr: float | None
    conversion: float | None
    lead_rate: float | None
    lead_to_sale: float | None
    cpc: float | None
    cpl: float | None
    cpa: float | None
    roas: float | None
    aov: float | None


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def compute_kpis(counts: list[int] | tuple[int, ...], revenue_micros: int, spend_micros: int) -> Kpis:
    """counts are indexed by event kind (see stream.events.EVENT_TYPES); money in micros."""
    impressions, clicks, leads, sales = counts[IMPRESSION], counts[CLICK], counts[LEAD], counts[SALE]
    revenue = revenue_micros / MICROS
    spend = spend_micros / MICROS
    return Kpis(
        ctr=ratio(clicks, impressions),
        conversion=ratio(sales, clicks),
        lead_rate=ratio(leads, clicks),
        lead_to_sale=ratio(sales, leads),
        cpc=ratio(spend, clicks),
        cpl=ratio(spend, leads),
        cpa=ratio(spend, sales),
        roas=ratio(revenue, spend),
        aov=ratio(revenue, sales),
    )
