"""The KPI catalogue and formulas over window sums. A ratio whose denominator is zero is None:
absent, not 0.

``RATIOS`` is the one definition of every derived KPI: the worker computes them from it
(``/kpis``, and ``/metrics`` with ``KPI_EXPORT=full``), and the generated Prometheus recording
rules compute the same figures from the exported window sums (``rulebook.recording``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from .events import EVENT_TYPES, MICROS

REVENUE, SPEND = "revenue", "spend"


@dataclass(frozen=True)
class Ratio:
    key: str  # the field of Kpis and of /kpis
    metric: str  # exported name (full export); recording rules record "campaign:" + metric
    doc: str
    numerator: str  # an event type, "revenue" or "spend"
    denominator: str
    rate: bool = False  # a proportion of trials: also gets 95% Wilson bounds
    currency: bool = False  # in the reporting currency


RATIOS = (
    Ratio(
        "ctr",
        "kpi_ctr_ratio",
        "Click-through rate: clicks / impressions",
        "click",
        "impression",
        rate=True,
    ),
    Ratio(
        "conversion",
        "kpi_conversion_ratio",
        "Conversion rate: sales / clicks",
        "sale",
        "click",
        rate=True,
    ),
    Ratio("lead_rate", "kpi_lead_ratio", "Lead rate: leads / clicks", "lead", "click", rate=True),
    Ratio(
        "lead_to_sale",
        "kpi_lead_to_sale_ratio",
        "Lead-to-sale rate: sales / leads",
        "sale",
        "lead",
        rate=True,
    ),
    Ratio("cpc", "kpi_cpc", "Cost per click: spend / clicks", SPEND, "click", currency=True),
    Ratio("cpl", "kpi_cpl", "Cost per lead: spend / leads", SPEND, "lead", currency=True),
    Ratio("cpa", "kpi_cpa", "Cost per acquisition: spend / sales", SPEND, "sale", currency=True),
    Ratio("roas", "kpi_roas_ratio", "Return on ad spend: revenue / spend", REVENUE, SPEND),
    Ratio("aov", "kpi_aov", "Average order value: revenue / sales", REVENUE, "sale", currency=True),
)
RATIO_BY_KEY = {r.key: r for r in RATIOS}


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


assert Kpis._fields == tuple(r.key for r in RATIOS)


def ratio(numerator: float, denominator: float) -> float | None:
    return numerator / denominator if denominator else None


def source_value(
    source: str, counts: list[int] | tuple[int, ...], revenue_micros: int, spend_micros: int
) -> float:
    if source == REVENUE:
        return revenue_micros / MICROS
    if source == SPEND:
        return spend_micros / MICROS
    return counts[EVENT_TYPES.index(source)]


def compute_kpis(
    counts: list[int] | tuple[int, ...], revenue_micros: int, spend_micros: int
) -> Kpis:
    """counts are indexed by event kind (see stream.events.EVENT_TYPES); money in micros."""
    return Kpis(
        *(
            ratio(
                source_value(r.numerator, counts, revenue_micros, spend_micros),
                source_value(r.denominator, counts, revenue_micros, spend_micros),
            )
            for r in RATIOS
        )
    )
