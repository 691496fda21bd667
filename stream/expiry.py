"""Expiry and retirement of a partition state: buckets past retention (minute buckets after the
short windows' retention, hour buckets after the long horizons'), lead records past the lead TTL
(their responses folded into the campaign's archive first), and campaigns with none of them left.
"""

from __future__ import annotations

from . import codec
from .changelog import bucket_record, totals_record
from .codec import BUCKET, HOUR, LEAD, TOTALS, Record
from .leads import LeadJoin, histogram_bin
from .state import OTHER, PartitionState
from .windows import first_kept_start


def expire(state: PartitionState, now_ms: int, lead_budget: int = 2_000) -> list[Record]:
    """Drop buckets past retention, lead records past the lead TTL, and campaigns with
    neither left; return the records.

    Called every few seconds on the worker's event loop, so it stays cheap: buckets only
    expire when the oldest kept bucket moves (once per bucket), and lead records are scanned
    round-robin, about ``lead_budget`` a call (a lead lives for days; a scan of hundreds of
    thousands every tick would stall ingest).

    A completed lead's response is folded into its campaign's archive, written before the
    lead record's deletion (see ``stream.state``).
    """
    p = state.partition
    config = state.config
    records: list[Record] = []
    deletions: list[Record] = [(key, None) for key in state.pending_deletions]
    state.pending_deletions.clear()
    candidates: set[str] = set()  # campaigns that may have nothing left
    cutoff = first_kept_start(now_ms, config.bucket_ms, config.retention_ms)
    if cutoff != state.expired_cutoff:
        state.expired_cutoff = cutoff
        _drop_buckets(state, cutoff, config.bucket_ms, BUCKET, deletions, candidates, records)
        state.index.drop_sketches_before(cutoff)
    long_cutoff = first_kept_start(now_ms, config.long_bucket_ms, config.long_retention_ms)
    if long_cutoff != state.expired_long_cutoff:
        state.expired_long_cutoff = long_cutoff
        _drop_buckets(state, long_cutoff, config.long_bucket_ms, HOUR, deletions, candidates)
    archived: dict[str, list[str]] = {}
    scanned, new_cycle = 0, False
    while scanned < lead_budget:
        if not state.lead_scan:
            if new_cycle:
                break
            state.lead_scan, new_cycle = list(state.leads), True
            if not state.lead_scan:
                break
        campaign = state.lead_scan.pop()
        per_campaign = state.leads.get(campaign)
        if per_campaign is None:
            continue
        scanned += len(per_campaign)
        for lead_id, packed in list(per_campaign.items()):
            record = LeadJoin.unpack(packed)
            if record.newest_ms() + config.lead_ttl_ms > now_ms:
                continue
            state.index.update(campaign, lead_id, record, -1)
            response = record.response_ms()
            holder = state.campaigns.get(campaign)
            if response is not None and holder is not None:
                holder.archived_histogram[histogram_bin(response)] += 1
                holder.archived_sum_ms += response
                archived.setdefault(campaign, []).append(lead_id)
            del per_campaign[lead_id]
            state.dirty_leads.discard((campaign, lead_id))
            deletions.append((codec.key(p, LEAD, campaign, lead_id), None))
            if holder is not None:
                holder.version += 1
        if not per_campaign:
            del state.leads[campaign]
            candidates.add(campaign)
    retired = False
    for campaign in sorted(candidates | archived.keys() | state.archive_written):
        found = state.campaigns.get(campaign)
        if found is None:
            continue
        campaign_state = found
        folded = archived.get(campaign, [])
        if not campaign_state.holds_buckets and campaign not in state.leads:
            del state.campaigns[campaign]
            state.dirty_totals.discard(campaign)
            state.dirty_buckets.pop(campaign, None)
            state.dirty_hours.pop(campaign, None)
            state.index.responses.pop(campaign, None)
            deletions.append((codec.key(p, TOTALS, campaign), None))
            retired = True
        elif folded or campaign_state.archived_leads:
            campaign_state.archived_leads = folded
            records.append(totals_record(state, campaign))
    state.archive_written = set(archived)
    if retired:
        # Admitted channels are those some campaign still counts (as after a restore).
        state.channels = {c for s in state.campaigns.values() for c in s.by_channel if c != OTHER}
    return records + deletions


def _drop_buckets(
    state: PartitionState,
    cutoff: int,
    bucket_ms: int,
    tag: str,
    deletions: list[Record],
    candidates: set[str],
    seals: list[Record] | None = None,
) -> None:
    """Drop every campaign's buckets of one resolution (``tag``: minute ``BUCKET`` or ``HOUR``)
    starting before ``cutoff``, with their records; campaigns left with no bucket of either
    resolution become retirement ``candidates``. A minute record carries its hour's row
    (``stream.changelog``): before it is deleted, the hour gets a record of its own (``seals``,
    written before the deletions)."""
    hours = tag == HOUR
    dirty = state.dirty_hours if hours else state.dirty_buckets
    long_ms = state.config.long_bucket_ms
    for campaign, campaign_state in state.campaigns.items():
        series = campaign_state.hours if hours else campaign_state
        sealed: set[int] = set()
        for start in series.drop_buckets_before(cutoff, bucket_ms):
            dirty.get(campaign, set()).discard(start)
            deletions.append((codec.key(state.partition, tag, campaign, start), None))
            campaign_state.version += 1
            hour = start - start % long_ms
            if seals is not None and hour not in sealed:
                sealed.add(hour)
                row = campaign_state.hours.row_values(hour, long_ms)
                if row is not None:
                    seals.append(bucket_record(state, HOUR, campaign, hour, row))
        if not campaign_state.holds_buckets:
            candidates.add(campaign)
