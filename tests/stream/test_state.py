import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import changelog, expiry, sketch
from stream.codec import decode_key
from stream.events import EVENT_TYPES, decode_message
from stream.state import KINDS, PartitionState, histogram_bin
from tests.factories import NOW_MS, event, kind, raw
from tests.state_harness import (
    CONFIG,
    PLAN_KIND,
    RULES,
    as_messages,
    buckets,
    canonical,
    restore,
    run,
)

MIN = 60_000


def msgs(*events: dict) -> list:
    return as_messages([(kind(e["event_type"]), raw(e)) for e in events])


def total(state: PartitionState, campaign: str, event_type: str) -> int:
    return sum(c[kind(event_type)] for c in state.campaigns[campaign].by_channel.values())


def bucket_counts(state: PartitionState, campaign: str) -> list[int]:
    sums = [0] * KINDS
    for b in buckets(state, campaign).values():
        for k in range(KINDS):
            sums[k] += b.counts[k]
    return sums


def test_counts_land_in_event_time_buckets():
    state, _ = run(
        msgs(
            event("impression", at_ms=NOW_MS - 5 * MIN + 1, cost=0.25),
            event("impression", at_ms=NOW_MS - 5 * MIN + 2, cost=0.25),
            event("click", at_ms=NOW_MS - 1, cost=1.5),
            event("sale", at_ms=NOW_MS - 2 * MIN, value=40),
        )
    )
    starts = sorted(buckets(state, "c1"))
    assert starts == [NOW_MS - 5 * MIN, NOW_MS - 2 * MIN, NOW_MS - MIN]
    first = buckets(state, "c1")[NOW_MS - 5 * MIN]
    assert first.counts == [2, 0, 0, 0, 0] and first.spend == 500_000
    assert buckets(state, "c1")[NOW_MS - 2 * MIN].revenue == 40_000_000


def test_late_event_counts_in_totals_not_windows():
    late_at = NOW_MS - CONFIG.retention_ms - MIN
    state, _ = run(msgs(event("click", at_ms=late_at), event("click")))
    assert total(state, "c1", "click") == 2
    assert bucket_counts(state, "c1")[kind("click")] == 1
    assert state.meta.late[kind("click")] == 1


def test_duplicates_dropped_within_horizon_and_counted():
    first = event("click", event_id="dup")
    state, _ = run(msgs(first, dict(first), event("click")))
    assert total(state, "c1", "click") == 2
    assert state.meta.duplicate[kind("click")] == 1


def arriving(*timed: tuple[dict, int]) -> list:
    """Messages of one event each, with the Kafka timestamps (arrival) given."""
    return [(*m, at) for m, (_, at) in zip(msgs(*(e for e, _ in timed)), timed)]


def test_a_resend_within_the_arrival_horizon_is_a_duplicate_whatever_its_event_time():
    # The first copy arrives while the partition's event time is far ahead of it (a backfill,
    # a replayed file): an event-time horizon would already be over when the resend comes.
    first = event("click", event_id="dup", at_ms=NOW_MS - 50 * MIN)
    state, _ = run(
        arriving(
            (event("click", at_ms=NOW_MS), NOW_MS),
            (first, NOW_MS + 1_000),
            (dict(first), NOW_MS + 9 * MIN),
        )
    )
    assert total(state, "c1", "click") == 2 and state.meta.duplicate[kind("click")] == 1


def test_a_resend_after_the_arrival_horizon_counts_again():
    first = event("click", event_id="dup", at_ms=NOW_MS)
    state, _ = run(
        arriving(
            (first, NOW_MS), (event("click"), NOW_MS + 5 * MIN), (dict(first), NOW_MS + 11 * MIN)
        )
    )
    assert total(state, "c1", "click") == 3 and state.meta.duplicate[kind("click")] == 0


@given(
    st.lists(st.tuples(st.integers(0, 90), st.integers(0, 2)), min_size=1, max_size=30), st.data()
)
def test_resends_within_the_horizon_change_no_count_in_any_order(originals, data):
    """Any event-time disorder, resends interleaved anywhere while within the horizon of their
    first copy's arrival: the counts are those of the stream without the resends."""
    events = [
        event(("impression", "click", "sale")[k], event_id=f"e{i}", at_ms=NOW_MS - age * MIN)
        for i, (age, k) in enumerate(originals)
    ]
    arrivals = [NOW_MS + i * 1_000 for i in range(len(events))]
    clean = list(zip(events, arrivals))
    stream = list(clean)
    for i in data.draw(st.lists(st.integers(0, len(events) - 1), max_size=10)):
        # a resend lands after its original, within the horizon of its arrival
        after = data.draw(st.integers(stream.index(clean[i]) + 1, len(stream)))
        at = max(arrivals[i], stream[after - 1][1]) + data.draw(st.integers(0, 2_000))
        if at - arrivals[i] < CONFIG.dedup_horizon_ms:
            stream.insert(after, (dict(events[i]), at))
    with_resends, _ = run(arriving(*stream), batch=data.draw(st.integers(1, 5)))
    without, _ = run(arriving(*clean))
    a, b = canonical(with_resends, with_positions=False), canonical(without, with_positions=False)
    assert a["totals"] == b["totals"] and a["buckets"] == b["buckets"]
    assert a["meta"][1] == b["meta"][1]  # late
    assert sum(with_resends.meta.duplicate) == len(stream) - len(clean)


def test_same_event_id_in_other_type_is_not_a_duplicate():
    state, _ = run(msgs(event("click", event_id="x"), event("impression", event_id="x")))
    assert sum(state.meta.duplicate) == 0


@pytest.mark.parametrize("order", ["lead_first", "contact_first"])
def test_response_time_join_either_order(order):
    lead = event("lead", lead_id="L", at_ms=NOW_MS - 10 * MIN)
    contact = event("sales_contact", lead_id="L", at_ms=NOW_MS - 4 * MIN)
    state, _ = run(msgs(*([lead, contact] if order == "lead_first" else [contact, lead])), batch=1)
    bins, total_ms = state.response_histogram("c1")
    assert sum(bins) == 1 and bins[histogram_bin(6 * MIN)] == 1
    assert total_ms == 6 * MIN
    contact_sketch = state.index.responses["c1"].sketches.get(NOW_MS - 4 * MIN)
    assert sketch.quantile(contact_sketch, 0.5) == pytest.approx(360_000, rel=0.01)
    assert state.index.awaiting_contact == {} and state.index.unmatched_contacts == {}


def test_earliest_contact_wins_and_late_earlier_contact_retracts():
    lead = event("lead", lead_id="L", at_ms=NOW_MS - 30 * MIN)
    later = event("sales_contact", lead_id="L", at_ms=NOW_MS - 5 * MIN)
    earlier = event("sales_contact", lead_id="L", at_ms=NOW_MS - 20 * MIN)
    state, _ = run(msgs(lead, later, earlier), batch=1)
    bins, total_ms = state.response_histogram("c1")
    assert sum(bins) == 1 and total_ms == 10 * MIN
    assert state.index.responses["c1"].sketches.starts() == [NOW_MS - 20 * MIN]


def test_contact_before_lead_time_counts_as_zero():
    state, _ = run(
        msgs(
            event("sales_contact", lead_id="L", at_ms=NOW_MS - 9 * MIN),
            event("lead", lead_id="L", at_ms=NOW_MS - 8 * MIN),
        )
    )
    bins, total_ms = state.response_histogram("c1")
    assert total_ms == 0 and sum(bins) == 1


def test_awaiting_and_unmatched():
    state, _ = run(
        msgs(
            event("lead", lead_id="A", at_ms=NOW_MS - 30 * MIN),
            event("lead", lead_id="B", at_ms=NOW_MS - 10 * MIN),
            event("sales_contact", lead_id="Z"),
        )
    )
    assert state.index.awaiting_contact == {"c1": {"A": NOW_MS - 30 * MIN, "B": NOW_MS - 10 * MIN}}
    assert state.index.unmatched_contacts == {"c1": 1}


def test_expire_drops_old_buckets_and_dead_leads():
    state, _ = run(
        msgs(
            event("click", at_ms=NOW_MS - 10 * MIN),
            event("lead", lead_id="old", at_ms=NOW_MS - 10 * MIN),
        )
    )
    expired = expiry.expire(state, NOW_MS + CONFIG.retention_ms)
    assert buckets(state, "c1") == {}
    # The minute records go; their hour, which they carried, gets a record of its own first.
    kept = [decode_key(key) for key, value in expired if value is not None]
    assert [k[1] for k in kept] == ["h"]
    assert all(value is None for _, value in expired[len(kept) :])
    assert "old" in state.index.awaiting_contact["c1"]  # a pending lead lives for the lead TTL
    assert total(state, "c1", "click") == 1  # totals live while the campaign has buckets or leads
    records = expiry.expire(state, NOW_MS + CONFIG.lead_ttl_ms)
    assert state.leads == {} and state.index.awaiting_contact == {}
    # Its hour buckets (the long horizons) keep it: retirement waits for the longest horizon.
    assert "c1" in state.campaigns and state.campaigns["c1"].hours.rows
    records = expiry.expire(state, NOW_MS + CONFIG.long_retention_ms + CONFIG.long_bucket_ms)
    # Nothing left: the campaign is retired, its budget slot freed, its totals record deleted.
    assert "c1" not in state.campaigns
    assert (b'[0,"t","c1"]', None) in records
    assert (
        b'[0,"h","c1",%d]' % (NOW_MS - 10 * MIN - (NOW_MS - 10 * MIN) % 3_600_000),
        None,
    ) in records


def _keep_alive(state, at_ms):
    """One fresh impression at ``at_ms``, so the campaign has a bucket and is not retired."""
    return run(
        as_messages([(kind("impression"), raw(event("impression", at_ms=at_ms)))]),
        state=state,
        now_ms=at_ms,
    )[1]


def test_expired_leads_keep_their_response_in_the_archive():
    state, first = run(
        msgs(
            event("lead", lead_id="L", at_ms=NOW_MS - 10 * MIN),
            event("sales_contact", lead_id="L", at_ms=NOW_MS - 5 * MIN),
        )
    )
    alive = _keep_alive(state, NOW_MS + CONFIG.lead_ttl_ms)
    before = state.response_histogram("c1")
    records = expiry.expire(state, NOW_MS + CONFIG.lead_ttl_ms)
    assert state.leads == {} and state.index.responses["c1"].histogram == [0] * len(before[0])
    assert state.response_histogram("c1") == before
    # The archive is written before the deletion: a restore that has the archive but lost the
    # deletion must not count the lead twice.
    totals_at = next(i for i, (k, _) in enumerate(records) if b'"t"' in k)
    lead_at = next(i for i, (k, _) in enumerate(records) if b'"l"' in k)
    assert totals_at < lead_at
    survivor = restore(first + alive + records[:lead_at])
    assert survivor.response_histogram("c1") == before
    assert survivor.leads == {}
    redo = expiry.expire(survivor, NOW_MS + CONFIG.lead_ttl_ms)
    assert (records[lead_at][0], None) in redo


def test_replayed_messages_change_nothing():
    messages = msgs(event("click"), event("lead", lead_id="L"), event("sales_contact", lead_id="L"))
    state, _ = run(messages)
    before = canonical(state)
    for k, offset, _value in messages:
        assert not state.apply_message(k, offset, [], [], NOW_MS)
    assert canonical(state) == before


# -- properties ------------------------------------------------------------------------------

CAMPAIGNS = ["a", "b", "c"]
LEADS = ["L1", "L2", "L3", "L4"]


@st.composite
def event_dicts(draw, *, max_age_ms=CONFIG.retention_ms + 10 * MIN):
    event_type = draw(st.sampled_from(EVENT_TYPES))
    fields = {}
    if event_type in ("lead", "sales_contact"):
        fields["lead_id"] = draw(st.sampled_from(LEADS))
    if event_type in ("impression", "click"):
        fields["cost"] = draw(st.sampled_from([0, 0.01, 0.5, 1.25]))
    if event_type == "sale":
        fields["value"] = draw(st.sampled_from([1, 9.99, 120.5]))
    return event(
        event_type,
        campaign=draw(st.sampled_from(CAMPAIGNS)),
        at_ms=NOW_MS - draw(st.integers(0, max_age_ms)),
        channel=draw(st.sampled_from(["search", "social"])),
        event_id=None,  # distinct events get distinct ids; duplicates are exact copies
        **fields,
    )


@st.composite
def plan_records(draw):
    """A plans-topic record: a campaign's plan, a channel default, a tombstone, or a bad one."""
    campaign = draw(st.sampled_from(CAMPAIGNS))
    shape = draw(st.sampled_from(["plan", "plan", "default", "tombstone", "bad"]))
    if shape == "default":
        return (
            b"\x00channel:search",
            orjson.dumps({"channel": "search", "targets": {"ctr": 0.03}}),
        )
    if shape == "tombstone":
        return (campaign.encode(), None)
    if shape == "bad":
        return (campaign.encode(), orjson.dumps({"campaign_id": campaign, "targets": {"cpa": -1}}))
    plan = {
        "campaign_id": campaign,
        "targets": {"cpa": draw(st.sampled_from([10, 40.5]))},
        "budget": {"daily": draw(st.sampled_from([50, 100]))},
        "timezone": draw(st.sampled_from(["UTC", "Europe/Berlin", "America/New_York"])),
    }
    return (campaign.encode(), orjson.dumps(plan))


@st.composite
def payload_lists(draw, plans=True, **kw):
    """Messages of one event, a batch of events, a bad payload, an exact duplicate, or (with
    ``plans``) a record of the plans topic."""
    payloads: list[tuple[int, bytes]] = []
    shapes = ["one", "one", "one", "batch", "bad", "dup"] + (["plan"] if plans else [])
    for _ in range(draw(st.integers(1, 40))):
        shape = draw(st.sampled_from(shapes))
        if shape == "dup" and payloads:
            payloads.append(draw(st.sampled_from(payloads)))
        elif shape == "bad":
            payloads.append(
                (draw(st.integers(0, 4)), draw(st.sampled_from([b"{", b"[]", b'{"a":1}'])))
            )
        elif shape == "plan":
            payloads.append((PLAN_KIND, draw(plan_records())))
        elif shape == "batch":
            items = draw(st.lists(event_dicts(**kw), min_size=1, max_size=4))
            k = kind(items[0]["event_type"])
            items = [
                dict(i, event_type=items[0]["event_type"])
                for i in items
                if i["event_type"] not in ("lead", "sales_contact", "sale")
                or i["event_type"] == items[0]["event_type"]
            ]
            payloads.append((k, orjson.dumps(items)))
        else:
            e = draw(event_dicts(**kw))
            payloads.append((kind(e["event_type"]), raw(e)))
    return payloads


FAST = settings()  # examples per run from the profile in conftest.py


@FAST
@given(payload_lists())
def test_bucket_sums_equal_totals(payloads):
    """Per event type: events in buckets plus late events equals the all-time totals."""
    state, _ = run(as_messages(payloads))
    for k in range(KINDS):
        in_totals = sum(c[k] for t in state.campaigns.values() for c in t.by_channel.values())
        in_buckets = sum(bucket_counts(state, campaign)[k] for campaign in state.campaigns)
        assert in_buckets + state.meta.late[k] == in_totals


@FAST
@given(payload_lists(max_age_ms=3 * 86_400_000))
def test_hour_buckets_hold_every_event_of_the_long_horizon(payloads):
    """Late conversions included: every counted event within the long retention is in its hour."""
    state, _ = run(as_messages(payloads))
    for k in range(KINDS):
        in_totals = sum(c[k] for t in state.campaigns.values() for c in t.by_channel.values())
        in_hours = sum(
            b.counts[k]
            for t in state.campaigns.values()
            for _, b in t.hours.buckets(CONFIG.long_bucket_ms)
        )
        assert in_hours == in_totals


@FAST
@given(
    payload_lists(plans=False, max_age_ms=5 * MIN),  # a plan's latest record wins: order matters
    st.randoms(use_true_random=False),
    st.integers(1, 9),
)
def test_arrival_order_does_not_change_results(payloads, rnd, batch):
    in_order, _ = run(as_messages(payloads))
    shuffled = list(payloads)
    rnd.shuffle(shuffled)
    reordered, _ = run(as_messages(shuffled), batch=batch)
    a, b = canonical(in_order, with_positions=False), canonical(reordered, with_positions=False)
    assert a == b


@FAST
@given(payload_lists(max_age_ms=2 * 86_400_000), st.data(), st.integers(1, 9), st.integers(1, 9))
def test_crash_at_any_point_then_replay_is_exact(payloads, data, batch, replay_batch):
    """A restore of any prefix of the record log, then a replay from its checkpoints, is exact,
    with arrival (Kafka timestamps) jumping past the dedup horizon now and then."""
    steps = data.draw(
        st.lists(st.integers(0, 400_000), min_size=len(payloads), max_size=len(payloads)),
        label="arrival steps (ms)",
    )
    arrivals = [NOW_MS + sum(steps[: i + 1]) for i in range(len(steps))]
    messages = [(*m, at) for m, at in zip(as_messages(payloads), arrivals)]
    uninterrupted, log = run(messages, batch=batch)
    cut = data.draw(st.integers(0, len(log)), label="records that reached the changelog")
    survivor = restore(log[:cut])
    resume = survivor.resume_offsets()
    # The consumer re-delivers from the checkpoint on; across topics in any interleaving.
    pending = [m for m in messages if m[1] >= resume[m[0]]]
    pending = data.draw(st.permutations(pending), label="re-delivery order")
    pending.sort(key=lambda m: (m[0], m[1]))  # ... but each topic in offset order
    interleave = data.draw(
        st.lists(st.integers(0, PLAN_KIND), min_size=len(pending), max_size=len(pending))
    )
    ordered = _interleave(pending, interleave)
    recovered, _ = run(ordered, state=survivor, batch=replay_batch)
    # Positions in hw may name another event as the one that completed a lead/contact pair when
    # topics interleave differently; everything observable must be identical.
    assert canonical(recovered, with_positions=False) == canonical(
        uninterrupted, with_positions=False
    )
    assert recovered.meta.checkpoint == uninterrupted.meta.checkpoint


@FAST
@given(payload_lists(max_age_ms=2 * 86_400_000), st.data(), st.integers(1, 9), st.integers(1, 9))
def test_a_crash_during_the_replay_of_a_crash_is_exact(payloads, data, batch, replay_batch):
    """Two crashes: the replay after the first one writes records of buckets restored ahead of
    the checkpoint, then stops at any point itself; the second restore and replay stay exact."""
    messages = as_messages(payloads)
    uninterrupted, log = run(messages, batch=batch)
    cut = data.draw(st.integers(0, len(log)), label="records of the first run kept")
    survivor = restore(log[:cut])
    resume = survivor.resume_offsets()
    pending = [m for m in messages if m[1] >= resume[m[0]]]
    interleave = data.draw(
        st.lists(st.integers(0, PLAN_KIND), min_size=len(pending), max_size=len(pending))
    )
    _, replay_log = run(_interleave(pending, interleave), state=survivor, batch=replay_batch)
    cut2 = data.draw(st.integers(0, len(replay_log)), label="records of the replay kept")
    second = restore(log[:cut] + replay_log[:cut2])
    resume = second.resume_offsets()
    recovered, _ = run([m for m in messages if m[1] >= resume[m[0]]], state=second, batch=batch)
    assert canonical(recovered, with_positions=False) == canonical(
        uninterrupted, with_positions=False
    )


def _interleave(messages, choices):
    topics = PLAN_KIND + 1  # the five input topics and the plans topic
    queues = {k: [m for m in messages if m[0] == k] for k in range(topics)}
    out = []
    for choice in choices:
        for k in [(choice + i) % topics for i in range(topics)]:
            if queues[k]:
                out.append(queues[k].pop(0))
                break
    return out


# -- the campaign budget ---------------------------------------------------------------------

BUDGET = CONFIG._replace(max_campaigns=3, max_channels=2)


def test_a_flood_of_new_campaign_ids_is_bounded_and_counted():
    flood = [event("impression", campaign=f"user-{i}", channel=f"ch-{i % 5}") for i in range(500)]
    state, log = run(msgs(*flood), config=BUDGET, batch=50)
    assert set(state.campaigns) == {"user-0", "user-1", "user-2", "__other__"}
    assert state.meta.folded == [497, sum(1 for i in range(500) if i % 5 >= 2)]
    assert total(state, "__other__", "impression") == 497
    assert all(total(state, f"user-{i}", "impression") == 1 for i in range(3))
    assert state.channels == {"ch-0", "ch-1"}
    assert canonical(restore(log, BUDGET)) == canonical(state)


def test_a_retired_campaign_frees_its_slot():
    state, _ = run(
        msgs(*[event("click", campaign=c, at_ms=NOW_MS - 10 * MIN) for c in "abc"]), config=BUDGET
    )
    later = NOW_MS + BUDGET.retention_ms
    expiry.expire(state, later)
    assert state.admitted_campaigns == 3  # held by their hour buckets: the longest horizon
    later = NOW_MS + BUDGET.long_retention_ms + BUDGET.long_bucket_ms
    expiry.expire(state, later)
    assert state.admitted_campaigns == 0
    run(
        [(kind("click"), 10, raw(event("click", campaign="d", at_ms=later)))],
        state=state,
        config=BUDGET,
        now_ms=later,
    )
    assert "d" in state.campaigns and "__other__" not in state.campaigns


@FAST
@given(
    st.lists(st.tuples(st.sampled_from(EVENT_TYPES), st.integers(0, 7)), min_size=1, max_size=40),
    st.data(),
    st.integers(1, 9),
)
def test_budget_with_crash_and_replay(items, data, batch):
    """Admission is persisted before what it admits: a replay in the original order is identical,
    and in any cross-topic order no event is lost or counted twice and no admitted campaign's
    figures change."""
    evs = [event(t, campaign=f"c{c}", lead_id=f"L{c}") for t, c in items]
    messages = msgs(*evs)
    uninterrupted, log = run(messages, config=BUDGET, batch=batch)
    assert uninterrupted.admitted_campaigns <= BUDGET.max_campaigns
    cut = data.draw(st.integers(0, len(log)), label="records that reached the changelog")
    survivor = restore(log[:cut], BUDGET)
    resume = survivor.resume_offsets()
    pending = [m for m in messages if m[1] >= resume[m[0]]]
    same_order, _ = run(pending, state=restore(log[:cut], BUDGET), config=BUDGET, batch=batch)
    assert canonical(same_order, with_positions=False) == canonical(
        uninterrupted, with_positions=False
    )

    pending.sort(key=lambda m: (m[0], m[1]))
    choices = data.draw(st.lists(st.integers(0, 4), min_size=len(pending), max_size=len(pending)))
    other_order, _ = run(_interleave(pending, choices), state=survivor, config=BUDGET)
    for k in range(KINDS):
        assert sum(total(other_order, c, EVENT_TYPES[k]) for c in other_order.campaigns) == sum(
            total(uninterrupted, c, EVENT_TYPES[k]) for c in uninterrupted.campaigns
        )
    for campaign in set(other_order.campaigns) & set(uninterrupted.campaigns) - {"__other__"}:
        assert (
            other_order.campaigns[campaign].by_channel
            == uninterrupted.campaigns[campaign].by_channel
        )


def test_replay_after_a_lost_meta_does_not_see_ids_from_the_future():
    """An id seen, then seen again past the horizon in a batch whose Meta was lost: the replay
    must decide as the original run did (found by the crash property)."""
    old, new = NOW_MS - 10 * MIN - 1, NOW_MS  # arrivals: just past the horizon apart
    first = event("impression", event_id="x", at_ms=new)
    messages = arriving(
        (first, old),
        *[(event("impression", at_ms=new), new) for _ in range(7)],
        (dict(first), new),
        (event("impression", at_ms=new), new),
    )
    uninterrupted, log = run(messages, batch=9)
    assert uninterrupted.meta.duplicate[0] == 0  # the horizon had passed
    for cut in range(len(log) + 1):
        survivor = restore(log[:cut])
        resume = survivor.resume_offsets()
        recovered, _ = run([m for m in messages if m[1] >= resume[m[0]]], state=survivor, batch=1)
        assert canonical(recovered, with_positions=False) == canonical(
            uninterrupted, with_positions=False
        ), cut


def test_lead_expiry_in_small_rounds_ends_where_one_full_scan_does():
    evs = [
        event("lead", campaign=f"c{i % 7}", lead_id=f"L{i}", at_ms=NOW_MS - (i % 3) * MIN)
        for i in range(60)
    ]
    evs += [event("sales_contact", campaign=f"c{i % 7}", lead_id=f"L{i}") for i in range(0, 60, 2)]
    later = NOW_MS + CONFIG.lead_ttl_ms
    short = CONFIG._replace(long_retention_ms=CONFIG.retention_ms)  # hours gone before the leads
    whole, _ = run(msgs(*evs), config=short)
    expiry.expire(whole, later)
    rounds, _ = run(msgs(*evs), config=short)
    for _ in range(60):
        expiry.expire(rounds, later, lead_budget=5)
    assert rounds.leads == {} and whole.leads == {}
    assert canonical(rounds) == canonical(whole)
    assert "c0" not in rounds.campaigns  # nothing left: retired


def test_an_event_too_old_for_the_minute_buckets_still_counts_in_its_hour():
    """A late conversion: outside the short windows, inside the long horizons."""
    three_days_ago = NOW_MS - 3 * 86_400_000
    state, log = run(msgs(event("sale", at_ms=three_days_ago, value=80), event("sale", value=20)))
    assert state.meta.late[kind("sale")] == 1  # late for the short windows
    hours = dict(state.campaigns["c1"].hours.buckets(CONFIG.long_bucket_ms))
    assert sum(b.counts[kind("sale")] for b in hours.values()) == 2
    assert hours[three_days_ago - three_days_ago % 3_600_000].revenue == 80_000_000
    assert canonical(restore(log)) == canonical(state)


def test_an_event_older_than_the_long_horizon_counts_in_totals_only():
    ancient = NOW_MS - CONFIG.long_retention_ms - 2 * 3_600_000
    state, _ = run(msgs(event("click", at_ms=ancient)))
    assert total(state, "c1", "click") == 1
    assert not state.campaigns["c1"].hours.rows and not state.campaigns["c1"].rows


@FAST
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("event"), st.integers(0, 3 * 60), st.sampled_from(EVENT_TYPES)),
            st.tuples(st.just("tick"), st.integers(1, 50), st.just("")),
        ),
        max_size=40,
    ),
    st.data(),
)
def test_hours_carried_by_minute_records_survive_their_expiry_and_any_crash(ops, data):
    """Minute records carry their hour's row; expiry seals the hour in a record of its own
    before deleting them. With the clock moving (events up to 3 hours old, expiry as it goes),
    a restore of any prefix of the log, then the replay, holds the same hours as the live run."""
    state = PartitionState(0, CONFIG)
    log: list = []
    now = NOW_MS
    messages = []  # (kind, offset, value, now) as folded
    offsets = [0] * KINDS
    for op, value, event_type in ops:
        if op == "tick":
            now += value * MIN
            log.extend(expiry.expire(state, now))
            continue
        k = kind(event_type)
        body = {"lead_id": "L"} if event_type in ("lead", "sales_contact") else {}
        payload = raw(event(event_type, at_ms=now - value * MIN, **body))
        events, rejections = decode_message(payload, k, now, RULES)
        state.apply_message(k, offsets[k], events, rejections, now)
        messages.append((k, offsets[k], payload, now))
        offsets[k] += 1
        log.extend(changelog.finish_batch(state))
    cut = data.draw(st.integers(0, len(log)), label="records kept")
    survivor = restore(log[:cut])
    resume = survivor.resume_offsets()
    for k, offset, payload, at in messages:
        if offset >= resume[k]:
            events, rejections = decode_message(payload, k, at, RULES)
            survivor.apply_message(k, offset, events, rejections, at)
    expiry.expire(survivor, now)

    def hours(s):
        return {c: dict(cs.hours.buckets(CONFIG.long_bucket_ms)) for c, cs in s.campaigns.items()}

    assert hours(survivor) == hours(state)
