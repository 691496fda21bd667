"""A baseline rule over real partition state: a campaign judged against its own weekday-hour
normal is paused when it halves, while a campaign with no history (cold start) is not judged
and is counted as such."""

from __future__ import annotations

import yaml

from autopause.engine import PAUSE
from autopause.runner import SHIPPED_RULES, Runner, baselines_read
from rulebook.rules import parse_rules
from stream.settings import Settings
from stream.snapshot import build_rows
from tests.autopause.test_runner import CAUGHT_UP, MIN, WINDOWS_MS, Feed
from tests.factories import NOW_MS

HOUR = 60 * MIN
WEEK = 7 * 24 * HOUR
SETTINGS = Settings()
SHIPPED = parse_rules(yaml.safe_load(SHIPPED_RULES.read_text()))
RULES = [r for r in SHIPPED if r.name == "ctr_below_normal"]
REFS = baselines_read(SETTINGS, RULES)


def history(feed: Feed, campaign: str, clicks_per_thousand: int) -> None:
    """Four weeks of the hours around the test's, at its usual CTR."""
    top = NOW_MS - NOW_MS % HOUR
    for week in (4, 3, 2, 1):
        for hour in (-2, -1, 0, 1):
            at = top - week * WEEK + hour * HOUR + 30 * MIN
            feed.minute(at, [(campaign, 4000, 4 * clicks_per_thousand)])


def run(feed: Feed, runner: Runner, minutes: int):
    issued, counts = [], {}
    for t in range(minutes):
        now = NOW_MS + t * MIN
        # Both at 0.1% CTR now: 1 click per 1,000 impressions.
        feed.minute(now, [("usual", 1000, 1), ("newcomer", 1000, 1), ("steady", 1000, 1)])
        rows = list(build_rows([feed.state], now + 30_000, 60_000, WINDOWS_MS, baselines=REFS))
        result = runner.tick(now + 30_000, [feed.state], rows, CAUGHT_UP, mode="live")
        issued += [d for _, d in result.to_send]
        counts = result.counts
    return issued, counts


def test_a_campaign_under_half_its_weekday_hour_normal_is_paused_a_new_one_is_not_judged():
    feed = Feed()
    history(feed, "usual", clicks_per_thousand=4)  # usually 0.4%: now under half of it
    history(feed, "steady", clicks_per_thousand=1)  # usually 0.1%: now its normal
    issued, counts = run(feed, Runner(RULES, SETTINGS), 30)
    assert [(d["campaign_id"], d["verdict"]) for d in issued] == [("usual", PAUSE)]
    evidence = issued[0]["evidence"]
    assert evidence["threshold"] == 0.5 * 0.004  # half the median of its four weeks
    assert evidence["bound"] < evidence["threshold"]
    assert counts[("ctr_below_normal", "no_baseline")] == 1  # the newcomer


def test_two_weeks_of_history_is_a_cold_start_for_a_four_week_median():
    feed = Feed()
    top = NOW_MS - NOW_MS % HOUR
    for week in (2, 1):
        for hour in (-1, 0, 1):
            feed.minute(top - week * WEEK + hour * HOUR + 30 * MIN, [("young", 4000, 16)])
    issued, counts = run(feed, Runner(RULES, SETTINGS), 30)
    assert issued == []
    assert counts[("ctr_below_normal", "no_baseline")] == 4  # and the three of ``run``
