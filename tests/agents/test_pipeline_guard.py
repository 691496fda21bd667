"""The fold's last resort: a record that raises where validation did not expect it is
dead-lettered as ``internal_error`` with its exception, counted, and skipped; the worker goes on.

The defect is injected (validation has no known hole left to use): the campaign ``boom``'s
events, or the plan record keyed ``boom``, raise inside the fold, as a defect would."""

from __future__ import annotations

import orjson
import pytest

from agents.pipeline import Message, Pipeline
from stream import state as state_module
from stream.settings import Settings
from stream.state import PLANS, PartitionState
from tests.factories import NOW_MS, event

SETTINGS = Settings()
CLICKS = SETTINGS.topics.clicks
PLANS_TOPIC = SETTINGS.topics.plans


@pytest.fixture
def defect(monkeypatch):
    """A fold that raises for campaign ``boom`` (events) and key ``boom`` (plans)."""
    apply_events = PartitionState.apply_events
    decode = state_module.decode_plan_record

    def failing_apply(self, kind, offset, index, events, now_ms):
        if any(e.campaign == "boom" for e in events):
            raise KeyError("a defect of the fold")
        return apply_events(self, kind, offset, index, events, now_ms)

    def failing_decode(key, value):
        if key == b"boom":
            raise RecursionError("a defect of the plan check")
        return decode(key, value)

    monkeypatch.setattr(PartitionState, "apply_events", failing_apply)
    monkeypatch.setattr(state_module, "decode_plan_record", failing_decode)


def pipeline() -> Pipeline:
    pipe = Pipeline(SETTINGS, lambda: NOW_MS)
    pipe.assign([0], [])
    return pipe


def click(campaign: str) -> bytes:
    return orjson.dumps(event("click", campaign=campaign))


def plan(campaign: str, cpa: float) -> bytes:
    return orjson.dumps({"campaign_id": campaign, "targets": {"cpa": cpa}})


@pytest.mark.parametrize(
    "bad, topic, exception",
    [
        (Message(CLICKS, 0, 1, click("boom"), NOW_MS), CLICKS, "KeyError"),
        (Message(PLANS_TOPIC, 0, 1, plan("boom", 5), None, b"boom"), PLANS_TOPIC, "RecursionError"),
    ],
    ids=["event", "plan"],
)
def test_a_record_that_raises_is_dead_lettered_and_the_fold_goes_on(defect, bad, topic, exception):
    pipe = pipeline()
    result = pipe.process(
        [
            Message(CLICKS, 0, 0, click("good"), NOW_MS),
            Message(PLANS_TOPIC, 0, 0, plan("good", 12.5), None, b"good"),
            bad,
            Message(CLICKS, 0, 2, click("good"), NOW_MS),
            Message(PLANS_TOPIC, 0, 2, plan("other", 3), None, b"other"),
        ]
    )
    (letter,) = result.dead_letters
    assert (letter.topic, letter.offset, letter.rejection.reason) == (topic, 1, "internal_error")
    assert letter.rejection.detail.startswith(exception)
    assert letter.rejection.original == bad.value
    assert result.failed == 1
    state = pipe.states[0]
    assert state.campaigns["good"].kind_totals()[1] == 2  # the records around it folded
    assert "boom" not in state.campaigns and "boom" not in state.plans
    assert state.plans["good"].targets == {"cpa": 12.5}
    assert state.plans["other"].targets == {"cpa": 3.0}
    assert state.meta.rejected == {"internal_error": 1}
    index = pipe.kind_of_topic.get(topic, PLANS)
    assert state.meta.checkpoint[index] >= 1  # moved past it
    # A replay of the batch (a restart before the commit) folds nothing twice, fails nothing.
    again = pipe.process([bad])
    assert again.replayed == 1 and again.failed == 0


def test_the_same_record_read_again_after_a_restore_is_not_a_crash_loop(defect):
    """The checkpoint written with the batch is past the failed record: a worker restored from
    the changelog resumes after it."""
    pipe = pipeline()
    result = pipe.process([Message(CLICKS, 0, 0, click("boom"), NOW_MS)])
    restored = Pipeline(SETTINGS, lambda: NOW_MS)
    restored.assign([0], result.records)
    assert restored.resume_positions()[(CLICKS, 0)] == 1
