"""Drive PartitionState the way the agent does, and simulate crashes on its record log."""

from __future__ import annotations

from collections.abc import Callable

from stream import changelog
from stream.codec import decode_key
from stream.events import ValidationRules, decode_message
from stream.state import PLANS, PartitionState, StateConfig
from tests.factories import NOW_MS

RULES = ValidationRules("USD", 300_000)
CONFIG = StateConfig(
    bucket_ms=60_000,
    retention_ms=4_200_000,
    dedup_horizon_ms=600_000,
    dedup_max_ids=1_000_000,
    lead_ttl_ms=7 * 86_400_000,
)

Msg = tuple  # (kind, offset, value) or (kind, offset, value, Kafka timestamp ms)
# The plans topic's messages: (PLAN_KIND, offset, (key, value)).
PLAN_KIND = PLANS


def as_messages(payloads: list[tuple[int, bytes]]) -> list[Msg]:
    """Give each (kind, value) the next offset of its topic."""
    next_offset = [0] * (PLAN_KIND + 1)
    out = []
    for kind, value in payloads:
        out.append((kind, next_offset[kind], value))
        next_offset[kind] += 1
    return out


def run(
    messages: list[Msg],
    *,
    state: PartitionState | None = None,
    batch: int = 7,
    config: StateConfig = CONFIG,
    now_ms: int = NOW_MS,
    finish: Callable[[PartitionState], list | None] = changelog.finish_batch,
) -> tuple[PartitionState, list]:
    """Fold ``messages`` in batches; ``finish`` ends each (its records make the log)."""
    state = state or PartitionState(0, config)
    log: list = []
    for start in range(0, len(messages), batch):
        for kind, offset, value, *timestamp in messages[start : start + batch]:
            if offset <= state.meta.checkpoint[kind]:
                continue
            if kind == PLAN_KIND:
                state.apply_plan(offset, *value)
                continue
            events, rejections = decode_message(value, kind, now_ms, RULES)
            state.apply_message(kind, offset, events, rejections, now_ms, *timestamp)
        log.extend(finish(state) or [])
    return state, log


def restore(log: list, config: StateConfig = CONFIG) -> PartitionState:
    """What a worker holds after restoring ``log`` (last write wins, None deletes)."""
    table: dict[bytes, bytes] = {}
    for key, value in log:
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    state = PartitionState(0, config)
    changelog.load(state, ((decode_key(k), v) for k, v in table.items()))
    return state


def buckets(state: PartitionState, campaign: str) -> dict:
    """{start: Bucket} of one campaign (empty if it has none)."""
    campaign_state = state.campaigns.get(campaign)
    return dict(campaign_state.buckets(state.config.bucket_ms)) if campaign_state else {}


def canonical(state: PartitionState, *, with_positions: bool = True) -> dict:
    """Everything observable about a state (positions optional: they depend on arrival order)."""

    def hw(value):
        return value if with_positions else None

    leads = {
        (c, lead_id): state.lead(c, lead_id) for c, per in state.leads.items() for lead_id in per
    }
    return {
        "totals": {
            c: (s.by_channel, s.archived_histogram, s.archived_sum_ms, hw(s.hw))
            for c, s in state.campaigns.items()
        },
        "histograms": {c: state.response_histogram(c) for c in state.campaigns},
        "sketches": {
            c: v.sketches.as_dict() for c, v in state.index.responses.items() if v.sketches
        },
        "buckets": {
            (c, start): (b.counts, b.revenue, b.spend)
            for c in state.campaigns
            for start, b in buckets(state, c).items()
        },
        "hours": {
            (c, start): (b.counts, b.revenue, b.spend)
            for c, s in state.campaigns.items()
            for start, b in s.hours.buckets(state.config.long_bucket_ms)
        },
        "leads": {
            k: (r.lead_ms, r.contact_ms, hw((r.lead_hw, r.contact_hw))) for k, r in leads.items()
        },
        "awaiting": state.index.awaiting_contact,
        "unmatched": state.index.unmatched_contacts,
        "meta": (
            state.meta.rejected,
            state.meta.late,
            state.meta.duplicate,
            state.meta.watermark,
            state.meta.folded,
            state.meta.checkpoint if with_positions else None,
        ),
        "channels": state.channels,
        "plans": {name: plan.to_json() for name, plan in state.plans.items()},
        # Eviction is lazy, a chunk at a time; what is observable is which ids still count.
        "dedup": [
            {h for h in d.ids() if state.meta.arrival[k] - d.seen_at(h)[1] <= d.horizon_ms}
            for k, d in enumerate(state.dedup)
        ],
    }
