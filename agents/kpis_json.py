"""The KPI snapshot as plain JSON, for scripts (e.g. campaign auto-pausing).

Formats the same rows as ``/metrics`` (``stream.snapshot``); every KPI is present, ``null`` where
undefined, whatever ``KPI_EXPORT`` says.
"""

from __future__ import annotations

from stream.durations import format_duration
from stream.events import EVENT_TYPES
from stream.snapshot import Snapshot


def snapshot_json(snap: Snapshot) -> dict:
    campaigns: dict[str, dict] = {}
    for row in snap.rows:
        windows = {}
        for win in row.windows:
            windows[format_duration(win.window_ms // 1000)] = {
                "events": dict(zip(EVENT_TYPES, win.counts)),
                "revenue": win.revenue_micros / 1_000_000,
                "spend": win.spend_micros / 1_000_000,
                **win.kpis()._asdict(),
                "sales_response_p50_seconds": None if win.p50_ms is None else win.p50_ms / 1000,
                "sales_response_p95_seconds": None if win.p95_ms is None else win.p95_ms / 1000,
            }
        horizon_kpis = row.horizon_kpis()
        for label, sums in row.horizons.items():
            windows[label] = {
                "events": dict(zip(EVENT_TYPES, sums.counts)),
                "revenue": sums.revenue_micros / 1_000_000,
                "spend": sums.spend_micros / 1_000_000,
                **horizon_kpis[label]._asdict(),
                # Response quantiles come from the minute sketches: trailing windows only.
                "sales_response_p50_seconds": None,
                "sales_response_p95_seconds": None,
            }
        entry: dict = {
            "windows": windows,
            "events_total": dict(zip(EVENT_TYPES, row.kind_totals())),
        }
        if row.plan is not None:
            entry["plan"] = row.plan.to_json()
            pace = row.pacing()
            if pace is not None:
                entry["pacing"] = pace._asdict()
        baselines = row.baselines()
        if baselines:
            # By KPI, window and baseline; null: none yet (cold start: its rules do not judge).
            entry["baselines"] = [
                {"kpi": kpi, "window": window, "baseline": label, "value": value}
                for (kpi, window, label), value in baselines.items()
            ]
        if row.awaiting:
            entry["leads_awaiting_contact"] = row.awaiting
            entry["oldest_uncontacted_lead_age_seconds"] = row.oldest_awaiting_age_seconds(
                snap.now_ms
            )
        campaigns[row.campaign] = entry
    return {
        "generated_at_ms": snap.now_ms,
        "campaigns": campaigns,
        "campaigns_tracked": snap.campaigns_tracked,
        "campaign_budget": snap.campaign_budget,
        "events_folded": snap.folded_events,
    }
