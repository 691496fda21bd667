"""A partition state's changelog: the records of a batch, in the order that keeps any prefix of
the log consistent, and the state restored from them.

``finish_batch`` returns the changed records in a fixed order: buckets and totals of the admitted
campaigns (those admitted in the batch last, in admission order), then those of ``__other__``,
then lead records, plans, dedup chunks, and ``Meta`` last. They go to one changelog partition, so any
prefix of the log that holds a record also holds every record written before it; together with
each record's ``hw`` (``stream.state``) this keeps a restore that stops early, or a crash
mid-write, exact.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable

import orjson

from . import codec
from .campaign import KINDS, Bucket, CampaignState
from .codec import AUTOPAUSE, BUCKET, DEDUP, HOUR, LEAD, META, PLAN, TOTALS, Record
from .events import LEAD as LEAD_KIND
from .events import SALES_CONTACT
from .leads import HISTOGRAM_BINS, LeadJoin
from .plans import validate_plan
from .state import OTHER, POSITION_BITS, Meta, PartitionState, last_position
from .steps import run_to_end

FINISH_STEP = 100  # campaigns encoded between two yields of ``finish_batch_steps``


def finish_batch(state: PartitionState) -> list[Record]:
    """Changed records, in the order that keeps any log prefix consistent (see module doc).

    Campaigns admitted in this batch come after the others in the order they were admitted,
    and ``__other__`` last: a prefix then holds a prefix of the admissions, so a replay in
    the same order admits the same campaigns.
    """
    return run_to_end(finish_batch_steps(state))


def finish_batch_steps(state: PartitionState) -> Generator[None, None, list[Record]]:
    """``finish_batch`` as a generator that yields every ``FINISH_STEP`` campaigns (a batch that
    touched thousands held a worker's event loop ~50-70 ms). The state must not change until
    it returns: it reads the batch's dirty sets and clears them at the end."""
    p = state.partition
    bucket_ms = state.config.bucket_ms
    records: list[Record] = [(key, None) for key in state.pending_deletions]
    state.pending_deletions.clear()
    new = [c for c in state.admitted_in_batch if c in state.campaigns]
    long_ms = state.config.long_bucket_ms
    dirty = state.dirty_buckets.keys() | state.dirty_hours.keys() | state.dirty_totals
    known = sorted(dirty - set(new) - {OTHER})
    # A bucket record's hw is what the partition has folded (``stream.state``): one list for
    # the batch, unless a restore left records ahead of the checkpoint.
    through = list(state.folded_through)
    replaying = bool(state.replay_hw)
    for done, campaign in enumerate([*known, *new, OTHER], 1):
        if done % FINISH_STEP == 0:
            yield
        campaign_state = state.campaigns.get(campaign)
        if campaign_state is None:
            continue
        hour_rows = campaign_state.hours
        minutes = sorted(state.dirty_buckets.get(campaign, ()))
        # Hours in records of their own: changed without their minute, or, while rows may hold
        # different hw, every one. Before the minutes: a minute record rewritten without its
        # hour must not leave a prefix of the log with neither.
        hours = set(state.dirty_hours.get(campaign, ()))
        of_minutes = {s - s % long_ms for s in minutes}
        hours = hours | of_minutes if replaying else hours - of_minutes
        for start in sorted(hours):
            row = hour_rows.row_values(start, long_ms)
            if row is not None:
                records.append(bucket_record(state, HOUR, campaign, start, row))
        for start in minutes:
            row = campaign_state.row_values(start, bucket_ms)
            if row is None:
                continue
            if replaying:  # rows may hold different hw: each record its own
                records.append(bucket_record(state, BUCKET, campaign, start, row))
                continue
            # The minute's record carries its hour's row: one record, not two, per change.
            hour_row = hour_rows.row_values(start - start % long_ms, long_ms)
            records.append(
                (codec.key(p, BUCKET, campaign, start), codec.encode_row(row, through, hour_row))
            )
        if campaign in state.dirty_totals:
            records.append(totals_record(state, campaign))
    for campaign, lead_id in sorted(state.dirty_leads):
        record = state.lead(campaign, lead_id)
        if record is not None:
            records.append((codec.key(p, LEAD, campaign, lead_id), _encode_lead(record)))
    for name in sorted(state.dirty_plans):
        plan = state.plans.get(name)
        value = None if plan is None else orjson.dumps(plan.to_json())
        records.append((codec.key(p, PLAN, name), value))
    state.dirty_plans.clear()
    records.extend(_dedup_records(state))
    records.append(_meta_record(state))
    state.dirty_buckets.clear()
    state.dirty_hours.clear()
    state.dirty_totals.clear()
    state.dirty_leads.clear()
    state.admitted_in_batch.clear()
    return records


def discard_batch(state: PartitionState) -> None:
    """What ``finish_batch`` does to the state, without encoding its records: for a reader
    that persists nothing (the backtest). The state after it is the same."""
    state.pending_deletions.clear()
    state.dirty_plans.clear()
    state.evicted_chunks = []
    for index in state.dedup:
        index.close_batch()
    _evict_dedup(state)
    state.evicted_chunks = []
    state.dirty_buckets.clear()
    state.dirty_hours.clear()
    state.dirty_totals.clear()
    state.dirty_leads.clear()
    state.admitted_in_batch.clear()


def _dedup_records(state: PartitionState) -> list[Record]:
    """New chunks of this batch, and the deletions of the chunks evicted after the previous
    batch. Deletions wait one batch: a restore that lacks this batch's Meta replays the batch,
    and the replay must still hold the chunks the original run held while folding it."""
    p = state.partition
    records: list[Record] = state.evicted_chunks
    state.evicted_chunks = []
    for kind, index in enumerate(state.dedup):
        for chunk in index.seal_batch():
            records.append(
                (
                    codec.key(p, DEDUP, kind, chunk.first_pos),
                    codec.encode_chunk(chunk.max_watermark, chunk.data),
                )
            )
    _evict_dedup(state)
    return records


def _evict_dedup(state: PartitionState) -> None:
    """Forget chunks past the horizon, then, over the memory cap, the oldest chunks of the
    largest index. Deterministic for a given set of chunks and watermarks, so a restore
    repeats it (see ``load``)."""
    p = state.partition
    for kind, index in enumerate(state.dedup):
        for old in index.evict_expired(state.meta.arrival[kind]):
            state.evicted_chunks.append((codec.key(p, DEDUP, kind, old.first_pos), None))
    while sum(len(index) for index in state.dedup) > state.config.dedup_max_ids:
        kind = max(range(KINDS), key=lambda k: (len(state.dedup[k]), -k))
        oldest = state.dedup[kind].evict_oldest()
        if oldest is None:
            break
        state.evicted_chunks.append((codec.key(p, DEDUP, kind, oldest.first_pos), None))


def bucket_record(
    state: PartitionState, tag: str, campaign: str, start: int, row: list[int]
) -> Record:
    """The record of one bucket (``tag``: minute or hour) alone, with its own ``hw``."""
    hw = state.record_hw(tag, campaign, start)
    return codec.key(state.partition, tag, campaign, start), codec.encode_row(row, hw)


def totals_record(state: PartitionState, campaign: str) -> Record:
    s = state.campaigns[campaign]
    return (
        codec.key(state.partition, TOTALS, campaign),
        codec.encode_totals(
            s.by_channel, s.archived_histogram, s.archived_sum_ms, s.archived_leads, s.hw
        ),
    )


def _meta_record(state: PartitionState) -> Record:
    m = state.meta
    return (
        codec.key(state.partition, META),
        codec.encode_meta(
            m.checkpoint, m.watermark, m.rejected, m.late, m.duplicate, m.folded, m.arrival
        ),
    )


def load(state: PartitionState, records: Iterable[tuple[list, bytes]]) -> None:
    """Rebuild from restored records (decoded keys, raw values), in any order."""
    records = records if isinstance(records, list) else list(records)
    bucket_ms, long_ms = state.config.bucket_ms, state.config.long_bucket_ms
    # First the checkpoint, and the hour rows that minute records carry: an hour's row is in
    # its own record and in those of its minutes; the latest wins, the one whose hw is
    # furthest (hw only grow, per kind, record to record).
    carried: dict[tuple[str, int], tuple[int, list[int], list[int]]] = {}
    for key, value in records:
        if key[1] == META:
            m = codec.decode_meta(value)
            state.meta = Meta(
                m["ckpt"], m["wm"], m["rej"], m["late"], m["dup"], m["fold"], m["arr"]
            )
        elif key[1] == BUCKET:
            *_, hw, hour_row = codec.decode_bucket(value)
            if hour_row is not None:
                where = (key[2], key[3] - key[3] % long_ms)
                latest = carried.get(where)
                if latest is None or sum(hw) > latest[0]:
                    carried[where] = (sum(hw), hw, hour_row)
    # What the restored checkpoint covers; bucket records ahead of it keep their hw until the
    # replay has passed them (``PartitionState.replay_hw``).
    through = [last_position(offset) for offset in state.meta.checkpoint[:KINDS]]
    state.folded_through = list(through)
    replay_until = state.replay_until

    def hold(tag: str, campaign: str, start: int, hw: list[int]) -> None:
        if any(h > t for h, t in zip(hw, through)):
            state.replay_hw[(tag, campaign, start)] = hw
            for kind, h in enumerate(hw):
                if h > replay_until[kind]:
                    replay_until[kind] = h

    leads = []
    chunks = []
    for key, value in records:
        tag = key[1]
        if tag == BUCKET:
            counts, revenue, spend, hw, _ = codec.decode_bucket(value)
            _ensure_campaign(state, key[2]).put_bucket(
                key[3], Bucket(counts, revenue, spend), bucket_ms
            )
            hold(BUCKET, key[2], key[3], hw)
        elif tag == HOUR:
            counts, revenue, spend, hw, _ = codec.decode_bucket(value)
            latest = carried.get((key[2], key[3]))
            if latest is not None and latest[0] > sum(hw):
                continue  # a minute's record carries a later row (put below)
            carried.pop((key[2], key[3]), None)
            _ensure_campaign(state, key[2]).hours.put_bucket(
                key[3], Bucket(counts, revenue, spend), long_ms
            )
            hold(HOUR, key[2], key[3], hw)
        elif tag == TOTALS:
            campaign_state = _ensure_campaign(state, key[2])
            (
                campaign_state.by_channel,
                campaign_state.archived_histogram,
                campaign_state.archived_sum_ms,
                campaign_state.archived_leads,
                campaign_state.hw,
            ) = codec.decode_totals(value)
            state.channels.update(c for c in campaign_state.by_channel if c != OTHER)
        elif tag == LEAD:
            leads.append((key[2], key[3], codec.decode_lead(value)))
        elif tag == DEDUP:
            chunks.append((key[2], value))
        elif tag == AUTOPAUSE:
            state.autopause[key[2]] = orjson.loads(value)
        elif tag == PLAN:
            plan = validate_plan(orjson.loads(value))
            if not isinstance(plan, str):  # validated when folded: a refusal is a newer schema
                state.plans[key[2]] = plan
    for (campaign, start), (_, hw, row) in carried.items():
        _ensure_campaign(state, campaign).hours.put_bucket(
            start, Bucket(row[:KINDS], row[KINDS], row[KINDS + 1]), long_ms
        )
        hold(HOUR, campaign, start, hw)
    for kind, raw in chunks:
        # Ids remembered by a batch whose Meta did not survive are forgotten: that batch is
        # replayed and remembers them again, and meanwhile they must not hide the entries the
        # original run consulted.
        if raw[:1] == b"[":  # the JSON chunks written before the binary form
            max_watermark, entries = codec.decode_chunk(raw)
            if entries and entries[0][1] >> POSITION_BITS <= state.meta.checkpoint[kind]:
                state.dedup[kind].load_chunk(max_watermark, entries)
            continue
        max_watermark, data = codec.decode_chunk_data(raw)
        if data and data[1] >> POSITION_BITS <= state.meta.checkpoint[kind]:
            state.dedup[kind].load_chunk_data(max_watermark, data)
    for index in state.dedup:
        index.sort_chunks()
    _evict_dedup(state)  # what the run did after the batch of the restored Meta
    archived = {c: set(s.archived_leads) for c, s in state.campaigns.items() if s.archived_leads}
    state.archive_written = set(archived)
    for campaign, lead_id, (lead_ms, contact_ms, hw) in leads:
        if lead_id in archived.get(campaign, ()):
            # Folded into the archive, but its deletion did not survive: finish the job.
            state.pending_deletions.append(codec.key(state.partition, LEAD, campaign, lead_id))
            continue
        record = LeadJoin(lead_ms, contact_ms, hw[LEAD_KIND], hw[SALES_CONTACT])
        state.leads.setdefault(campaign, {})[lead_id] = record.pack()
        state.index.update(campaign, lead_id, record)
        _ensure_campaign(state, campaign)


def _ensure_campaign(state: PartitionState, campaign: str) -> CampaignState:
    campaign_state = state.campaigns.get(campaign)
    if campaign_state is None:
        campaign_state = state.campaigns[campaign] = CampaignState(HISTOGRAM_BINS)
    campaign_state.version += 1
    return campaign_state


def _encode_lead(record: LeadJoin) -> bytes:
    hw = [-1] * KINDS
    hw[LEAD_KIND] = record.lead_hw
    hw[SALES_CONTACT] = record.contact_hw
    return codec.encode_lead(record.lead_ms, record.contact_ms, hw)
