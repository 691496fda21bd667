"""The KPI snapshot as plain JSON, for scripts (e.g. campaign auto-pausing)."""

from __future__ import annotations

from stream.durations import format_duration
from stream.events import EVENT_TYPES
from stream.snapshot import Snapshot


def snapshot_json(snap: Snapshot) -> dict:
    campaigns: dict[str, dict] = {}
    for (campaign, window_ms), sums in sorted(snap.windows.items()):
        entry = campaigns.setdefault(campaign, {"windows": {}})
        kpis = snap.kpis(campaign, window_ms)._asdict()
        entry["windows"][format_duration(window_ms // 1000)] = {
            "events": dict(zip(EVENT_TYPES, sums.counts)),
            "revenue": sums.revenue_micros / 1_000_000,
            "spend": sums.spend_micros / 1_000_000,
            **kpis,
            "sales_response_p50_seconds": snap.response_quantile_seconds(campaign, window_ms, 0.5),
            "sales_response_p95_seconds": snap.response_quantile_seconds(campaign, window_ms, 0.95),
        }
    for campaign, count in snap.awaiting_contact.items():
        entry = campaigns.setdefault(campaign, {"windows": {}})
        entry["leads_awaiting_contact"] = count
        entry["oldest_uncontacted_lead_age_seconds"] = snap.oldest_awaiting_age_seconds(campaign)
    return {"generated_at_ms": snap.now_ms, "campaigns": campaigns}
