"""The worker's live page at ``/``: static files shipped in the package (``agents/static``), fed by
the JSON endpoints the scripts use, extended with two views of ``/kpis``:

- ``/kpis?view=table[&sort=&order=&channel=&owner=&q=&limit=&offset=]``: one page of the campaign
  table (``stream.campaign_table``), what the rules hold of each campaign, and the pipeline's
  counters; only the page's rows are formatted, so 5,000 campaigns cost a sort, not 5,000 rows
  of JSON;
- ``/kpis?campaign=ID``: one campaign's summary and its last hour (minutes) and today (hours).

Every page sits behind the same token as the other endpoints (``agents.auth``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from importlib import resources
from typing import TYPE_CHECKING

import faust
import orjson

from stream import campaign_table as tables
from stream.campaign import kind_totals
from stream.events import EVENT_TYPES
from stream.exposition import window_labels
from stream.series import campaign_series
from stream.snapshot import Snapshot
from stream.state import PartitionState

from .kpis_json import snapshot_json

if TYPE_CHECKING:
    from .app import Monitor

STATIC = resources.files("agents") / "static"
FILES = {
    # UTF-8 (the page says so; its script and style inherit it)
    "index.html": "text/html",
    "page.js": "text/javascript",
    "page.css": "text/css",
}


def static_file(name: str) -> bytes:
    return (STATIC / name).read_bytes()


def flags_of(monitor: Monitor) -> dict[str, tables.Flags]:
    """Per campaign: the conditions holding at the last decision round, and the cluster's latest
    verdict per rule (``/decisions``)."""
    holding = monitor.decisions.runner.holding if monitor.decisions else {}
    current = monitor.feed.view.current if monitor.feed else {}
    out = {}
    for campaign in holding.keys() | current.keys():
        verdicts = {rule: d.get("verdict", "") for rule, d in current.get(campaign, {}).items()}
        out[campaign] = tables.Flags(holding.get(campaign, ()), verdicts)
    return out


def pipeline_figures(
    snap: Snapshot, states: Iterable[PartitionState], lag: Mapping[tuple[str, int], int]
) -> dict:
    """The pipeline at a glance (``snap``: a snapshot's header): totals the page turns into
    rates between two polls."""
    totals = [0] * len(EVENT_TYPES)
    for state in states:
        for campaign in state.campaigns.values():
            for kind, count in enumerate(kind_totals(campaign.by_channel)):
                totals[kind] += count
    return {
        "events_total": dict(zip(EVENT_TYPES, totals)),
        "late_total": dict(zip(EVENT_TYPES, snap.late)),
        "duplicate_total": dict(zip(EVENT_TYPES, snap.duplicate)),
        "rejected_total": dict(snap.rejected),
        "lag_messages": sum(lag.values()),
        "campaigns_tracked": snap.campaigns_tracked,
        "campaign_budget": snap.campaign_budget,
    }


def install(monitor: Monitor, lag: Callable[[], Mapping[tuple[str, int], int]]) -> None:
    app = monitor.app
    exporter = monitor.exporter
    settings = monitor.pipeline.settings

    def static_page(name: str) -> Callable:
        body, content_type = static_file(name), FILES[name]

        async def page(web_view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
            return web_view.bytes(body, content_type=content_type)

        return page

    app.page("/")(static_page("index.html"))
    app.page("/page.js")(static_page("page.js"))
    app.page("/page.css")(static_page("page.css"))

    @app.page("/kpis")
    async def kpis_page(web_view: faust.web.View, request: faust.web.Request) -> faust.web.Response:
        query = request.query
        if query.get("view") == "table":
            labels = exporter.window_labels
            try:
                wanted = tables.parse_query(query, labels)
            except ValueError as exc:
                return web_view.error(400, str(exc))
            flags = flags_of(monitor)
            if tables.needs_rows(wanted):  # a KPI order: every campaign's figures
                snap = await exporter.snapshot_async()
                body = tables.table(snap.rows, labels, snap.now_ms, flags, wanted)
            else:  # the rows of the page alone
                names, counts = tables.select(tables.candidates(exporter.states()), flags, wanted)
                snap, rows = await exporter.rows_of(names)
                by_name = {row.campaign: row for row in rows}
                page = [by_name[name] for name in names if name in by_name]
                body = tables.page_body(page, labels, snap.now_ms, flags, wanted, counts)
            body["pipeline"] = pipeline_figures(snap, exporter.states(), lag())
            body["decision_mode"] = settings.decision_mode if monitor.decisions else None
            return _json(web_view, body)
        campaign = query.get("campaign")
        if campaign is not None:
            snap, rows = await exporter.rows_of([campaign])
            if not rows:
                return web_view.error(404, f"no campaign {campaign!r} in this worker's partitions")
            row = rows[0]
            labels = window_labels(snap.windows_ms)
            held = flags_of(monitor).get(campaign, tables.NO_FLAGS)
            detail = tables.summary(row, labels, snap.now_ms, held)
            detail["series"] = campaign_series(
                monitor.pipeline.states.values(),
                campaign,
                snap.now_ms,
                day_start_ms=row.day_start_ms,
            )
            return _json(web_view, detail)
        snap = await exporter.snapshot_async()
        return _json(web_view, snapshot_json(snap))


def _json(web_view: faust.web.View, body: dict) -> faust.web.Response:
    return web_view.bytes(orjson.dumps(body), content_type="application/json")
