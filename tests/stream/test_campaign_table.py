"""The live page's campaign table (``stream.campaign_table``): the query string, the order (what
needs attention first, then any KPI, missing values last), the filters and the paging."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import campaign_table as t
from stream.leads import HISTOGRAM_BINS
from stream.plans import Plan
from stream.snapshot import CampaignRow, WindowRow

LABELS = ("5m", "15m", "1h")
NOW = 1_790_000_040_000


def row(
    campaign: str,
    impressions: int,
    clicks: int,
    channel: str = "search",
    owner: str | None = None,
    spend_micros: int = 0,
) -> CampaignRow:
    counts = [impressions, clicks, 0, 0, 0]
    windows = [
        WindowRow(ms, list(counts), 0, spend_micros, {}) for ms in (300_000, 900_000, 3_600_000)
    ]
    r = CampaignRow(campaign, windows, {channel: counts}, [0] * HISTOGRAM_BINS, 0, 0, None, 0)
    if owner is not None:
        r.plan = Plan(campaign, None, {"ctr": 0.05}, {}, None, None, None, {"owner": owner})
    return r


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({}, t.TableQuery()),
        ({"sort": "ctr:15m"}, t.TableQuery(sort="ctr:15m", descending=True)),
        ({"sort": "cpa:today", "order": "asc"}, t.TableQuery(sort="cpa:today")),
        ({"sort": "campaign", "order": "desc"}, t.TableQuery(sort="campaign", descending=True)),
        (
            {"channel": "email", "owner": "ops", "q": "camp", "limit": "5", "offset": "10"},
            t.TableQuery(channel="email", owner="ops", search="camp", limit=5, offset=10),
        ),
    ],
)
def test_query_string(params, expected):
    assert t.parse_query(params, LABELS) == expected


@pytest.mark.parametrize(
    ("params", "names"),
    [
        ({"sort": "ctr"}, "sort"),
        ({"sort": "ctr:2h"}, "sort"),
        ({"sort": "mood:15m"}, "sort"),
        ({"order": "up"}, "order"),
        ({"limit": "0"}, "limit"),
        ({"limit": str(t.MAX_LIMIT + 1)}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"offset": "-1"}, "offset"),
    ],
)
def test_a_bad_query_names_its_parameter(params, names):
    with pytest.raises(ValueError, match=f"^{names}:"):
        t.parse_query(params, LABELS)


def test_attention_first_then_by_name():
    rows = [row("a", 100, 5), row("b", 100, 1), row("c", 100, 3), row("d", 0, 0)]
    flags = {
        "c": t.Flags(verdicts={"ctr_collapse": "pause"}),
        "b": t.Flags(holding=({"rule": "ctr_collapse", "kpi": "ctr"},)),
        "d": t.Flags(verdicts={"ctr_collapse": "resume"}),
    }
    page = t.table(rows, LABELS, NOW, flags, t.TableQuery())
    assert [c["campaign"] for c in page["campaigns"]] == ["c", "b", "a", "d"]
    assert [c["attention"] for c in page["campaigns"]] == [0, 1, 2, 2]
    assert page["campaigns"][1]["holding"] == [{"rule": "ctr_collapse", "kpi": "ctr"}]


def test_a_kpi_sort_puts_missing_values_last_both_ways():
    rows = [row("a", 100, 5), row("b", 0, 0), row("c", 100, 1)]
    for order, expected in (("desc", ["a", "c", "b"]), ("asc", ["c", "a", "b"])):
        query = t.parse_query({"sort": "ctr:5m", "order": order}, LABELS)
        page = t.table(rows, LABELS, NOW, {}, query)
        assert [c["campaign"] for c in page["campaigns"]] == expected


def test_summary_figures():
    page = t.table(
        [row("a", 200, 10, owner="ops", spend_micros=4_000_000)], LABELS, NOW, {}, t.TableQuery()
    )
    entry = page["campaigns"][0]
    assert entry["owner"] == "ops" and entry["channel"] == "search"
    assert entry["targets"] == {"ctr": 0.05}
    assert entry["windows"]["15m"]["ctr"] == 0.05
    assert entry["windows"]["15m"]["spend"] == 4.0 and entry["windows"]["15m"]["cpc"] == 0.4
    assert page["channels"] == ["search"] and page["owners"] == ["ops"]


campaigns = st.lists(
    st.tuples(
        st.integers(0, 1000),
        st.integers(0, 50),
        st.sampled_from(["search", "email", "video"]),
        st.sampled_from([None, "ann", "bob"]),
    ),
    max_size=30,
)


@given(
    campaigns,
    st.sampled_from(["attention", "campaign", "ctr:5m", "spend:1h", "clicks:15m"]),
    st.sampled_from(["asc", "desc"]),
    st.sampled_from([None, "search", "email"]),
    st.sampled_from([None, "ann"]),
    st.integers(1, 7),
    st.sets(st.integers(0, 29)),
)
def test_pages_partition_the_filtered_order(specs, sort, order, channel, owner, limit, paused):
    """Whatever the sort and filters: the pages, read one after another, are every matching
    campaign once, in the order of the sort key; ``matched`` counts them."""
    rows = [
        row(f"c{i:02d}", max(imp, clk), clk, ch, ow, spend_micros=clk * 1000)
        for i, (imp, clk, ch, ow) in enumerate(specs)
    ]
    flags = {f"c{i:02d}": t.Flags(verdicts={"r": "pause"}) for i in paused}
    params = {"sort": sort, "order": order, "limit": str(limit)}
    if channel:
        params["channel"] = channel
    if owner:
        params["owner"] = owner
    query = t.parse_query(params, LABELS)
    seen: list[str] = []
    offset = 0
    while True:
        page = t.table(rows, LABELS, NOW, flags, query._replace(offset=offset))
        if not page["campaigns"]:
            break
        assert len(page["campaigns"]) <= limit
        seen += [c["campaign"] for c in page["campaigns"]]
        offset += limit
    wanted = [
        r
        for r in rows
        if (channel is None or t.channel_of(r) == channel)
        and (owner is None or t.owner_of(r) == owner)
    ]
    assert sorted(seen) == sorted(r.campaign for r in wanted)
    if not t.needs_rows(query):  # the page's rows alone: the same campaigns in the same order
        items = [t.Candidate(r.campaign, t.channel_of(r), t.owner_of(r)) for r in rows]
        selected: list[str] = []
        for offset in range(0, len(rows) + limit, limit):
            names, counts = t.select(items, flags, query._replace(offset=offset))
            selected += names
            assert counts["matched"] == len(wanted) and counts["total"] == len(rows)
        assert selected == seen
    assert page["matched"] == len(wanted) and page["total"] == len(rows)
    by_name = {r.campaign: r for r in rows}
    if sort == "attention":
        levels = [0 if by_name[c].campaign in flags else 2 for c in seen]
        assert levels == sorted(levels, reverse=order == "desc")
    elif sort != "campaign":
        values = [t._sort_value(by_name[c], sort, LABELS, NOW) for c in seen]
        present = [v for v in values if v is not None]
        assert values == present + [None] * (len(values) - len(present))  # missing last
        assert present == sorted(present, reverse=order == "desc")
