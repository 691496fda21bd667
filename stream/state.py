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

Response times are not folded into aggregates by the events that complete a lead/contact pair:
which event completes it depends on how the lead and contact topics interleave, and that differs
between a run and its replay. Instead every figure about response times (window quantiles, the
histogram, leads awaiting contact) is derived in memory from the lead records, which are
self-contained min-folds of their own events. Only when a lead record is deleted (after the lead
TTL) is its response folded into the campaign's persisted histogram archive; the archive names
the leads of its latest fold, so a deletion lost in a crash cannot count a lead twice.
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


def _fresh_hw() -> list[int]:
    return [-1] * KINDS


@dataclass(slots=True)
class Bucket:
    counts: list[int] = field(default_factory=lambda: [0] * KINDS)
    revenue: int = 0  # micros
    spend: int = 0  # micros
    hw: list[int] = field(default_factory=_fresh_hw)


def _empty_histogram() -> list[int]:
    return [0] * (len(_HIST_BOUNDS_MS) + 1)


@dataclass(slots=True)
class Totals:
    by_channel: dict[str, list[int]] = field(default_factory=dict)
    # Response times of lead records already deleted; live records are added at read time.
    archived_histogram: list[int] = field(default_factory=_empty_histogram)
    archived_sum_ms: int = 0
    archived_leads: list[str] = field(default_factory=list)  # lead ids of the latest fold
    hw: list[int] = field(default_factory=_fresh_hw)


@dataclass(slots=True)
class ResponseView:
    """Derived from the live lead records of one campaign; never persisted."""

    histogram: list[int] = field(default_factory=_empty_histogram)
    sum_ms: int = 0
    sketches: dict[int, dict[int, int]] = field(default_factory=dict)  # contact bucket -> sketch


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
        # Derived from the lead records, rebuilt on load.
        self.responses: dict[str, ResponseView] = {}
        self.awaiting_contact: dict[str, dict[str, int]] = {}  # campaign -> lead_id -> lead_ms
        self.unmatched_contacts: dict[str, int] = {}  # campaign -> contacts with no lead yet
        self._dirty_buckets: set[tuple[str, int]] = set()
        self._dirty_totals: set[str] = set()
        self._dirty_leads: set[tuple[str, str]] = set()
        self._deletions: list[bytes] = []

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
        base = offset << POSITION_BITS  # position = (offset << 20) | index in message
        apply_event = self.apply_event
        for index, event in enumerate(events):
            apply_event(event, base | index, now_ms)
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

        totals = self.totals.get(campaign)
        if totals is None:
            totals = self.totals[campaign] = Totals()
        if totals.hw[kind] < pos:
            per_channel = totals.by_channel.get(event.channel)
            if per_channel is None:
                per_channel = totals.by_channel[event.channel] = [0] * KINDS
            per_channel[kind] += 1
            totals.hw[kind] = pos
            self._dirty_totals.add(campaign)

        config = self.config
        start = bucket_start(event.occurred_ms, config.bucket_ms)
        if is_expired(start, config.bucket_ms, now_ms, config.retention_ms):
            meta.late[kind] += 1
        else:
            per_campaign = self.buckets.get(campaign)
            if per_campaign is None:
                per_campaign = self.buckets[campaign] = {}
            bucket = per_campaign.get(start)
            if bucket is None:
                bucket = per_campaign[start] = Bucket()
            if bucket.hw[kind] < pos:
                bucket.counts[kind] += 1
                if kind == SALE:
                    bucket.revenue += event.amount_micros
                else:
                    bucket.spend += event.amount_micros  # impressions and clicks carry cost
                bucket.hw[kind] = pos
                self._dirty_buckets.add((campaign, start))

        if kind == LEAD or kind == SALES_CONTACT:
            self._join(event, pos)

    def _join(self, event: Event, pos: int) -> None:
        kind = event.kind
        key = (event.campaign, event.lead_id)
        record = self.leads.get(key)
        if record is None:
            record = self.leads[key] = LeadJoin()
        if record.hw[kind] >= pos:
            return
        self._unindex(key, record)
        t = event.occurred_ms
        if kind == LEAD:
            record.lead_ms = t if record.lead_ms is None else min(record.lead_ms, t)
        else:
            record.contact_ms = t if record.contact_ms is None else min(record.contact_ms, t)
        record.hw[kind] = pos
        self._index(key, record)
        self._dirty_leads.add(key)

    def _index(self, key: tuple[str, str], record: LeadJoin, sign: int = 1) -> None:
        """Add (sign=1) or remove (-1) one lead record's part of the derived views."""
        campaign, lead_id = key
        response = record.response_ms()
        if response is not None:
            view = self.responses.get(campaign)
            if view is None:
                view = self.responses[campaign] = ResponseView()
            view.histogram[histogram_bin(response)] += sign
            view.sum_ms += sign * response
            start = bucket_start(record.contact_ms, self.config.bucket_ms)  # type: ignore[arg-type]
            sketch = view.sketches.get(start)
            if sketch is None:
                sketch = view.sketches[start] = {}
            qsketch.add(sketch, response, sign)
            if not sketch:
                del view.sketches[start]
        elif record.lead_ms is not None:
            if sign > 0:
                self.awaiting_contact.setdefault(campaign, {})[lead_id] = record.lead_ms
            else:
                waiting = self.awaiting_contact[campaign]
                del waiting[lead_id]
                if not waiting:
                    del self.awaiting_contact[campaign]
        elif record.contact_ms is not None:
            left = self.unmatched_contacts.get(campaign, 0) + sign
            if left:
                self.unmatched_contacts[campaign] = left
            else:
                del self.unmatched_contacts[campaign]

    def _unindex(self, key: tuple[str, str], record: LeadJoin) -> None:
        self._index(key, record, -1)

    def response_histogram(self, campaign: str) -> tuple[list[int], int] | None:
        """All-time response-time bins and sum (archived plus live), or None if there are none."""
        totals = self.totals.get(campaign)
        view = self.responses.get(campaign)
        if totals is None and view is None:
            return None
        bins = list(totals.archived_histogram) if totals else _empty_histogram()
        total_ms = totals.archived_sum_ms if totals else 0
        if view is not None:
            bins = [a + b for a, b in zip(bins, view.histogram)]
            total_ms += view.sum_ms
        return bins, total_ms

    # -- persistence -----------------------------------------------------------------------

    def finish_batch(self) -> list[Record]:
        """Changed records, in the order that keeps any log prefix consistent (see module doc)."""
        p = self.partition
        records: list[Record] = [(key, None) for key in self._deletions]
        self._deletions.clear()
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
            for chunk in index.seal_batch():
                records.append((_key(p, "d", kind, chunk.first_pos), encode_chunk(chunk)))
            for old in index.evict(self.meta.watermark[kind]):
                records.append((_key(p, "d", kind, old.first_pos), None))
        records.append((_key(p, "m"), encode_meta(self.meta)))
        self._dirty_buckets.clear()
        self._dirty_totals.clear()
        self._dirty_leads.clear()
        return records

    def expire(self, now_ms: int) -> list[Record]:
        """Drop buckets past retention and lead records past the lead TTL; return the records.

        A completed lead's response is folded into its campaign's archive, written before the
        lead record's deletion (see module doc).
        """
        p = self.partition
        config = self.config
        records: list[Record] = []
        deletions: list[Record] = [(key, None) for key in self._deletions]
        self._deletions.clear()
        for campaign in list(self.buckets):
            per_campaign = self.buckets[campaign]
            for start in [s for s in per_campaign
                          if is_expired(s, config.bucket_ms, now_ms, config.retention_ms)]:
                del per_campaign[start]
                self._dirty_buckets.discard((campaign, start))
                deletions.append((_key(p, "b", campaign, start), None))
            if not per_campaign:
                del self.buckets[campaign]
        for view in self.responses.values():
            for start in [s for s in view.sketches
                          if is_expired(s, config.bucket_ms, now_ms, config.retention_ms)]:
                del view.sketches[start]
        archived: dict[str, list[str]] = {}
        for key in list(self.leads):
            record = self.leads[key]
            newest = max(t for t in (record.lead_ms, record.contact_ms, 0) if t is not None)
            if newest + config.lead_ttl_ms > now_ms:
                continue
            campaign, lead_id = key
            response = record.response_ms()
            self._unindex(key, record)
            if response is not None:
                totals = self.totals.setdefault(campaign, Totals())
                totals.archived_histogram[histogram_bin(response)] += 1
                totals.archived_sum_ms += response
                archived.setdefault(campaign, []).append(lead_id)
            del self.leads[key]
            self._dirty_leads.discard(key)
            deletions.append((_key(p, "l", campaign, lead_id), None))
        for campaign in sorted(self.totals):
            totals = self.totals[campaign]
            folded = archived.get(campaign, [])
            if folded or totals.archived_leads:
                totals.archived_leads = folded
                records.append((_key(p, "t", campaign), encode_totals(totals)))
        return records + deletions

    def load(self, records: Iterable[tuple[list, bytes]]) -> None:
        """Rebuild from restored records (decoded keys, raw values), in any order."""
        leads = []
        for key, value in records:
            tag = key[1]
            data = orjson.loads(value)
            if tag == "b":
                self.buckets.setdefault(key[2], {})[key[3]] = decode_bucket(data)
            elif tag == "t":
                self.totals[key[2]] = decode_totals(data)
            elif tag == "l":
                leads.append(((key[2], key[3]), decode_lead(data)))
            elif tag == "d":
                self.dedup[key[2]].load_chunk(Chunk(key[3], data[0], data[1]))
            elif tag == "m":
                self.meta = decode_meta(data)
        for index in self.dedup:
            index.sort_chunks()
        archived = {c: set(t.archived_leads) for c, t in self.totals.items() if t.archived_leads}
        for (campaign, lead_id), record in leads:
            if lead_id in archived.get(campaign, ()):
                # Folded into the archive, but its deletion did not survive: finish the job.
                self._deletions.append(_key(self.partition, "l", campaign, lead_id))
                continue
            self.leads[(campaign, lead_id)] = record
            self._index((campaign, lead_id), record)

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
    return orjson.dumps([b.counts, b.revenue, b.spend, b.hw])


def decode_bucket(d: list) -> Bucket:
    return Bucket(d[0], d[1], d[2], d[3])


def encode_totals(t: Totals) -> bytes:
    return orjson.dumps([t.by_channel, t.archived_histogram, t.archived_sum_ms, t.archived_leads, t.hw])


def decode_totals(d: list) -> Totals:
    return Totals(d[0], d[1], d[2], d[3], d[4])


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
