"""A backtest of a recorded stream issues the decisions the live worker issued over it: the
worker's path (batches as they arrived, folded at their arrival, rows from the worker's own
exporter with its row cache, a round at each decision tick) against ``agents.backtest``'s
(one replay in timestamp order)."""

from __future__ import annotations

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.backtest import Backtest
from agents.metrics import KpiExporter
from agents.pipeline import Message, Pipeline
from autopause.runner import Runner, baselines_read
from rulebook.rules import parse_rules
from stream.events import EVENT_TYPES
from stream.settings import Settings

MIN = 60_000
START = 1_790_000_040_000 - 1_790_000_040_000 % MIN
SETTINGS = Settings()
TOPICS = dict(zip(EVENT_TYPES, SETTINGS.topics.inputs()))
RULES = parse_rules(
    {
        "rules": [
            {
                "name": "ctr_low",
                "summary": "s",
                "severity": "page",
                "kpi": "ctr",
                "window": "5m",
                "op": "<",
                "threshold": 0.02,
                "min_volume": {"event_type": "impression", "count": 100},
                "for": "2m",
                "may_pause": True,
                "cooldown": "5m",
                "resume_threshold": 0.03,
            },
            {
                "name": "quiet_and_cheap",
                "summary": "s",
                "severity": "info",
                "any": [
                    {"kpi": "clicks", "window": "15m", "op": "<", "threshold": 3},
                    {"kpi": "impressions", "window": "5m", "op": ">", "threshold": 400},
                ],
                "for": "1m",
                "action": "notify",
            },
        ]
    }
)
TICK = MIN

# Per minute and campaign: (impressions, clicks); a campaign's messages land within its minute.
minute = st.tuples(st.integers(0, 120), st.integers(0, 6))
streams = st.lists(st.tuples(minute, minute, minute), min_size=5, max_size=25)


def recorded(per_minute: list) -> list[Message]:
    """The stream as Kafka holds it: each campaign's minute in one impression and one click
    message (2 partitions, keyed by campaign), timestamps in order."""
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for m, traffic in enumerate(per_minute):
        for c, (impressions, clicks) in enumerate(traffic):
            campaign, partition = f"camp-{c}", c % 2
            at = START + m * MIN + (c + 1) * 7_000
            for event_type, count in (("impression", impressions), ("click", clicks)):
                if not count:
                    continue
                body = [
                    {
                        "event_id": f"{campaign}-{event_type}-{m}-{i}",
                        "event_type": event_type,
                        "occurred_at": at - 1_000,
                        "campaign_id": campaign,
                        "cost": 0.01,
                    }
                    for i in range(count)
                ]
                topic = TOPICS[event_type]
                offset = offsets.get((topic, partition), 0)
                offsets[(topic, partition)] = offset + 1
                out.append(Message(topic, partition, offset, orjson.dumps(body), at, None))
    return out


def live(messages: list[Message], cuts: list[int], until: int) -> list[dict]:
    """As a worker runs it: batches as they arrive (cut where ``cuts`` say, and at every tick),
    folded at their arrival, and a round on the exporter's rows at every tick."""
    clock = [0]
    pipeline = Pipeline(SETTINGS, lambda: clock[0])
    pipeline.assign([0, 1], [])
    exporter = KpiExporter(
        lambda: list(pipeline.states.values()),
        SETTINGS,
        lambda: clock[0],
        baselines_read(SETTINGS, RULES),
    )
    runner = Runner(RULES, SETTINGS)
    lag = {(t, p): 0 for t in SETTINGS.topics.inputs() for p in (0, 1)}
    issued: list[dict] = []
    tick = START - START % TICK + TICK
    batch: list[Message] = []

    def fold() -> None:
        if batch:
            clock[0] = max(clock[0], batch[-1].timestamp or 0)
            pipeline.process(batch)
            batch.clear()

    def round_at(now: int) -> None:
        clock[0] = now
        states = list(pipeline.states.values())
        result = runner.tick(now, states, exporter.snapshot().rows, lag, mode="backtest")
        runner.sent(states, [d for _, d in result.to_send])
        issued.extend(d for _, d in result.to_send)

    for i, message in enumerate(messages):
        while (message.timestamp or 0) >= tick:
            fold()
            round_at(tick)
            tick += TICK
        batch.append(message)
        if i in cuts:
            fold()
    fold()
    while tick <= until:
        round_at(tick)
        tick += TICK
    return issued


def backtest(messages: list[Message], until: int) -> list[dict]:
    replay = Backtest(SETTINGS, {"new": RULES}, [0, 1], tick_ms=TICK)
    replay.feed(messages)
    replay.finish(until)
    return replay.verdicts["new"].decisions


@settings(max_examples=40, deadline=None)
@given(streams, st.sets(st.integers(0, 200), max_size=30))
def test_a_backtest_issues_the_decisions_the_live_worker_issued(per_minute, cuts):
    messages = recorded(per_minute)
    until = START + (len(per_minute) + 3) * MIN
    expected = live(messages, sorted(cuts), until)
    assert backtest(messages, until) == expected


def test_the_recorded_incident_gives_decisions_at_all():
    """The property compares something: this stream pauses, resumes and notifies."""
    healthy, collapsed = (100, 5), (100, 0)
    quiet = (50, 0)
    per_minute = [(healthy, healthy, quiet)] * 6 + [(collapsed, healthy, quiet)] * 6
    per_minute += [(healthy, healthy, quiet)] * 8
    messages = recorded(per_minute)
    until = START + 23 * MIN
    decisions = backtest(messages, until)
    verdicts = {(d["campaign_id"], d["rule"], d["verdict"]) for d in decisions}
    assert ("camp-0", "ctr_low", "pause") in verdicts
    assert ("camp-0", "ctr_low", "resume") in verdicts
    assert ("camp-2", "quiet_and_cheap", "notify") in verdicts
    assert decisions == live(messages, [], until)


def test_plans_given_before_the_stream_do_not_start_its_clock():
    """``--plans`` records come first, stamped 0: the rounds still start with the stream."""
    plan = Message(
        SETTINGS.topics.plans, 0, 0, orjson.dumps({"campaign_id": "camp-0"}), 0, b"camp-0"
    )
    messages = recorded([((100, 5), (0, 0), (0, 0))] * 3)
    replay = Backtest(SETTINGS, {"new": RULES}, [0, 1], tick_ms=TICK)
    replay.feed([plan, *messages])
    replay.finish(START + 5 * MIN)
    assert replay.verdicts["new"].rounds <= 6
    assert "camp-0" in replay.pipeline.states[0].plans
