"""One campaign whose row raises (a defect, or a plan no check foresaw) is left out of the
snapshot; every other campaign is still built, exported and judged."""

from __future__ import annotations

import orjson

from stream import snapshot
from stream.events import ValidationRules, decode_message
from stream.state import PartitionState
from tests.factories import NOW_MS, event
from tests.state_harness import CONFIG


def test_a_row_that_raises_leaves_the_other_campaigns_built(monkeypatch, caplog):
    state = PartitionState(0, CONFIG)
    for offset, campaign in enumerate(("a", "boom", "c")):
        body = orjson.dumps(event("click", campaign=campaign))
        events, rejections = decode_message(body, 1, NOW_MS, ValidationRules())
        state.apply_message(1, offset, events, rejections, NOW_MS)
    campaign_row = snapshot.campaign_row

    def failing(state, campaign, *args):
        if campaign == "boom":
            raise OverflowError("date value out of range")
        return campaign_row(state, campaign, *args)

    monkeypatch.setattr(snapshot, "campaign_row", failing)
    rows = list(snapshot.build_rows([state], NOW_MS, 60_000, (300_000,)))
    assert [row.campaign for row in rows] == ["a", "c"]
    assert "the row of campaign 'boom' raised" in caplog.text
