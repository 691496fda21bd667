"""The fold in slices: a large batch yields to the event loop and folds exactly what one pass
folds (that nothing moves the states meanwhile is the app's lock: tests/agents/test_app.py)."""

from __future__ import annotations

import orjson

from agents.pipeline import Message, Pipeline
from stream.settings import Settings
from tests.factories import NOW_MS, event
from tests.state_harness import canonical


def pipeline(partitions=(0, 1)) -> Pipeline:
    pipe = Pipeline(Settings(max_events_per_message=10_000), lambda: NOW_MS)
    pipe.assign(partitions, [])
    return pipe


def batch() -> list[Message]:
    topic = Settings().topics.clicks
    big = orjson.dumps([event("click", campaign=f"c{i % 7}") for i in range(9_000)])
    small = [orjson.dumps(event("click", campaign="c1")) for _ in range(50)]
    bad = orjson.dumps([event("click"), {"event_type": "click"}, event("click")])
    return [
        Message(topic, 0, 0, big, NOW_MS),
        *(Message(topic, 1, offset, value, NOW_MS) for offset, value in enumerate(small)),
        Message(topic, 0, 1, bad, NOW_MS),
        Message(topic, 1, 50, big, NOW_MS),
    ]


def drive(pipe: Pipeline, messages: list[Message]):
    steps = pipe.process_steps(messages, slice_seconds=0.0)
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, yields
        yields += 1


def test_slices_fold_what_one_pass_folds():
    sliced, one_pass = pipeline(), pipeline()
    messages = batch()
    result, yields = drive(sliced, messages)
    whole = one_pass.process(messages)
    assert yields >= 9  # inside each large message, not only between messages
    assert result == whole
    for partition in (0, 1):
        assert canonical(sliced.states[partition]) == canonical(one_pass.states[partition])
    assert result.events == 9_000 * 2 + 50 + 2
    assert [letter.rejection.reason for letter in result.dead_letters] == ["missing_field"]


def test_the_plans_topic_is_folded_with_its_keys_and_a_bad_record_is_a_dead_letter():
    pipe = pipeline()
    topic = pipe.plans_topic
    good = orjson.dumps({"campaign_id": "c1", "targets": {"cpa": 40}})
    result = pipe.process(
        [
            Message(topic, 0, 0, good, NOW_MS, b"c1"),
            Message(topic, 0, 1, good, NOW_MS, b"c2"),  # keyed as another campaign
            Message(topic, 1, 0, None, NOW_MS, b"c7"),
        ]
    )
    assert pipe.states[0].plans["c1"].targets == {"cpa": 40.0}
    assert [(d.topic, d.partition, d.offset) for d in result.dead_letters] == [(topic, 0, 1)]
    assert result.dead_letters[0].rejection.reason == "invalid_plan"
    again = pipe.process([Message(topic, 0, 1, good, NOW_MS, b"c2")])
    assert again.dead_letters == [] and again.replayed == 1
    assert pipe.resume_positions()[(topic, 0)] == 2


def test_a_batch_of_many_campaigns_writes_its_records_in_slices_in_the_same_order():
    """A batch that touched more campaigns than ``FINISH_STEP`` yields while its records are
    encoded, and they come out as one pass writes them."""
    from stream.changelog import FINISH_STEP

    topic = Settings().topics.clicks
    campaigns = 3 * FINISH_STEP + 7
    many = orjson.dumps([event("click", campaign=f"c{i:04d}") for i in range(campaigns)])
    messages = [Message(topic, 0, 0, many, NOW_MS)]
    sliced, one_pass = pipeline(), pipeline()
    result, yields = drive(sliced, messages)
    whole = one_pass.process(messages)
    assert result.records == whole.records and len(whole.records) > campaigns
    assert yields >= 3 + campaigns // 500  # the fold's slices and the records' (every step)
    assert canonical(sliced.states[0]) == canonical(one_pass.states[0])
