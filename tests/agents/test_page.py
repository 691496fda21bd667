"""The live page's data on a real worker app (Faust test_context, memory store): the table, the
pipeline counters and a campaign's series come from the same state as /metrics; the rules'
holding conditions from the worker's own decision round; the static files need nothing online."""

from __future__ import annotations

import re

import pytest
from prometheus_client import CollectorRegistry

from agents import page as live_page
from agents.app import create_app
from agents.pipeline import Message
from autopause.evaluate import Evaluation
from autopause.runner import holding_conditions
from rulebook.rules import parse_rules
from stream import campaign_table as tables
from stream.exposition import window_labels
from stream.series import campaign_series
from stream.settings import Settings
from tests.factories import NOW_MS, event, raw

SETTINGS = Settings(broker="kafka://127.0.0.1:9", web_port=16198)


@pytest.fixture
def monitor():
    monitor = create_app(SETTINGS, clock=lambda: NOW_MS, registry=CollectorRegistry())
    monitor.pipeline.assign(range(SETTINGS.partitions), [])
    return monitor


def fold(monitor, events: list[tuple[str, str, int]]) -> None:
    """(event type, campaign, minutes ago), one message each."""
    topics = dict(
        zip(("impression", "click", "lead", "sale", "sales_contact"), SETTINGS.topics.inputs())
    )
    offsets: dict[tuple[str, int], int] = {}
    messages = []
    for event_type, campaign, ago in events:
        topic, partition = topics[event_type], 0
        offset = offsets[(topic, partition)] = offsets.get((topic, partition), -1) + 1
        body = raw(
            event(event_type, campaign=campaign, at_ms=NOW_MS - ago * 60_000, channel="search")
        )
        messages.append(Message(topic, partition, offset, body, NOW_MS))
    monitor.pipeline.process(messages)


def test_the_table_and_the_pipeline_counters_read_the_state(monitor):
    fold(
        monitor,
        [("impression", "a", 1)] * 40 + [("click", "a", 1)] * 2 + [("impression", "b", 3)] * 10,
    )
    snap = monitor.exporter.snapshot()
    labels = window_labels(snap.windows_ms)
    page = tables.table(
        snap.rows, labels, snap.now_ms, live_page.flags_of(monitor), tables.TableQuery()
    )
    by_name = {c["campaign"]: c for c in page["campaigns"]}
    assert set(by_name) == {"a", "b"}
    assert by_name["a"]["windows"]["5m"]["impressions"] == 40
    assert by_name["a"]["windows"]["5m"]["ctr"] == 2 / 40
    assert by_name["b"]["windows"]["5m"]["clicks"] == 0
    states = monitor.pipeline.states.values()
    figures = live_page.pipeline_figures(snap, states, {("t", 0): 3, ("t", 1): 4})
    assert figures["events_total"]["impression"] == 50 and figures["events_total"]["click"] == 2
    assert figures["lag_messages"] == 7
    # The default order builds the page's rows alone, and gives the same page.
    names, counts = tables.select(tables.candidates(states), {}, tables.TableQuery(limit=1))
    assert names == ["a"] and counts["matched"] == counts["total"] == 2
    assert counts["channels"] == ["search"]


def test_a_campaigns_series_holds_its_minutes_and_hours(monitor):
    fold(monitor, [("impression", "a", 0)] * 3 + [("impression", "a", 5)] + [("click", "a", 5)])
    series = campaign_series(monitor.pipeline.states.values(), "a", NOW_MS, minutes=10)
    minutes = series["minutes"]
    assert len(minutes) == 10 and minutes[-1][0] == NOW_MS - NOW_MS % 60_000
    fields = series["fields"]
    assert minutes[-1][fields.index("impressions")] == 3
    assert (
        minutes[-6][fields.index("impressions")] == 1 and minutes[-6][fields.index("clicks")] == 1
    )
    assert sum(p[fields.index("impressions")] for p in series["hours"]) == 4
    assert campaign_series(monitor.pipeline.states.values(), "nobody", NOW_MS)["minutes"] == []


def test_holding_conditions_name_what_holds():
    rules = parse_rules(
        {
            "rules": [
                {
                    "name": "low_ctr",
                    "summary": "s",
                    "kpi": "ctr",
                    "window": "15m",
                    "op": "<",
                    "threshold": 0.01,
                    "severity": "page",
                },
                {
                    "name": "stop",
                    "summary": "s",
                    "severity": "page",
                    "all": [
                        {"kpi": "spend", "window": "today", "op": ">", "threshold": 100},
                        {"kpi": "sales", "window": "today", "op": "<", "threshold": 1},
                    ],
                },
            ]
        }
    )
    held = Evaluation(True, 0.004, None, None, threshold=0.01)
    spent = Evaluation(True, 150.0, None, None, threshold=100)
    sold = Evaluation(False, 2.0, None, None, threshold=1)
    compound = spent._replace(holds=False, parts=(spent, sold))
    got = holding_conditions(rules, {"low_ctr": held, "stop": compound})
    assert got == (
        {"rule": "low_ctr", "kpi": "ctr", "window": "15m", "value": 0.004, "threshold": 0.01},
    )
    both = compound._replace(holds=True, parts=(spent, sold._replace(holds=True)))
    assert [h["kpi"] for h in holding_conditions(rules, {"stop": both})] == ["spend", "sales"]


def test_the_page_needs_nothing_online():
    """No CDN, no external font or script: every URL the static files name is the worker's own."""
    for name in live_page.FILES:
        text = live_page.static_file(name).decode()
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.I), name
    index = live_page.static_file("index.html").decode()
    assert 'src="/page.js"' in index and 'href="/page.css"' in index
