"""Per-partition KPI state, updated idempotently so that replays after a crash change nothing.

Every record carries ``hw``: per event kind, the highest event position folded into it, where a
position is ``(offset << 20) | index-in-message``. An event changes a record only if its position
is above the record's ``hw`` for its kind, so re-applying events that a record already holds is a
no-op. The partition's ``Meta`` record holds, per input topic, the offset through which all state
is complete (the checkpoint); consumption resumes after it.

``finish_batch`` returns the changed records in a fixed order: buckets and totals, then lead
records, then dedup chunks, then ``Meta`` last. They go to one changelog partition, so any prefix
of the log that holds a record also holds every record written before it; together with ``hw``
this keeps a restore that stops early, or a crash mid-write, exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, NamedTuple

import orjson

from . import sketch as qsketch
from .dedup import Chunk, DedupIndex
from .events import LEAD, SALE, SALES_CONTACT, Event, Rejection
from .windows import bucket_start, is_expired

POSITION_BITS = 20
MAX_EVENTS_PER_MESSAGE = 1 << POSITION_BITS
HISTOGRAM_BOUNDS_SECONDS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
_HIST_BOUNDS_MS = tuple(b * 1000 for b in HISTOGRAM_BOUNDS_SECONDS)
KINDS = 5


def position(offset: int, index: int) -> int:
    return (offset << POSITION_BITS) | index


def _fresh_hw() -> list[int]:
    return [-1] * KINDS


@dataclass(slots=True)
class Bucket:
    counts: list[int] = field(default_factory=lambda: [0] * KINDS)
    revenue: int = 0  # micros
    spend: int = 0  # micros
    sketch: dict[int, int] = field(default_factory=dict)  # response-time bins of first contacts
    hw: list[int] = field(default_factory=_fresh_hw)


@dataclass(slots=True)
class Totals:
    by_channel: dict[str, list[int]] = field(default_factory=dict)
    histogram: list[int] = field(default_factory=lambda: [0] * (len(_HIST_BOUNDS_MS) + 1))
    histogram_sum_ms: int = 0
    hw: list[int] = field(default_factory=_fresh_hw)


@dataclass(slots=True)
class LeadJoin:
    lead_ms: int | None = None
    contact_ms: int | None = None  # earliest sales contact
    hw: list[int] = field(default_factory=_fresh_hw)

    def response_ms(self) -> int | None:
        if self.lead_ms is None or self.contact_ms is None:
            return None
        return max(0, self.contact_ms - self.lead_ms)  # a contact logged before its lead counts as 0


@dataclass(slots=True)
class Meta:
    checkpoint: list[int] = field(default_factory=_fresh_hw)  # last offset folded, per input topic
    watermark: list[int] = field(default_factory=lambda: [0] * KINDS)  # max event time, per topic
    rejected: dict[str, int] = field(default_factory=dict)
    late: list[int] = field(default_factory=lambda: [0] * KINDS)
    duplicate: list[int] = field(default_factory=lambda: [0] * KINDS)


class StateConfig(NamedTuple):
    bucket_ms: int = 60_000
    retention_ms: int = 4_200_000
    dedup_horizon_ms: int = 600_000
    dedup_max_ids: int = 500_000
    lead_ttl_ms: int = 7 * 86_400_000


def histogram_bin(response_ms: int) -> int:
    for index, bound in enumerate(_HIST_BOUNDS_MS):
        if response_ms <= bound:
            return index
    return len(_HIST_BOUNDS_MS)


Record = tuple[bytes, bytes | None]  # (key, value); None deletes


class PartitionState:
    """All KPI state of one source partition, and the records that persist it."""

    def __init__(self, partition: int, config: StateConfig) -> None:
        self.partition = partition
        self.config = config
        self.buckets: dict[str, dict[int, Bucket]] = {}
        self.totals: dict[str, Totals] = {}
        self.leads: dict[tuple[str, str], LeadJoin] = {}
        self.meta = Meta()
        self.dedup = [DedupIndex(config.dedup_horizon_ms, config.dedup_max_ids) for _ in range(KINDS)]
        # Derived indexes, rebuilt from the lead records on load.
        self.awaiting_contact: dict[str, dict[str, int]] = {}  # campaign -> lead_id -> lead_ms
        self.unmatched_contacts: dict[str, int] = {}  # campaign -> contacts with no lead yet
        self._dirty_buckets: set[tuple[str, int]] = set()
        self._dirty_totals: set[str] = set()
        self._dirty_leads: set[tuple[str, str]] = set()

    # -- applying events -------------------------------------------------------------------

    def apply_message(
        self, kind: int, offset: int, events: list[Event], rejections: list[Rejection], now_ms: int
    ) -> bool:
        """Fold one Kafka message; False (and no change) if the checkpoint already covers it."""
        meta = self.meta
        if offset <= meta.checkpoint[kind]:
            return False
        for rejection in rejections:
            meta.rejected[rejection.reason] = meta.rejected.get(rejection.reason, 0) + 1
        for index, event in enumerate(events):
            self.apply_event(event, position(offset, index), now_ms)
        meta.checkpoint[kind] = offset
        return True

    def apply_event(self, event: Event, pos: int, now_ms: int) -> None:
        kind = event.kind
        meta = self.meta
        if event.occurred_ms > meta.watermark[kind]:
            meta.watermark[kind] = event.occurred_ms
        if self.dedup[kind].is_duplicate(event.event_id, pos, meta.watermark[kind]):
            meta.duplicate[kind] += 1
            return
        campaign = event.campaign
        touched: list = []

        totals = self._totals(campaign)
        if totals.hw[kind] < pos:
            per_channel = totals.by_channel.get(event.channel)
            if per_channel is None:
                per_channel = totals.by_channel[event.channel] = [0] * KINDS
            per_channel[kind] += 1
            touched.append(totals)

        config = self.config
        start = bucket_start(event.occurred_ms, config.bucket_ms)
        if is_expired(start, config.bucket_ms, now_ms, config.retention_ms):
            meta.late[kind] += 1
        else:
            bucket = self._bucket(campaign, start, create=True)
            if bucket.hw[kind] < pos:
                bucket.counts[kind] += 1
                if kind == SALE:
                    bucket.revenue += event.amount_micros
                else:
                    bucket.spend += event.amount_micros  # impressions and clicks carry cost
                touched.append(bucket)

        if kind == LEAD or kind == SALES_CONTACT:
            self._join(event, pos, now_ms, touched)

        # hw moves only now, so every record above was judged on its state before this event.
        for record in touched:
            if record.hw[kind] < pos:
                record.hw[kind] = pos

    def _join(self, event: Event, pos: int, now_ms: int, touched: list) -> None:
        kind = event.kind
        key = (event.campaign, event.lead_id)
        record = self.leads.get(key)
        if record is None:
            record = self.leads[key] = LeadJoin()
        if record.hw[kind] >= pos:
            return
        before = (record.response_ms(), record.contact_ms)
        self._unindex(key, record)
        t = event.occurred_ms
        if kind == LEAD:
            record.lead_ms = t if record.lead_ms is None else min(record.lead_ms, t)
        else:
            record.contact_ms = t if record.contact_ms is None else min(record.contact_ms, t)
        self._index(key, record)
        self._dirty_leads.add(key)
        touched.append(record)
        after = (record.response_ms(), record.contact_ms)
        if after == before:
            return
        if before[0] is not None:
            self._observe(event.campaign, before[1], before[0], -1, kind, pos, now_ms, touched)
        if after[0] is not None:
            self._observe(event.campaign, after[1], after[0], +1, kind, pos, now_ms, touched)

    def _observe(self, campaign: str, contact_ms: int, response_ms: int, sign: int,
                 kind: int, pos: int, now_ms: int, touched: list) -> None:
        """Add (sign=+1) or retract (-1) one response time, in the totals and the contact's bucket."""
        totals = self._totals(campaign)
        if totals.hw[kind] < pos:
            totals.histogram[histogram_bin(response_ms)] += sign
            totals.histogram_sum_ms += sign * response_ms
            touched.append(totals)
        config = self.config
        start = bucket_start(contact_ms, config.bucket_ms)
        if is_expired(start, config.bucket_ms, now_ms, config.retention_ms):
            return
        bucket = self._bucket(campaign, start, create=sign > 0)
        if bucket is not None and bucket.hw[kind] < pos:
            qsketch.add(bucket.sketch, response_ms, sign)
            touched.append(bucket)

    def _totals(self, campaign: str) -> Totals:
        totals = self.totals.get(campaign)
        if totals is None:
            totals = self.totals[campaign] = Totals()
        self._dirty_totals.add(campaign)
        return totals

    def _bucket(self, campaign: str, start: int, *, create: bool) -> Bucket | None:
        per_campaign = self.buckets.get(campaign)
        if per_campaign is None:
            if not create:
                return None
            per_campaign = self.buckets[campaign] = {}
        bucket = per_campaign.get(start)
        if bucket is None:
            if not create:
                return None
            bucket = per_campaign[start] = Bucket()
        self._dirty_buckets.add((campaign, start))
        return bucket

    def _index(self, key: tuple[str, str], record: LeadJoin) -> None:
        campaign, lead_id = key
        if record.contact_ms is None and record.lead_ms is not None:
            self.awaiting_contact.setdefault(campaign, {})[lead_id] = record.lead_ms
        elif record.lead_ms is None and record.contact_ms is not None:
            self.unmatched_contacts[campaign] = self.unmatched_contacts.get(campaign, 0) + 1

    def _unindex(self, key: tuple[str, str], record: LeadJoin) -> None:
        campaign, lead_id = key
        if record.contact_ms is None and record.lead_ms is not None:
            waiting = self.awaiting_contact[campaign]
            del waiting[lead_id]
            if not waiting:
                del self.awaiting_contact[campaign]
        elif record.lead_ms is None and record.contact_ms is not None:
            left = self.unmatched_contacts[campaign] - 1
            if left:
                self.unmatched_contacts[campaign] = left
            else:
                del self.unmatched_contacts[campaign]

    # -- persistence -----------------------------------------------------------------------

    def finish_batch(self) -> list[Record]:
        """Changed records, in the order that keeps any log prefix consistent (see module doc)."""
        p = self.partition
        records: list[Record] = []
        for campaign, start in sorted(self._dirty_buckets):
            bucket = self.buckets.get(campaign, {}).get(start)
            if bucket is not None:
                records.append((_key(p, "b", campaign, start), encode_bucket(bucket)))
        for campaign in sorted(self._dirty_totals):
            records.append((_key(p, "t", campaign), encode_totals(self.totals[campaign])))
        for campaign, lead_id in sorted(self._dirty_leads):
            record = self.leads.get((campaign, lead_id))
            if record is not None:
                records.append((_key(p, "l", campaign, lead_id), encode_lead(record)))
        for kind, index in enumerate(self.dedup):
            chunk = index.seal_batch()
            if chunk is not None:
                records.append((_key(p, "d", kind, chunk.first_pos), encode_chunk(chunk)))
            for old in index.evict(self.meta.watermark[kind]):
                records.append((_key(p, "d", kind, old.first_pos), None))
        records.append((_key(p, "m"), encode_meta(self.meta)))
        self._dirty_buckets.clear()
        self._dirty_totals.clear()
        self._dirty_leads.clear()
        return records

    def expire(self, now_ms: int) -> list[Record]:
        """Drop buckets past retention and lead records past their life; return the deletions."""
        p = self.partition
        config = self.config
        deletions: list[Record] = []
        for campaign in list(self.buckets):
            per_campaign = self.buckets[campaign]
            for start in [s for s in per_campaign
                          if is_expired(s, config.bucket_ms, now_ms, config.retention_ms)]:
                del per_campaign[start]
                self._dirty_buckets.discard((campaign, start))
                deletions.append((_key(p, "b", campaign, start), None))
            if not per_campaign:
                del self.buckets[campaign]
        for key in list(self.leads):
            record = self.leads[key]
            newest = max(t for t in (record.lead_ms, record.contact_ms, 0) if t is not None)
            life = config.retention_ms if record.response_ms() is not None else config.lead_ttl_ms
            if newest + life <= now_ms:
                self._unindex(key, record)
                del self.leads[key]
                self._dirty_leads.discard(key)
                deletions.append((_key(p, "l", *key), None))
        return deletions

    def load(self, records: Iterable[tuple[list, bytes]]) -> None:
        """Rebuild from restored records (decoded keys, raw values), in any order."""
        for key, value in records:
            tag = key[1]
            data = orjson.loads(value)
            if tag == "b":
                self.buckets.setdefault(key[2], {})[key[3]] = decode_bucket(data)
            elif tag == "t":
                self.totals[key[2]] = decode_totals(data)
            elif tag == "l":
                lead_key = (key[2], key[3])
                record = self.leads[lead_key] = decode_lead(data)
                self._index(lead_key, record)
            elif tag == "d":
                self.dedup[key[2]].load_chunk(Chunk(key[3], data[0], data[1]))
            elif tag == "m":
                self.meta = decode_meta(data)
        for index in self.dedup:
            index.sort_chunks()

    def resume_offsets(self) -> dict[int, int]:
        """Per input kind, the next offset to read: after the checkpoint, or 0 if there is none.

        With no checkpoint nothing is known to be complete, whatever the consumer group has
        committed (a restore that stopped short can lose the newest Meta record), so the
        partition is read again from the start; the records' ``hw`` make that replay a no-op.
        """
        return {kind: off + 1 for kind, off in enumerate(self.meta.checkpoint)}


# -- record codecs (plain JSON lists: compact, and readable with kafka tools) ------------------

def _key(*parts: object) -> bytes:
    return orjson.dumps(parts)


def decode_key(key: bytes) -> list:
    return orjson.loads(key)


def partition_of_key(key: bytes) -> int:
    """The partition a record key belongs to, without a full JSON parse (keys start ``[p,``)."""
    return int(key[1:key.index(b",")])


def encode_bucket(b: Bucket) -> bytes:
    return orjson.dumps([b.counts, b.revenue, b.spend, list(b.sketch.items()), b.hw])


def decode_bucket(d: list) -> Bucket:
    return Bucket(d[0], d[1], d[2], {int(i): c for i, c in d[3]}, d[4])


def encode_totals(t: Totals) -> bytes:
    return orjson.dumps([t.by_channel, t.histogram, t.histogram_sum_ms, t.hw])


def decode_totals(d: list) -> Totals:
    return Totals(d[0], d[1], d[2], d[3])


def encode_lead(r: LeadJoin) -> bytes:
    return orjson.dumps([r.lead_ms, r.contact_ms, r.hw])


def decode_lead(d: list) -> LeadJoin:
    return LeadJoin(d[0], d[1], d[2])


def encode_chunk(c: Chunk) -> bytes:
    return orjson.dumps([c.max_watermark, c.entries])


def encode_meta(m: Meta) -> bytes:
    return orjson.dumps({"ckpt": m.checkpoint, "wm": m.watermark, "rej": m.rejected,
                         "late": m.late, "dup": m.duplicate})


def decode_meta(d: dict) -> Meta:
    return Meta(d["ckpt"], d["wm"], d["rej"], d["late"], d["dup"])
