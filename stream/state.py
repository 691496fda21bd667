"""Per-partition KPI state, updated idempotently so that replays after a crash change nothing.

Every record carries ``hw``: per event kind, the highest event position folded into it, where a
position is ``(offset << 20) | index-in-message``. An event changes a record only if its position
is above the record's ``hw`` for its kind, so re-applying events that a record already holds is a
no-op. The partition's ``Meta`` record holds, per input topic, the offset through which all state
is complete (the checkpoint); consumption resumes after it.

This module holds the state and the fold; ``stream.changelog`` writes a batch's changed records
and restores a state from them, ``stream.expiry`` drops what has aged out and retires campaigns.
The state keeps, besides its figures, what those two need between calls (the ``dirty_*`` sets,
pending deletions): they are the state's own bookkeeping, not to be touched elsewhere.

**Bounded whatever ids arrive.** A partition admits at most ``max_campaigns`` campaigns (and
``max_channels`` channels); events of any other campaign are folded at ingest into the campaign
``__other__`` (channel ``__other__``) and counted in ``Meta.folded``. A campaign is admitted once it
has a record, and ``__other__``'s records of a batch are written after every admitted campaign's,
so a restored prefix that holds a folded event also holds every admission made before it: an event
is never counted both under its campaign and under ``__other__``. A campaign is retired (its slot
freed, its all-time totals dropped) once its last bucket (minute or hour: the longest horizon) and
lead record have expired.

**Two resolutions.** Every event within reach lands in a minute bucket (the short trailing windows,
kept ``retention_ms``) and in an hour bucket (the long horizons: today, 7d, 30d, flight, kept
``long_retention_ms``): an event too old for the minute buckets still counts in its hour (and in
``Meta.late``, which is about the short windows).

**Bucket positions are the partition's.** A bucket record's ``hw`` is, per kind, the last position
the partition had folded when it was written (``folded_through``): the record holds every event of
its bucket up to there. So the rows in memory need no positions of their own (a month of hour
buckets is most of the state): only after a restore do the rows whose record is ahead of the
restored checkpoint (written by a batch whose ``Meta`` was lost) keep theirs, in ``replay_hw``,
until the replay has passed them.

Response times are derived from self-contained lead records (``stream.leads``). Only when a lead
record is deleted (after the lead TTL) is its response folded into the campaign's persisted
histogram archive; the archive names the leads of its latest fold, so a deletion lost in a crash
cannot count a lead twice.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from .campaign import _INT64_MAX, KINDS, REVENUE, ROW, SPEND, Bucket, CampaignState
from .codec import BUCKET, HOUR, Record
from .dedup import DedupIndex
from .events import LEAD as LEAD_KIND
from .events import SALE, SALES_CONTACT, Event, Rejection
from .horizons import grid_problem
from .leads import HISTOGRAM_BINS, LeadJoin, ResponseIndex, histogram_bin
from .plans import Plan, decode_plan_record
from .windows import bucket_start, first_kept_start, is_expired

OTHER = "__other__"
POSITION_BITS = 20
MAX_EVENTS_PER_MESSAGE = 1 << POSITION_BITS
FOLDED_CAMPAIGN, FOLDED_CHANNEL = 0, 1
PLANS = KINDS  # the plans topic's place in Meta.checkpoint

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


def _fresh_checkpoint() -> list[int]:
    return [-1] * (KINDS + 1)  # the input topics, then the plans topic (PLANS)


def last_position(offset: int) -> int:
    """The highest position a message at ``offset`` can hold (-1 for no offset)."""
    return -1 if offset < 0 else (offset << POSITION_BITS) | (MAX_EVENTS_PER_MESSAGE - 1)


@dataclass(slots=True)
class Meta:
    # Last offset folded, per input topic and (index PLANS) of the plans topic.
    checkpoint: list[int] = field(default_factory=_fresh_checkpoint)
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
    # The long horizons (today, 7d, 30d, flight) read hour buckets kept this long.
    long_bucket_ms: int = 3_600_000
    long_retention_ms: int = 32 * 86_400_000


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
        self.dirty_buckets: dict[str, set[int]] = {}  # campaign -> bucket starts
        # campaign -> hour bucket starts changed without their minute bucket (late events, or a
        # replay after a crash between the two records); ``dirty_buckets`` implies the rest.
        self.dirty_hours: dict[str, set[int]] = {}
        self.admitted_in_batch: list[str] = []
        self.dirty_totals: set[str] = set()
        self.dirty_leads: set[tuple[str, str]] = set()
        self.pending_deletions: list[bytes] = []
        self.evicted_chunks: list[Record] = []  # dedup chunk deletions, written with the next batch
        self.expired_cutoff: int | None = None  # the oldest kept bucket at the last expiry
        self.expired_long_cutoff: int | None = None  # and hour bucket
        self.lead_scan: list[str] = []  # campaigns left in this round of the lead scan
        self.archive_written: set[str] = set()  # campaigns whose archive names leads
        # Plans in force: a campaign's by its id, a channel's default by its plans-topic key.
        self.plans: dict[str, Plan] = {}
        self.dirty_plans: set[str] = set()
        # Per kind, the last position folded: a bucket record written now holds its bucket's
        # events up to there (its ``hw``).
        self.folded_through = _fresh_hw()
        # (tag, campaign, start) -> hw of the restored bucket records ahead of the checkpoint,
        # and per kind the highest of them: below it, the fold asks whether a bucket holds an
        # event already.
        self.replay_hw: dict[tuple[str, str, int], list[int]] = {}
        self.replay_until = _fresh_hw()
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
        if events:
            last = base + len(events) - 1
            if last > self.folded_through[kind]:
                self.folded_through[kind] = last
            if self.replay_hw and all(
                f >= r for f, r in zip(self.folded_through, self.replay_until)
            ):
                self.replay_hw.clear()

    def holds(self, tag: str, campaign: str, start: int, kind: int, pos: int) -> bool:
        """Whether a restored bucket record ahead of the checkpoint already holds an event."""
        held = self.replay_hw.get((tag, campaign, start))
        return held is not None and held[kind] >= pos

    def record_hw(self, tag: str, campaign: str, start: int) -> list[int]:
        """The ``hw`` of a bucket record written now (see the module doc)."""
        held = self.replay_hw.get((tag, campaign, start))
        through = self.folded_through
        return list(through) if held is None else [max(a, b) for a, b in zip(through, held)]

    def apply_plan(self, offset: int, key: bytes | None, value: bytes | None) -> Rejection | None:
        """Fold one record of the plans topic (the caller has checked it is past the plans
        checkpoint): a plan in force from now, a tombstone's removal, or the rejection of a bad
        record, which changes nothing but its count. The latest record of a key wins, so a
        replay ends where the run ended. The record is checked whole before anything changes,
        and the checkpoint moves with it applied or refused, never before."""
        decoded = decode_plan_record(key, value)
        if not isinstance(decoded, str) and decoded[1] is not None:
            zone = decoded[1].timezone
            problem = None if zone is None else grid_problem(zone, self.config.long_bucket_ms)
            if problem is not None:  # its days could not be summed exactly: refused, not misread
                decoded = problem
        if isinstance(decoded, str):
            rejection = Rejection("invalid_plan", decoded, None, value or b"")
            self.count_rejections([rejection])
            self.meta.checkpoint[PLANS] = offset
            return rejection
        name, plan = decoded
        self.meta.checkpoint[PLANS] = offset
        if plan is not None:
            self.plans[name] = plan
        elif self.plans.pop(name, None) is None:
            return None  # a tombstone for a plan this partition does not hold
        self.dirty_plans.add(name)
        # Rows derived from the plan are stale: its campaign's, or for a channel default all.
        if name.startswith("\x00"):  # a channel default (no campaign id holds a NUL)
            affected = list(self.campaigns.values())
        else:
            affected = [self.campaigns[name]] if name in self.campaigns else []
        for campaign_state in affected:
            campaign_state.version += 1
        return None

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
        long_ms = config.long_bucket_ms
        long_kept_from = first_kept_start(now_ms, long_ms, config.long_retention_ms)
        money = REVENUE if kind == SALE else SPEND
        campaigns, channels = self.campaigns, self.channels
        dirty_totals, dirty_buckets = self.dirty_totals, self.dirty_buckets
        dirty_hours = self.dirty_hours
        watermark = watermarks[kind]
        arrival = meta.arrival[kind]
        replay_until = self.replay_until[kind]  # -1 unless a restore left records ahead
        holds = self.holds
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
            totals_hw = state.hw
            if totals_hw[kind] < pos:
                # ``state.count`` inlined.
                channel = event.channel
                if channel not in channels:
                    channel = self._channel_for(channel)
                per_channel = state.by_channel.get(channel)
                if per_channel is None:
                    per_channel = state.by_channel[channel] = [0] * KINDS
                per_channel[kind] += 1
                totals_hw[kind] = pos
                dirty_totals.add(name)
                changed = True
            start = occurred - occurred % bucket_ms
            amount = event.amount_micros
            in_minute = False
            if start < kept_from:
                late[kind] += 1
            elif pos > replay_until or not holds(BUCKET, name, start, kind, pos):
                # ``state.add`` inlined for a row that exists (nearly every event), as below.
                rows = state.rows
                at = (start - state.first_start) // bucket_ms * ROW
                if rows and 0 <= at < len(rows):
                    rows[at + kind] += 1
                    if amount:
                        total = rows[at + money] + amount
                        rows[at + money] = total if total <= _INT64_MAX else _INT64_MAX
                else:
                    state.add(kind, start, amount, money, bucket_ms)
                in_minute = True
                dirty = dirty_buckets.get(name)
                if dirty is None:
                    dirty = dirty_buckets[name] = set()
                dirty.add(start)
                changed = True
            hour = occurred - occurred % long_ms
            if hour >= long_kept_from and (
                pos > replay_until or not holds(HOUR, name, hour, kind, pos)
            ):
                # ``hours.add`` inlined for an hour row that exists (nearly every event): the
                # second resolution costs one more increment, not a second method call.
                hours = state.hours
                rows = hours.rows
                at = (hour - hours.first_start) // long_ms * ROW
                if rows and 0 <= at < len(rows):
                    if hour < hours.sealed_before:  # a late event: see ``BucketRows``
                        hours.epoch += 1
                    rows[at + kind] += 1
                    if amount:
                        total = rows[at + money] + amount
                        rows[at + money] = total if total <= _INT64_MAX else _INT64_MAX
                else:
                    hours.add(kind, hour, amount, money, long_ms)
                # A dirty minute bucket marks its hour dirty too (``changelog.finish_batch``):
                # only an hour changed without its minute is noted here.
                if not in_minute:
                    dirty = dirty_hours.get(name)
                    if dirty is None:
                        dirty = dirty_hours[name] = set()
                    dirty.add(hour)
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
            self.admitted_in_batch.append(name)
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
            self.dirty_totals.add(campaign)
            changed = True

        config = self.config
        amount = event.amount_micros
        money = REVENUE if kind == SALE else SPEND
        start = bucket_start(event.occurred_ms, config.bucket_ms)
        if is_expired(start, config.bucket_ms, now_ms, config.retention_ms):
            meta.late[kind] += 1
        elif not self.holds(BUCKET, campaign, start, kind, pos):
            state.add(kind, start, amount, money, config.bucket_ms)
            self.dirty_buckets.setdefault(campaign, set()).add(start)
            changed = True
        long_ms = config.long_bucket_ms
        hour = bucket_start(event.occurred_ms, long_ms)
        if not is_expired(hour, long_ms, now_ms, config.long_retention_ms) and not self.holds(
            HOUR, campaign, hour, kind, pos
        ):
            state.hours.add(kind, hour, amount, money, long_ms)
            self.dirty_hours.setdefault(campaign, set()).add(hour)
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
        self.dirty_leads.add((campaign, lead_id))
        return True

    # -- persistence -------------------------------------------------------------------------

    # -- persistence and expiry: stream.changelog, stream.expiry ------------------------------

    def resume_offsets(self) -> dict[int, int]:
        """Per input kind, the next offset to read: after the checkpoint, or 0 if there is none.

        With no checkpoint nothing is known to be complete, whatever the consumer group has
        committed (a restore that stopped short can lose the newest Meta record), so the
        partition is read again from the start; the records' ``hw`` make that replay a no-op.
        """
        return {kind: off + 1 for kind, off in enumerate(self.meta.checkpoint)}  # PLANS included
