"""Drive PartitionState the way the agent does, and simulate crashes on its record log."""

from __future__ import annotations

from stream.events import ValidationRules, decode_message
from stream.state import PartitionState, StateConfig, decode_key
from tests.factories import NOW_MS

RULES = ValidationRules("USD", 300_000)
CONFIG = StateConfig(bucket_ms=60_000, retention_ms=4_200_000, dedup_horizon_ms=600_000,
                     dedup_max_ids=1_000_000, lead_ttl_ms=7 * 86_400_000)

Msg = tuple[int, int, bytes]  # (kind, offset, value)


def as_messages(payloads: list[tuple[int, bytes]]) -> list[Msg]:
    """Give each (kind, value) the next offset of its topic."""
    next_offset = [0] * 5
    out = []
    for kind, value in payloads:
        out.append((kind, next_offset[kind], value))
        next_offset[kind] += 1
    return out


def run(messages: list[Msg], *, state: PartitionState | None = None, batch: int = 7,
        config: StateConfig = CONFIG, now_ms: int = NOW_MS) -> tuple[PartitionState, list]:
    state = state or PartitionState(0, config)
    log: list = []
    for start in range(0, len(messages), batch):
        for kind, offset, value in messages[start:start + batch]:
            if offset <= state.meta.checkpoint[kind]:
                continue
            events, rejections = decode_message(value, kind, now_ms, RULES)
            state.apply_message(kind, offset, events, rejections, now_ms)
        log.extend(state.finish_batch())
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
    state.load((decode_key(k), v) for k, v in table.items())
    return state


def canonical(state: PartitionState, *, with_positions: bool = True) -> dict:
    """Everything observable about a state (positions optional: they depend on arrival order)."""
    def hw(record):
        return record.hw if with_positions else None

    return {
        "totals": {c: (t.by_channel, t.archived_histogram, t.archived_sum_ms, hw(t))
                   for c, t in state.totals.items()},
        "histograms": {c: state.response_histogram(c) for c in state.totals},
        "sketches": {c: v.sketches for c, v in state.responses.items() if v.sketches},
        "buckets": {(c, s): (b.counts, b.revenue, b.spend, hw(b))
                    for c, per in state.buckets.items() for s, b in per.items()},
        "leads": {k: (r.lead_ms, r.contact_ms, hw(r)) for k, r in state.leads.items()},
        "awaiting": state.awaiting_contact,
        "unmatched": state.unmatched_contacts,
        "meta": (state.meta.rejected, state.meta.late, state.meta.duplicate, state.meta.watermark,
                 state.meta.checkpoint if with_positions else None),
        # Eviction is lazy, a chunk at a time; what is observable is which ids still count.
        "dedup": [{i for i, (_, seen_at) in d.seen.items()
                   if state.meta.watermark[k] - seen_at <= d.horizon_ms}
                  for k, d in enumerate(state.dedup)],
    }
