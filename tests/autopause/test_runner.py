"""The decision tick over real partition state: figures from the fold, trust, persistence of the
tracks and the outbox, and a restore that continues where the crashed worker stopped."""

from __future__ import annotations

import orjson
import pytest

from autopause.engine import PAUSE, RUNNING, UNKNOWN
from autopause.ledger import Ledger
from autopause.policy import ACT, Action, Limits, judge
from autopause.runner import Runner, load_rules
from autopause.view import DecisionView
from rulebook.rules import parse_rules
from stream import changelog, expiry
from stream.codec import AUTOPAUSE, key
from stream.events import EVENT_TYPES, ValidationRules, decode_message
from stream.settings import Settings, SettingsError
from stream.snapshot import build_rows
from stream.state import PartitionState
from tests.factories import NOW_MS, event
from tests.state_harness import CONFIG, restore

MIN = 60_000
SETTINGS = Settings()
WINDOWS_MS = (300_000, 900_000, 3_600_000)
CTR_RULE = {
    "name": "ctr_collapse",
    "summary": "s",
    "severity": "page",
    "kpi": "ctr",
    "window": "15m",
    "op": "<",
    "threshold": 0.005,
    "confident": True,
    "for": "5m",
    "may_pause": True,
    "min_volume": {"event_type": "impression", "count": 2000},
}
RULES = parse_rules({"rules": [CTR_RULE]})


class Feed:
    """One partition fed a minute at a time: (campaign, impressions, clicks) per minute."""

    def __init__(self, state: PartitionState | None = None) -> None:
        self.state = state or PartitionState(0, CONFIG)
        self.offsets = [self.state.meta.checkpoint[k] + 1 for k in range(5)]
        self.log: list = []

    def minute(self, at_ms: int, traffic: list[tuple[str, int, int]]) -> None:
        for campaign, impressions, clicks in traffic:
            for kind, count in ((0, impressions), (1, clicks)):
                if count:
                    body = orjson.dumps(
                        [
                            event(EVENT_TYPES[kind], campaign=campaign, at_ms=at_ms)
                            for _ in range(count)
                        ]
                    )
                    events, rejections = decode_message(body, kind, at_ms, ValidationRules())
                    self.state.apply_message(kind, self.offsets[kind], events, rejections, at_ms)
                    self.offsets[kind] += 1
        self.log.extend(changelog.finish_batch(self.state))


CAUGHT_UP = {(topic, 0): 0 for topic in SETTINGS.topics.inputs()}


def tick(runner, feed, now, lag=None):
    rows = list(build_rows([feed.state], now, 60_000, WINDOWS_MS))
    result = runner.tick(now, [feed.state], rows, CAUGHT_UP | (lag or {}), mode="live")
    feed.log.extend(result.records)
    return result


def incident(minutes=30, collapse_at=10):
    for t in range(minutes):
        bad_clicks = 60 if t < collapse_at else 1
        yield t, [("bad", 400, bad_clicks), ("good", 400, 60), ("small", 20, 0)]


def test_an_incident_gives_one_pause_for_the_bad_campaign_only():
    feed, runner = Feed(), Runner(RULES, SETTINGS)
    issued = []
    for t, traffic in incident(40):
        now = NOW_MS + t * MIN
        feed.minute(now, traffic)
        issued += [d for _, d in tick(runner, feed, now + 30_000).to_send]
    assert [(d["campaign_id"], d["verdict"]) for d in issued] == [("bad", PAUSE)]
    decision = issued[0]
    evidence = decision["evidence"]
    assert evidence["bound"] == evidence["wilson"]["upper"] < 0.005
    assert evidence["wilson"]["lower"] < evidence["value"] < evidence["wilson"]["upper"]
    assert decision["evidence"]["volume"]["count"] >= 2000
    assert decision["seq"] == decision["issued_at_ms"]  # its first: the issue time
    assert (
        decision["valid_until_ms"] - decision["issued_at_ms"]
        == SETTINGS.decision_ttl_seconds * 1000
    )


def test_a_worker_taking_over_continues_and_resends_the_outbox_with_the_same_id():
    feed, runner = Feed(), Runner(RULES, SETTINGS)
    first = []
    for t, traffic in incident(40):
        now = NOW_MS + t * MIN
        feed.minute(now, traffic)
        result = tick(runner, feed, now + 30_000)
        if result.to_send:
            first = [d for _, d in result.to_send]
            break  # crash: the decision was issued and persisted, never sent
    assert first
    taken = Feed(restore(feed.log))
    new_runner = Runner(RULES, SETTINGS)
    resent = new_runner.unsent([taken.state], now)
    assert [d for _, d in resent] == first
    feed.log.extend(new_runner.sent([taken.state], [d for _, d in resent]))
    later = []
    for t, traffic in incident(60):
        if NOW_MS + t * MIN <= now:
            continue
        taken.minute(NOW_MS + t * MIN, traffic)
        later += tick(new_runner, taken, NOW_MS + t * MIN + 30_000).to_send
    assert later == []  # the paused campaign is not paused again
    assert new_runner.unsent([taken.state], now) == []


def test_a_lagging_partition_never_pauses():
    feed, runner = Feed(), Runner(RULES, SETTINGS)
    verdicts = []
    lag = {("marketing.impressions", 0): SETTINGS.decision_max_lag + 1}
    for t, traffic in incident(40):
        now = NOW_MS + t * MIN
        feed.minute(now, traffic)
        result = tick(runner, feed, now + 30_000, lag if t >= 26 else None)  # pending since 24
        verdicts += [d["verdict"] for _, d in result.to_send]
        if t == 27:
            assert result.counts[("ctr_collapse", "unknown")] == 1
    assert verdicts == [UNKNOWN]


def test_a_partition_whose_end_offsets_are_not_known_yet_is_recovering():
    feed, runner = Feed(), Runner(RULES, SETTINGS)
    feed.minute(NOW_MS, [("bad", 400, 0)])
    trust = runner._trust(RULES[0], feed.state, NOW_MS, {}, [0.0] * 5)
    assert not trust.trusted and trust.reason.startswith("recovering")
    assert runner._trust(RULES[0], feed.state, NOW_MS, CAUGHT_UP, [0.0] * 5).trusted


def test_shipped_rules_load_and_bad_settings_name_the_setting(tmp_path):
    assert {r.name for r in load_rules(SETTINGS)} >= {"ctr_collapse", "conversion_drop"}
    narrow = Settings(windows_seconds=(300, 3600))
    try:
        load_rules(narrow)
    except SettingsError as exc:
        assert "KPI_RULES" in str(exc) and "15m" in str(exc)
    else:
        raise AssertionError("a rule on an unexported window must fail")
    missing = Settings(rules_path=str(tmp_path / "nope.yaml"))
    try:
        load_rules(missing)
    except SettingsError as exc:
        assert "KPI_RULES" in str(exc)


def test_a_partition_lost_during_the_round_is_left_to_its_new_owner():
    feed, runner = Feed(), Runner(RULES, SETTINGS)
    for t, traffic in incident(29):
        now = NOW_MS + t * MIN
        feed.minute(now, traffic)
        tick(runner, feed, now + 30_000)
    before = {name: (c.seq, dict(c.tracks)) for name, c in feed.state.autopause.items()}
    later = now + MIN + 30_000  # past the rule's for: the pause is due
    rows = list(build_rows([feed.state], later, 60_000, WINDOWS_MS))
    result = runner.tick(
        later, [feed.state], rows, CAUGHT_UP, mode="live", owned=lambda state: False
    )
    assert result.to_send == [] and result.records == []
    assert {name: (c.seq, dict(c.tracks)) for name, c in feed.state.autopause.items()} == before
    assert tick(runner, feed, later).to_send  # still owned: the pause is issued


DAY = 86_400_000
PAUSER = Limits(mode="live", max_share=1.0)  # the seq guard alone decides


def run_until_paused(runner, feed, start_ms):
    """The campaign "bad" collapses from ``start_ms``: its pause decision, sent and acknowledged."""
    for t, traffic in incident(40):
        now = start_ms + t * MIN
        feed.minute(now, traffic)
        sent = [d for _, d in tick(runner, feed, now + 30_000).to_send]
        feed.log.extend(runner.sent([feed.state], sent))
        if sent:
            assert [(d["campaign_id"], d["verdict"]) for d in sent] == [("bad", PAUSE)]
            return sent[0], now + 30_000
    raise AssertionError("no pause")


def go_quiet_until_retired(runner, feed, paused_at):
    """The campaign "bad" stops; its rule re-arms as its windows drain; once its KPI state
    has expired (the long horizons' hour buckets, 32 days) and its auto-pause record, idle, is deleted. Returns the time of that tick."""
    for t in range(1, 21):
        now = paused_at + t * MIN
        feed.minute(now, [("good", 400, 60)])
        tick(runner, feed, now)
    assert feed.state.autopause["bad"].tracks["ctr_collapse"].phase == RUNNING
    later = paused_at + 33 * DAY  # past the longest horizon (its hour buckets: 32 days)
    feed.minute(later, [("good", 400, 60)])
    feed.log.extend(expiry.expire(feed.state, later))
    assert "bad" not in feed.state.campaigns
    result = tick(runner, feed, later)
    assert (key(0, AUTOPAUSE, "bad"), None) in result.records
    assert "bad" not in feed.state.autopause
    return later


def pauser_judges(ledger, decision, now_ms):
    return judge(decision, now_ms, ledger.known(decision, now_ms), PAUSER)


@pytest.mark.parametrize("takeover", [None, "before retirement", "after retirement"])
def test_a_campaign_paused_again_after_retirement_gets_a_higher_seq(tmp_path, takeover):
    """Issue 14 (9): a retired campaign's record is deleted; its next pause must still be above
    every seq the pauser handled for it, or the pauser drops it ("seq 1 after 1") and
    /decisions keeps the stale one."""
    feed, runner = Feed(), Runner(RULES, SETTINGS)
    first, paused_at = run_until_paused(runner, feed, NOW_MS)
    ledger = Ledger(tmp_path / "ledger.sqlite")
    ledger.note_partition_size(0, 3)
    assert pauser_judges(ledger, first, paused_at) == Action(ACT, PAUSE)
    ledger.record(first, paused_at, "done", action=PAUSE, acted_at_ms=paused_at)
    if takeover == "before retirement":
        feed, runner = Feed(restore(feed.log)), Runner(RULES, SETTINGS)
    retired_at = go_quiet_until_retired(runner, feed, paused_at)
    if takeover == "after retirement":
        feed, runner = Feed(restore(feed.log)), Runner(RULES, SETTINGS)
        assert "bad" not in feed.state.autopause
    second, again_at = run_until_paused(runner, feed, retired_at + MIN)

    assert pauser_judges(ledger, second, again_at) == Action(ACT, PAUSE)
    assert second["seq"] > first["seq"] and second["decision_id"] != first["decision_id"]
    view = DecisionView()
    for offset, decision in enumerate([first, second]):
        view.add(0, offset, decision)
    assert view.current["bad"]["ctr_collapse"] == second
    view.add(0, 2, first)  # a resend of the old decision changes nothing
    assert view.current["bad"]["ctr_collapse"] == second
    ledger.close()


def test_a_runner_takes_every_shipped_rule():
    """Each shipped rule names the event kinds its trust is judged on (budget rules: spend)."""
    runner = Runner(load_rules(SETTINGS), SETTINGS)
    assert set(runner.kinds) >= {"ctr_collapse", "overspend_pacing", "cpa_over_target"}
    assert runner.kinds["overspend_pacing"][1] == frozenset({0, 1})  # impressions and clicks


PLAN_RULES = parse_rules({"rules": [{**CTR_RULE, "threshold": {"target": "ctr", "factor": 0.25}}]})


def test_a_rule_against_the_plan_judges_campaigns_with_the_target_only():
    feed, runner = Feed(), Runner(PLAN_RULES, SETTINGS)
    for offset, campaign in enumerate(("bad", "good")):
        plan = {"campaign_id": campaign, "targets": {"ctr": 0.02}}
        assert feed.state.apply_plan(offset, campaign.encode(), orjson.dumps(plan)) is None
    issued = []
    for t, traffic in incident(40):
        now = NOW_MS + t * MIN
        traffic = [*traffic, ("untargeted", 400, 1)]  # collapsed too, but no CTR target
        feed.minute(now, traffic)
        issued += [d for _, d in tick(runner, feed, now + 30_000).to_send]
    assert [(d["campaign_id"], d["verdict"]) for d in issued] == [("bad", PAUSE)]
    evidence = issued[0]["evidence"]
    assert evidence["target"] == "ctr" and evidence["factor"] == 0.25
    assert evidence["threshold"] == 0.25 * 0.02 and evidence["bound"] < evidence["threshold"]
    assert "ctr_collapse" not in getattr(feed.state.autopause.get("untargeted"), "tracks", {})
    assert issued[0]["campaigns_judged"] == 2  # bad and good; not the campaigns without a target

    # Its plan removed, the paused campaign is still stepped (no resume without a human) and a
    # round goes on without error.
    feed.state.apply_plan(2, b"bad", None)
    later = NOW_MS + 41 * MIN
    feed.minute(later, [("bad", 400, 60)])
    result = tick(runner, feed, later + 30_000)
    assert result.to_send == []
    assert feed.state.autopause["bad"].tracks["ctr_collapse"].phase != RUNNING  # still paused


def test_a_rest_of_day_pause_of_a_rule_gone_from_the_file_is_resumed_in_seq_order():
    """Two rest-of-day rules pause one campaign; one leaves the rules file before midnight. At
    midnight both resumes are issued, the gone rule's (an orphan) first and with the lower seq,
    so the pauser drops neither as out of order: the first is declined (the other rule's pause
    still holds the campaign), the second resumes it."""
    rule_a = {**CTR_RULE, "name": "rule_a", "pause_for": "rest_of_day"}
    rule_b = {**CTR_RULE, "name": "rule_b", "pause_for": "rest_of_day"}
    feed = Feed()
    runner = Runner(parse_rules({"rules": [rule_a, rule_b]}), SETTINGS)
    ledger = Ledger(":memory:")
    ledger.note_partition_size(0, 3)
    limits = Limits(mode="live", max_share=1.0)
    paused = {"bad": False}

    def pauser(decisions: list[dict], now: int) -> list[str]:
        kinds = []
        for d in decisions:
            action = judge(d, now, ledger.known(d, now), limits)
            kinds.append(action.kind)
            if action.kind == ACT:
                changes = paused["bad"] != (d["verdict"] == "pause")
                paused["bad"] = d["verdict"] == "pause"
                outcome = "done" if changes else "already"
                ledger.record(d, now, outcome, action=d["verdict"], acted_at_ms=now)
            else:
                ledger.record(d, now, "skipped" if action.kind == "decline" else action.kind)
        return kinds

    for t, traffic in incident(40):
        now = NOW_MS + t * MIN
        feed.minute(now, traffic)
        result = tick(runner, feed, now + 30_000)
        feed.log.extend(runner.sent([feed.state], [d for _, d in result.to_send]))
        pauser([d for _, d in result.to_send if d["campaign_id"] == "bad"], now + 30_000)
    assert paused["bad"]
    tracks = feed.state.autopause["bad"].tracks
    assert {name: t.phase for name, t in tracks.items()} == {"rule_a": "paused", "rule_b": "paused"}

    after = Runner(parse_rules({"rules": [rule_b]}), SETTINGS)  # rule_a left the file
    later = tracks["rule_b"].until_ms + MIN
    feed.minute(later - 30_000, [("bad", 400, 60), ("good", 400, 60)])
    sent = [d for _, d in tick(after, feed, later).to_send]
    assert [(d["rule"], d["verdict"]) for d in sent] == [("rule_a", "resume"), ("rule_b", "resume")]
    assert sent[0]["seq"] < sent[1]["seq"]
    assert pauser(sent, later) == ["decline", "act"]
    assert not paused["bad"]
    assert tick(after, feed, later + MIN).to_send == []  # each resume issued once
    assert "rule_a" not in feed.state.autopause["bad"].tracks  # its promise kept, it goes


def test_a_spend_rule_trusts_a_click_feed_with_costs_and_no_impressions():
    """Cost comes on impressions or on clicks: a click tracker without an impression feed is a
    live spend feed, judged on its clicks' event time (it was judged 'stalled' for ever)."""
    spend_rule = {
        "name": "overspend",
        "summary": "s",
        "severity": "page",
        "kpi": "spend",
        "window": "15m",
        "op": ">",
        "threshold": 100,
        "for": "5m",
        "may_pause": True,
    }
    runner = Runner(parse_rules({"rules": [spend_rule]}), SETTINGS)
    (rule,) = runner.rules
    driving, _ = runner.kinds[rule.name]
    assert driving == {EVENT_TYPES.index("impression"), EVENT_TYPES.index("click")}
    state = PartitionState(0, CONFIG)
    now = NOW_MS
    state.meta.watermark[EVENT_TYPES.index("click")] = now - MIN  # clicks flowing
    state.meta.watermark[EVENT_TYPES.index("impression")] = 0  # no impression feed
    trust = runner._trust(rule, state, now, CAUGHT_UP, [0.0] * len(EVENT_TYPES))
    assert trust.trusted, trust
    state.meta.watermark[EVENT_TYPES.index("click")] = now - 3_600_000  # both silent an hour
    trust = runner._trust(rule, state, now, CAUGHT_UP, [0.0] * len(EVENT_TYPES))
    assert not trust.trusted and "no impression or click event" in trust.reason
