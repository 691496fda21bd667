"""The decision tick over real partition state: figures from the fold, trust, persistence of the
tracks and the outbox, and a restore that continues where the crashed worker stopped."""

from __future__ import annotations

import orjson

from autopause.engine import PAUSE, UNKNOWN
from autopause.runner import Runner, load_rules
from rulebook.rules import parse_rules
from stream.events import EVENT_TYPES, ValidationRules, decode_message
from stream.settings import Settings, SettingsError
from stream.snapshot import build_rows
from stream.state import PartitionState
from tests.factories import NOW_MS, event
from tests.state_harness import CONFIG, restore

MIN = 60_000
SETTINGS = Settings()
WINDOWS_MS = (300_000, 900_000, 3_600_000)
RULES = parse_rules(
    {
        "rules": [
            {
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
        ]
    }
)


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
        self.log.extend(self.state.finish_batch())


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
    assert decision["evidence"]["volume"]["count"] >= 2000 and decision["seq"] == 1
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
