"""Per-partition KPI state, updated idempotently so that replays after a crash change nothing.

Every record carries ``hw``: per event kind, the highest event position folded into it, where a
position is ``(offset << 20) | index-in-message``. An event changes a record only if its position
is above the record's ``hw`` for its kind, so re-applying events that a record already holds is a
no-op. The partition's ``Meta`` record holds, per input topic, the offset through which all state
is complete (the checkpoint); consumption resumes after it.

``finish_batch`` returns the changed records in a fixed order: buckets and totals of the admitted
campaigns (those admitted in the batch last, in admission order), then those of ``__other__``,
then lead records, dedup chunks, and ``Meta`` last. They go
to one changelog partition, so any prefix of the log that holds a record also holds every record
written before it; together with ``hw`` this keeps a restore that stops early, or a crash
mid-write, exact.

**Bounded whatever ids arrive.** A partition admits at most ``max_campaigns`` campaigns (and
``max_channels`` channels); events of any other campaign are folded at ingest into the campaign
``__other__`` (channel ``__other__``) and counted in ``Meta.folded``. A campaign is admitted once it
has a record, and ``__other__``'s records of a batch are written after every admitted campaign's,
so a restored prefix that holds a folded event also holds every admission made before it: an event
is never counted both under its campaign and under ``__other__``. A campaign is retired (its slot
freed, its all-time totals dropped) once its last bucket and lead record have expired.

Response times are derived from self-contained lead records (``stream.leads``). Only when a lead
record is deleted (after the lead TTL) is its response folded into the campaign's persisted
histogram archive; the archive names the leads of its latest fold, so a deletion lost in a crash
cannot count a lead twice.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import orjson

from . import codec
from .campaign import KINDS, REVENUE, SPEND, Bucket, CampaignState
from .codec import AUTOPAUSE, BUCKET, DEDUP, LEAD, META, TOTALS, Record
from .dedup import DedupIndex
from .events import LEAD as LEAD_KIND
from .events import SALE, SALES_CONTACT, Event, Rejection
from .leads import HISTOGRAM_BINS, LeadJoin, ResponseIndex, histogram_bin
from .windows import bucket_start, first_kept_start, is_expired

OTHER = "__other__"
POSITION_BITS = 20
MAX_EVENTS_PER_MESSAGE = 1 << POSITION_BITS
FOLDED_CAMPAIGN, FOLDED_CHANNEL = 0, 1

__all__ = [
    "KINDS",
    "OTHER",
    "Bucket",
    "CampaignState",
    "Meta",
    "PartitionState",
    "Record",
    "StateConfig",
    "histogram_bin",
]


def _fresh_hw() -> list[int]:
    return [-1] * KINDS


@dataclass(slots=True)
class Meta:
    checkpoint: list[int] = field(default_factory=_fresh_hw)  # last offset folded, per input topic
    watermark: list[int] = field(default_factory=lambda: [0] * KINDS)  # max event time, per topic
    rejected: dict[str, int] = field(default_factory=dict)
    late: list[int] = field(default_factory=lambda: [0] * KINDS)
    duplicate: list[int] = field(default_factory=lambda: [0] * KINDS)
    folded: list[int] = field(
        default_factory=lambda: [0, 0]
    )  # events over the campaign / channel budget
    # Per topic, the newest Kafka record timestamp folded (ms): the dedup horizon's clock.
    arrival: list[int] = field(default_factory=lambda: [0] * KINDS)


class StateConfig(NamedTuple):
    bucket_ms: int = 60_000
    retention_ms: int = 4_200_000
    dedup_horizon_ms: int = 600_000
    dedup_max_ids: int = 250_000  # per partition, all event types together
    lead_ttl_ms: int = 7 * 86_400_000
    max_campaigns: int = 3_000  # per partition, besides __other__
    max_channels: int = 100  # per partition, besides __other__


class PartitionState:
    """All KPI state of one source partition, and the records that persist it."""

    def __init__(self, partition: int, config: StateConfig) -> None:
        self.partition = partition
        self.config = config
        self.campaigns: dict[str, CampaignState] = {}
        self.leads: dict[str, dict[str, int]] = {}  # campaign -> lead id -> packed LeadJoin
        self.meta = Meta()
        self.dedup = [DedupIndex(config.dedup_horizon_ms) for _ in range(KINDS)]
        self.channels: set[str] = set()  # admitted channels (OTHER excluded)
        # Derived from the lead records, rebuilt on load.
        self.index = ResponseIndex(config.bucket_ms)
        self._dirty_buckets: dict[str, set[int]] = {}  # campaign -> bucket starts
        self._admitted_in_batch: list[str] = []
        self._dirty_totals: set[str] = set()
        self._dirty_leads: set[tuple[str, str]] = set()
        self._deletions: list[bytes] = []
        self._evicted: list[Record] = []  # dedup chunk deletions, written with the next batch
        self._expired_cutoff: int | None = None  # the oldest kept bucket at the last expiry
        self._lead_scan: list[str] = []  # campaigns left in this round of the lead scan
        self._archive_written: set[str] = set()  # campaigns whose archive names leads
        # Auto-pause state by campaign, owned by ``autopause.records`` (restored as plain JSON);
        # kept apart from ``campaigns``: a paused campaign's decisions outlive its buckets.
        self.autopause: dict[str, object] = {}

    # -- reading -----------------------------------------------------------------------------

    @property
    def admitted_campaigns(self) -> int:
        return len(self.campaigns) - (OTHER in self.campaigns)

    def lead(self, campaign: str, lead_id: str) -> LeadJoin | None:
        packed = self.leads.get(campaign, {}).get(lead_id)
        return None if packed is None else LeadJoin.unpack(packed)

    def response_histogram(self, campaign: str) -> tuple[list[int], int] | None:
        """All-time response-time bins and sum (archived plus live), or None if there are none."""
        state = self.campaigns.get(campaign)
        view = self.index.responses.get(campaign)
        if state is None and view is None:
            return None
        bins = list(state.archived_histogram) if state else [0] * HISTOGRAM_BINS
        total_ms = state.archived_sum_ms if state else 0
        if view is not None:
            bins = [a + b for a, b in zip(bins, view.histogram)]
            total_ms += view.sum_ms
        return bins, total_ms

    # -- applying events ---------------------------------------------------------------------

    def apply_message(
        self,
        kind: int,
        offset: int,
        events: list[Event],
        rejections: list[Rejection],
        now_ms: int,
        arrival_ms: int | None = None,
    ) -> bool:
        """Fold one Kafka message; False (and no change) if the checkpoint already covers it.

        ``arrival_ms`` is the record's Kafka timestamp (``now_ms`` if it has none): the newest
        one per topic is the clock of the dedup horizon, the same in any replay."""
        if not self.begin_message(kind, offset, now_ms, arrival_ms):
            return False
        self.apply_events(kind, offset, 0, events, now_ms)
        self.count_rejections(rejections)
        self.end_message(kind, offset)
        return True

    # A large message is folded in slices (``agents.pipeline``), so that the event loop can run
    # between them: begin, then apply_events / count_rejections per slice, then end. Until
    # ``end_message`` moves the checkpoint a replay folds the whole message again, and the
    # records' ``hw`` make the part already folded a no-op.

    def begin_message(
        self, kind: int, offset: int, now_ms: int, arrival_ms: int | None = None
    ) -> bool:
        """False if the checkpoint already covers the message; else its arrival is noted."""
        meta = self.meta
        if offset <= meta.checkpoint[kind]:
            return False
        arrival = now_ms if arrival_ms is None or arrival_ms < 0 else arrival_ms
        if arrival > meta.arrival[kind]:
            meta.arrival[kind] = arrival
        return True

    def apply_events(
        self, kind: int, offset: int, first_index: int, events: list[Event], now_ms: int
    ) -> None:
        """Fold a message's valid events ``first_index`` onwards (their index among its valid
        events is their position's low bits)."""
        if first_index + len(events) > MAX_EVENTS_PER_MESSAGE:
            raise ValueError(
                f"{first_index + len(events)} events in one message: positions hold "
                f"{MAX_EVENTS_PER_MESSAGE}"
            )
        base = (offset << POSITION_BITS) | first_index
        if kind in (LEAD_KIND, SALES_CONTACT):
            for index, event in enumerate(events):
                self.apply_event(event, base + index, now_ms)
        elif events:
            self._apply_counted(kind, base, events, now_ms)

    def count_rejections(self, rejections: list[Rejection]) -> None:
        rejected = self.meta.rejected
        for rejection in rejections:
            rejected[rejection.reason] = rejected.get(rejection.reason, 0) + 1

    def end_message(self, kind: int, offset: int) -> None:
        self.meta.checkpoint[kind] = offset

    def _apply_counted(self, kind: int, base: int, events: list[Event], now_ms: int) -> None:
        """``apply_event`` for the events of one message of a kind without a lead join (most of
        the traffic), with the lookups done once per message: the same result, about half the
        time per event."""
        meta = self.meta
        watermarks, duplicates, late = meta.watermark, meta.duplicate, meta.late
        is_duplicate = self.dedup[kind].is_duplicate
        config = self.config
        bucket_ms = config.bucket_ms
        kept_from = first_kept_start(now_ms, bucket_ms, config.retention_ms)
        money = REVENUE if kind == SALE else SPEND
        campaigns, channels = self.campaigns, self.channels
        dirty_totals, dirty_buckets = self._dirty_totals, self._dirty_buckets
        watermark = watermarks[kind]
        arrival = meta.arrival[kind]
        for index, event in enumerate(events):
            pos = base + index
            occurred = event.occurred_ms
            if occurred > watermark:
                watermark = watermarks[kind] = occurred
            if is_duplicate(event.event_id, pos, arrival):
                duplicates[kind] += 1
                continue
            name = event.campaign
            state = campaigns.get(name)
            if state is None:
                name, state = self._campaign_for(name)
            changed = False
            if state.hw[kind] < pos:
                channel = event.channel
                state.count(
                    kind, pos, channel if channel in channels else self._channel_for(channel)
                )
                dirty_totals.add(name)
                changed = True
            start = occurred - occurred % bucket_ms
            if start < kept_from:
                late[kind] += 1
            elif state.add(kind, pos, start, event.amount_micros, money, bucket_ms):
                dirty = dirty_buckets.get(name)
                if dirty is None:
                    dirty = dirty_buckets[name] = set()
                dirty.add(start)
                changed = True
            if changed:
                state.version += 1

    def _campaign_for(self, name: str) -> tuple[str, CampaignState]:
        """The campaign an event counts under: its own if admitted (or room is left), else OTHER."""
        state = self.campaigns.get(name)
        if state is not None:
            return name, state
        if name != OTHER and self.admitted_campaigns < self.config.max_campaigns:
            state = self.campaigns[name] = CampaignState(HISTOGRAM_BINS)
            self._admitted_in_batch.append(name)
            return name, state
        self.meta.folded[FOLDED_CAMPAIGN] += 1
        state = self.campaigns.get(OTHER)
        if state is None:
            state = self.campaigns[OTHER] = CampaignState(HISTOGRAM_BINS)
        return OTHER, state

    def _channel_for(self, name: str) -> str:
        if name in self.channels:
            return name
        if name != OTHER and len(self.channels) < self.config.max_channels:
            self.channels.add(name)
            return name
        self.meta.folded[FOLDED_CHANNEL] += 1
        return OTHER

    def apply_event(self, event: Event, pos: int, now_ms: int) -> None:
        kind = event.kind
        meta = self.meta
        if event.occurred_ms > meta.watermark[kind]:
            meta.watermark[kind] = event.occurred_ms
        if self.dedup[kind].is_duplicate(event.event_id, pos, meta.arrival[kind]):
            meta.duplicate[kind] += 1
            return
        campaign, state = self._campaign_for(event.campaign)
        changed = False
        if state.hw[kind] < pos:
            state.count(kind, pos, self._channel_for(event.channel))
            self._dirty_totals.add(campaign)
            changed = True

        config = self.config
        start = bucket_start(event.occurred_ms, config.bucket_ms)
        if is_expired(start, config.bucket_ms, now_ms, config.retention_ms):
            meta.late[kind] += 1
        elif state.add(
            kind,
            pos,
            start,
            event.amount_micros,
            REVENUE if kind == SALE else SPEND,
            config.bucket_ms,
        ):
            dirty = self._dirty_buckets.get(campaign)
            if dirty is None:
                dirty = self._dirty_buckets[campaign] = set()
            dirty.add(start)
            changed = True

        if (kind in (LEAD_KIND, SALES_CONTACT)) and self._join(campaign, event, pos):
            changed = True
        if changed:
            state.version += 1

    def _join(self, campaign: str, event: Event, pos: int) -> bool:
        lead_id = event.lead_id
        if lead_id is None:  # validation requires one on leads and contacts
            return False
        per_campaign = self.leads.get(campaign)
        if per_campaign is None:
            per_campaign = self.leads[campaign] = {}
        packed = per_campaign.get(lead_id)
        record = LeadJoin() if packed is None else LeadJoin.unpack(packed)
        t = event.occurred_ms
        if event.kind == LEAD_KIND:
            if record.lead_hw >= pos:
                return False
            new = record._replace(
                lead_ms=t if record.lead_ms is None else min(record.lead_ms, t), lead_hw=pos
            )
        else:
            if record.contact_hw >= pos:
                return False
            new = record._replace(
                contact_ms=t if record.contact_ms is None else min(record.contact_ms, t),
                contact_hw=pos,
            )
        if packed is not None:
            self.index.update(campaign, lead_id, record, -1)
        self.index.update(campaign, lead_id, new)
        per_campaign[lead_id] = new.pack()
        self._dirty_leads.add((campaign, lead_id))
        return True

    # -- persistence -------------------------------------------------------------------------

    def finish_batch(self) -> list[Record]:
        """Changed records, in the order that keeps any log prefix consistent (see module doc).

        Campaigns admitted in this batch come after the others in the order they were admitted,
        and ``__other__`` last: a prefix then holds a prefix of the admissions, so a replay in
        the same order admits the same campaigns.
        """
        p = self.partition
        bucket_ms = self.config.bucket_ms
        records: list[Record] = [(key, None) for key in self._deletions]
        self._deletions.clear()
        new = [c for c in self._admitted_in_batch if c in self.campaigns]
        known = sorted((self._dirty_buckets.keys() | self._dirty_totals) - set(new) - {OTHER})
        for campaign in [*known, *new, OTHER]:
            state = self.campaigns.get(campaign)
            if state is None:
                continue
            for start in sorted(self._dirty_buckets.get(campaign, ())):
                bucket = state.bucket(start, bucket_ms)
                if bucket is not None:
                    records.append(
                        (codec.key(p, BUCKET, campaign, start), codec.encode_bucket(*bucket))
                    )
            if campaign in self._dirty_totals:
                records.append(self._totals_record(campaign))
        for campaign, lead_id in sorted(self._dirty_leads):
            record = self.lead(campaign, lead_id)
            if record is not None:
                records.append((codec.key(p, LEAD, campaign, lead_id), _encode_lead(record)))
        records.extend(self._dedup_records())
        records.append(self._meta_record())
        self._dirty_buckets.clear()
        self._dirty_totals.clear()
        self._dirty_leads.clear()
        self._admitted_in_batch.clear()
        return records

    def _dedup_records(self) -> list[Record]:
        """New chunks of this batch, and the deletions of the chunks evicted after the previous
        batch. Deletions wait one batch: a restore that lacks this batch's Meta replays the batch,
        and the replay must still hold the chunks the original run held while folding it."""
        p = self.partition
        records: list[Record] = self._evicted
        self._evicted = []
        for kind, index in enumerate(self.dedup):
            for chunk, entries in index.seal_batch():
                records.append(
                    (
                        codec.key(p, DEDUP, kind, chunk.first_pos),
                        codec.encode_chunk(chunk.max_watermark, entries),
                    )
                )
        self._evict_dedup()
        return records

    def _evict_dedup(self) -> None:
        """Forget chunks past the horizon, then, over the memory cap, the oldest chunks of the
        largest index. Deterministic for a given set of chunks and watermarks, so a restore
        repeats it (see ``load``)."""
        p = self.partition
        for kind, index in enumerate(self.dedup):
            for old in index.evict_expired(self.meta.arrival[kind]):
                self._evicted.append((codec.key(p, DEDUP, kind, old.first_pos), None))
        while sum(len(index) for index in self.dedup) > self.config.dedup_max_ids:
            kind = max(range(KINDS), key=lambda k: (len(self.dedup[k]), -k))
            oldest = self.dedup[kind].evict_oldest()
            if oldest is None:
                break
            self._evicted.append((codec.key(p, DEDUP, kind, oldest.first_pos), None))

    def _totals_record(self, campaign: str) -> Record:
        s = self.campaigns[campaign]
        return (
            codec.key(self.partition, TOTALS, campaign),
            codec.encode_totals(
                s.by_channel, s.archived_histogram, s.archived_sum_ms, s.archived_leads, s.hw
            ),
        )

    def _meta_record(self) -> Record:
        m = self.meta
        return (
            codec.key(self.partition, META),
            codec.encode_meta(
                m.checkpoint, m.watermark, m.rejected, m.late, m.duplicate, m.folded, m.arrival
            ),
        )

    def expire(self, now_ms: int, lead_budget: int = 2_000) -> list[Record]:
        """Drop buckets past retention, lead records past the lead TTL, and campaigns with
        neither left; return the records.

        Called every few seconds on the worker's event loop, so it stays cheap: buckets only
        expire when the oldest kept bucket moves (once per bucket), and lead records are scanned
        round-robin, about ``lead_budget`` a call (a lead lives for days; a scan of hundreds of
        thousands every tick would stall ingest).

        A completed lead's response is folded into its campaign's archive, written before the
        lead record's deletion (see module doc).
        """
        p = self.partition
        config = self.config
        records: list[Record] = []
        deletions: list[Record] = [(key, None) for key in self._deletions]
        self._deletions.clear()
        candidates: set[str] = set()  # campaigns that may have nothing left
        cutoff = first_kept_start(now_ms, config.bucket_ms, config.retention_ms)
        if cutoff != self._expired_cutoff:
            self._expired_cutoff = cutoff
            for campaign, state in self.campaigns.items():
                for start in state.drop_buckets_before(cutoff, config.bucket_ms):
                    self._dirty_buckets.get(campaign, set()).discard(start)
                    deletions.append((codec.key(p, BUCKET, campaign, start), None))
                    state.version += 1
                if not state.has_buckets:
                    candidates.add(campaign)
            self.index.drop_sketches_before(cutoff)
        archived: dict[str, list[str]] = {}
        scanned, new_cycle = 0, False
        while scanned < lead_budget:
            if not self._lead_scan:
                if new_cycle:
                    break
                self._lead_scan, new_cycle = list(self.leads), True
                if not self._lead_scan:
                    break
            campaign = self._lead_scan.pop()
            per_campaign = self.leads.get(campaign)
            if per_campaign is None:
                continue
            scanned += len(per_campaign)
            for lead_id, packed in list(per_campaign.items()):
                record = LeadJoin.unpack(packed)
                if record.newest_ms() + config.lead_ttl_ms > now_ms:
                    continue
                self.index.update(campaign, lead_id, record, -1)
                response = record.response_ms()
                holder = self.campaigns.get(campaign)
                if response is not None and holder is not None:
                    holder.archived_histogram[histogram_bin(response)] += 1
                    holder.archived_sum_ms += response
                    archived.setdefault(campaign, []).append(lead_id)
                del per_campaign[lead_id]
                self._dirty_leads.discard((campaign, lead_id))
                deletions.append((codec.key(p, LEAD, campaign, lead_id), None))
                if holder is not None:
                    holder.version += 1
            if not per_campaign:
                del self.leads[campaign]
                candidates.add(campaign)
        retired = False
        for campaign in sorted(candidates | archived.keys() | self._archive_written):
            found = self.campaigns.get(campaign)
            if found is None:
                continue
            state = found
            folded = archived.get(campaign, [])
            if not state.has_buckets and campaign not in self.leads:
                del self.campaigns[campaign]
                self._dirty_totals.discard(campaign)
                self._dirty_buckets.pop(campaign, None)
                self.index.responses.pop(campaign, None)
                deletions.append((codec.key(p, TOTALS, campaign), None))
                retired = True
            elif folded or state.archived_leads:
                state.archived_leads = folded
                records.append(self._totals_record(campaign))
        self._archive_written = set(archived)
        if retired:
            # Admitted channels are those some campaign still counts (as after a restore).
            self.channels = {c for s in self.campaigns.values() for c in s.by_channel if c != OTHER}
        return records + deletions

    def load(self, records: Iterable[tuple[list, bytes]]) -> None:
        """Rebuild from restored records (decoded keys, raw values), in any order."""
        bucket_ms = self.config.bucket_ms
        leads = []
        chunks = []
        for key, value in records:
            tag = key[1]
            if tag == BUCKET:
                self._campaign_state(key[2]).put_bucket(
                    key[3], Bucket(*codec.decode_bucket(value)), bucket_ms
                )
            elif tag == TOTALS:
                state = self._campaign_state(key[2])
                (
                    state.by_channel,
                    state.archived_histogram,
                    state.archived_sum_ms,
                    state.archived_leads,
                    state.hw,
                ) = codec.decode_totals(value)
                self.channels.update(c for c in state.by_channel if c != OTHER)
            elif tag == LEAD:
                leads.append((key[2], key[3], codec.decode_lead(value)))
            elif tag == DEDUP:
                chunks.append((key[2], codec.decode_chunk(value)))
            elif tag == AUTOPAUSE:
                self.autopause[key[2]] = orjson.loads(value)
            elif tag == META:
                m = codec.decode_meta(value)
                self.meta = Meta(
                    m["ckpt"], m["wm"], m["rej"], m["late"], m["dup"], m["fold"], m["arr"]
                )
        for kind, (max_watermark, entries) in chunks:
            # Ids remembered by a batch whose Meta did not survive are forgotten: that batch is
            # replayed and remembers them again, and meanwhile they must not hide the entries the
            # original run consulted.
            if entries and entries[0][1] >> POSITION_BITS <= self.meta.checkpoint[kind]:
                self.dedup[kind].load_chunk(max_watermark, entries)
        for index in self.dedup:
            index.sort_chunks()
        self._evict_dedup()  # what the run did after the batch of the restored Meta
        archived = {c: set(s.archived_leads) for c, s in self.campaigns.items() if s.archived_leads}
        self._archive_written = set(archived)
        for campaign, lead_id, (lead_ms, contact_ms, hw) in leads:
            if lead_id in archived.get(campaign, ()):
                # Folded into the archive, but its deletion did not survive: finish the job.
                self._deletions.append(codec.key(self.partition, LEAD, campaign, lead_id))
                continue
            record = LeadJoin(lead_ms, contact_ms, hw[LEAD_KIND], hw[SALES_CONTACT])
            self.leads.setdefault(campaign, {})[lead_id] = record.pack()
            self.index.update(campaign, lead_id, record)
            self._campaign_state(campaign)

    def _campaign_state(self, campaign: str) -> CampaignState:
        state = self.campaigns.get(campaign)
        if state is None:
            state = self.campaigns[campaign] = CampaignState(HISTOGRAM_BINS)
        state.version += 1
        return state

    def resume_offsets(self) -> dict[int, int]:
        """Per input kind, the next offset to read: after the checkpoint, or 0 if there is none.

        With no checkpoint nothing is known to be complete, whatever the consumer group has
        committed (a restore that stopped short can lose the newest Meta record), so the
        partition is read again from the start; the records' ``hw`` make that replay a no-op.
        """
        return {kind: off + 1 for kind, off in enumerate(self.meta.checkpoint)}


def _encode_lead(record: LeadJoin) -> bytes:
    hw = [-1] * KINDS
    hw[LEAD_KIND] = record.lead_hw
    hw[SALES_CONTACT] = record.contact_hw
    return codec.encode_lead(record.lead_ms, record.contact_ms, hw)
