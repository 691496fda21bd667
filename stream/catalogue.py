"""Every metric the workers export: name, type, help and labels, in one place.

The exporter (``stream.exposition``, ``agents.metrics``) builds its families from these entries,
and the generated Prometheus rules, Grafana alerts and dashboards (``rulebook``) name metrics only
through them, so a renamed metric cannot leave a query reading nothing. Counter names are given
without ``_total``, as prometheus_client and the exposition header take them.
"""

from __future__ import annotations

from typing import NamedTuple

from .kpis import RATIOS


class MetricSpec(NamedTuple):
    name: str
    kind: str  # counter | gauge | histogram
    doc: str
    labels: tuple[str, ...] = ()

    @property
    def sample(self) -> str:
        """The name a query reads (``_total`` for counters)."""
        return self.name + "_total" if self.kind == "counter" else self.name


def _spec(name: str, kind: str, doc: str, *labels: str) -> MetricSpec:
    return MetricSpec(name, kind, doc, labels)


RESPONSE_DOC = "Time from a lead to its first sales contact, once per lead"

# -- per campaign, read from the partition state at scrape time ------------------------------------
EVENTS = _spec(
    "kpi_events",
    "counter",
    "Valid events counted, by campaign and type (and channel with KPI_EXPORT=full)",
    "campaign",
    "event_type",
)
WINDOW_EVENTS = _spec(
    "kpi_window_events",
    "gauge",
    "Events in the window: trailing (5m, 15m, 1h) or a long horizon in the campaign's time zone "
    "(today, 7d, 30d: calendar days including today; not sales contacts)",
    "campaign",
    "event_type",
    "window",
)
WINDOW_REVENUE = _spec(
    "kpi_window_revenue",
    "gauge",
    "Revenue in the window (reporting currency; windows as kpi_window_events, and flight: since "
    "its plan's flight began)",
    "campaign",
    "window",
)
WINDOW_SPEND = _spec(
    "kpi_window_spend",
    "gauge",
    "Spend in the window (reporting currency; windows as kpi_window_events, and flight: since "
    "its plan's flight began)",
    "campaign",
    "window",
)
RESPONSE_P50 = _spec(
    "kpi_sales_response_p50_seconds",
    "gauge",
    "Median lead-to-first-contact time of contacts in the window",
    "campaign",
    "window",
)
RESPONSE_P95 = _spec(
    "kpi_sales_response_p95_seconds",
    "gauge",
    "95th percentile lead-to-first-contact time of contacts in the window",
    "campaign",
    "window",
)
LEADS_AWAITING = _spec(
    "kpi_leads_awaiting_contact", "gauge", "Leads with no sales contact yet", "campaign"
)
CONTACTS_UNMATCHED = _spec(
    "kpi_sales_contacts_unmatched",
    "gauge",
    "Sales contacts whose lead has not been seen",
    "campaign",
)
OLDEST_AWAITING_AGE = _spec(
    "kpi_oldest_uncontacted_lead_age_seconds",
    "gauge",
    "Age of the oldest lead still awaiting its first contact",
    "campaign",
)
RESPONSE_SECONDS = _spec("kpi_sales_response_seconds", "histogram", RESPONSE_DOC, "campaign")
# -- per campaign with a plan (stream.plans): what it is judged against, and its pacing ------------
PLAN_TARGET = _spec(
    "kpi_plan_target",
    "gauge",
    "The campaign's target for a KPI (its plan, else its channel's default): ratios as shares, "
    "money in the reporting currency, response_p95 in seconds",
    "campaign",
    "kpi",
)
PLAN_BUDGET = _spec(
    "kpi_plan_budget",
    "gauge",
    "The campaign's budget (reporting currency), by period: daily, total (the flight's)",
    "campaign",
    "period",
)
PLAN_INFO = _spec(
    "kpi_plan_info",
    "gauge",
    "1 per campaign with a plan; its routing labels (owner, team, market) and time zone, for "
    "joins on(campaign)",
    "campaign",
    "owner",
    "team",
    "market",
    "timezone",
)
BUDGET_USED = _spec(
    "kpi_budget_used_ratio",
    "gauge",
    "Spend over the budget, by period: daily (spend today) or flight (spend since the flight "
    "began, against the total budget)",
    "campaign",
    "period",
)
BUDGET_PACING = _spec(
    "kpi_budget_pacing_ratio",
    "gauge",
    "Spend over the budget's share for the time elapsed (1 on plan, above 1 overspending), by "
    "period: daily or flight",
    "campaign",
    "period",
)
DAY_ELAPSED = _spec(
    "kpi_day_elapsed_seconds",
    "gauge",
    "Time since the campaign's last midnight in its time zone (campaigns with a budget): rules on "
    "pacing wait for the first hours of the day",
    "campaign",
)
BASELINE = _spec(
    "kpi_baseline",
    "gauge",
    "The campaign's own normal for a KPI over a window, as the rules read it (stream.baselines): "
    "same_hour_of_week_Nw is the median of the same hours in the last N weeks, trailing_Nd the "
    "KPI over the N days before the window; no series before the campaign has one (cold start)",
    "campaign",
    "kpi",
    "window",
    "baseline",
)
SPEND_OUTSIDE_FLIGHT = _spec(
    "kpi_spend_outside_flight",
    "gauge",
    "Spend today while today is outside the plan's flight (before its start or after its end); "
    "no series inside the flight",
    "campaign",
)
PROJECTED_SPEND = _spec(
    "kpi_projected_spend",
    "gauge",
    "Spend today projected to the end of the campaign's day at today's rate (KPI_EXPORT=full)",
    "campaign",
)

# -- per worker ------------------------------------------------------------------------------------
EVENTS_REJECTED = _spec(
    "kpi_events_rejected", "counter", "Events rejected to the dead-letter topic", "reason"
)
EVENTS_LATE = _spec(
    "kpi_events_late",
    "counter",
    "Events too old for the short windows' buckets: in totals and the long horizons, if within",
    "event_type",
)
EVENTS_DUPLICATE = _spec(
    "kpi_events_duplicate",
    "counter",
    "Events dropped as producer-side duplicates (same event_id)",
    "event_type",
)
EVENTS_FOLDED = _spec(
    "kpi_events_folded",
    "counter",
    'Events counted under "__other__" because the partition\'s campaign or channel budget was full',
    "budget",
)
CHANNEL_EVENTS = _spec(
    "kpi_channel_events",
    "counter",
    "Valid events counted, by channel and type (all campaigns)",
    "channel",
    "event_type",
)
CAMPAIGNS_TRACKED = _spec(
    "kpi_campaigns_tracked",
    "gauge",
    "Campaigns with their own state in the partitions this worker owns",
)
CAMPAIGN_BUDGET = _spec(
    "kpi_campaign_budget",
    "gauge",
    "Campaigns the owned partitions may track before folding into __other__",
)
PARTITIONS_OWNED = _spec(
    "kpi_partitions_owned", "gauge", "Input partitions whose state this worker holds and exports"
)
CAMPAIGNS_SPLIT = _spec(
    "kpi_campaigns_in_several_partitions",
    "gauge",
    "Campaigns this worker holds in more than one of its input partitions: their producers do "
    "not key events by campaign_id, and each partition judges part of the campaign",
)
CONSUMER_LAG = _spec(
    "kpi_consumer_lag_messages",
    "gauge",
    "Messages in the input partition not yet folded into state",
    "topic",
    "partition",
)
BATCHES = _spec("kpi_batches", "counter", "Batches processed by this worker process")
MESSAGES_REPLAYED = _spec(
    "kpi_messages_replayed",
    "counter",
    "Messages skipped because the state already held them (replay after restart)",
)
MESSAGES_UNOWNED = _spec(
    "kpi_messages_unowned", "counter", "Messages dropped for partitions this worker no longer owns"
)
BATCH_SECONDS = _spec(
    "kpi_batch_duration_seconds", "histogram", "Time to fold one batch into state"
)
DEAD_LETTERS = _spec(
    "kpi_dead_letters_sent", "counter", "Rejected events sent to the dead-letter topic"
)
RECORDS_FAILED = _spec(
    "kpi_records_failed",
    "counter",
    "Records whose fold raised where validation did not expect it: dead-lettered with reason "
    "internal_error and skipped, the worker going on (a defect: report it with the dead letter)",
    "topic",
)
LOCAL_STORE_FALLBACKS = _spec(
    "kpi_local_store_fallbacks",
    "counter",
    "Times the local state file could not be used and the worker read the changelog instead: "
    "foreign (another app's or format's file, set aside), corrupt (set aside), unwritable (disk "
    "full or read-only), gap (a write found the file short: the partition dropped from it), "
    "unavailable",
    "reason",
)
LOOP_LAG_SECONDS = _spec(
    "kpi_event_loop_lag_seconds",
    "histogram",
    "How late the worker's event loop ran a 10 ms ticker: time it was blocked",
)
GC_PAUSE_SECONDS = _spec(
    "kpi_gc_pause_seconds",
    "histogram",
    "Time one cyclic garbage collection held the worker's event loop, by generation",
    "generation",
)
RENDER_SECONDS = _spec(
    "kpi_metrics_render_seconds",
    "histogram",
    "Time to render the KPI families of one /metrics scrape",
)

# -- auto-pause decisions (autopause), per worker ---------------------------------------------------
DECISIONS = _spec(
    "kpi_decisions",
    "counter",
    "Auto-pause decisions issued, by rule and verdict",
    "rule",
    "verdict",
)
BREAKER_OPEN = _spec(
    "kpi_autopause_breaker_open",
    "gauge",
    "1 while too many campaigns trip the rule at once: pauses are suppressed",
    "rule",
)
AUTOPAUSE_CAMPAIGNS = _spec(
    "kpi_autopause_campaigns",
    "gauge",
    "Campaigns by auto-pause state (pending, paused, held, unknown, suppressed; no_baseline: "
    "not judged, no baseline of its own yet), by rule",
    "rule",
    "state",
)
DECISIONS_UNSENT = _spec(
    "kpi_decisions_unsent",
    "gauge",
    "Decisions issued but not yet acknowledged by the decisions topic",
)

# -- the reference pauser (``kpi-monitor pauser --metrics-port``), per pauser process ------------
PAUSER_HELD = _spec(
    "kpi_pauser_held",
    "gauge",
    "1 while the pauser holds a decision (acts on nothing, consumes nothing further), by reason: "
    "kill_switch, rate_limit, share_limit, population_unknown, claimed_elsewhere",
    "reason",
)
PAUSER_HELD_SECONDS = _spec(
    "kpi_pauser_held_seconds", "gauge", "How long the current hold has lasted (0: not held)"
)
PAUSER_DECISIONS = _spec(
    "kpi_pauser_decisions",
    "counter",
    "Messages the pauser finished with, by outcome (done, already, given_up, skipped, dropped, "
    "noted, shadow, refused, error)",
    "outcome",
)

# -- derived: exported per campaign with KPI_EXPORT=full; recorded by Prometheus otherwise ---------
RATIO_METRICS = tuple(
    spec
    for r in RATIOS
    for spec in (
        _spec(r.metric, "gauge", r.doc, "campaign", "window"),
        *(
            _spec(
                f"{r.metric}_{side}",
                "gauge",
                f"95% Wilson {side} bound of {r.metric}",
                "campaign",
                "window",
            )
            for side in (("lower", "upper") if r.rate else ())
        ),
    )
)

CATALOGUE: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        EVENTS,
        WINDOW_EVENTS,
        WINDOW_REVENUE,
        WINDOW_SPEND,
        RESPONSE_P50,
        RESPONSE_P95,
        LEADS_AWAITING,
        CONTACTS_UNMATCHED,
        OLDEST_AWAITING_AGE,
        RESPONSE_SECONDS,
        PLAN_TARGET,
        PLAN_BUDGET,
        PLAN_INFO,
        BUDGET_USED,
        BUDGET_PACING,
        PROJECTED_SPEND,
        DAY_ELAPSED,
        BASELINE,
        SPEND_OUTSIDE_FLIGHT,
        EVENTS_REJECTED,
        EVENTS_LATE,
        EVENTS_DUPLICATE,
        EVENTS_FOLDED,
        CHANNEL_EVENTS,
        CAMPAIGNS_TRACKED,
        CAMPAIGN_BUDGET,
        PARTITIONS_OWNED,
        CAMPAIGNS_SPLIT,
        CONSUMER_LAG,
        BATCHES,
        MESSAGES_REPLAYED,
        MESSAGES_UNOWNED,
        BATCH_SECONDS,
        DEAD_LETTERS,
        RECORDS_FAILED,
        LOCAL_STORE_FALLBACKS,
        LOOP_LAG_SECONDS,
        GC_PAUSE_SECONDS,
        RENDER_SECONDS,
        DECISIONS,
        BREAKER_OPEN,
        AUTOPAUSE_CAMPAIGNS,
        DECISIONS_UNSENT,
        PAUSER_HELD,
        PAUSER_HELD_SECONDS,
        PAUSER_DECISIONS,
        *RATIO_METRICS,
    )
}
