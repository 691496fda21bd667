"""The fold in slices: a large batch yields to the event loop, folds exactly what one pass folds,
and a partition revoked at a yield is folded no further and writes nothing."""

from __future__ import annotations

import orjson

from agents.pipeline import Message, Pipeline
from stream.codec import partition_of_key
from stream.events import EVENT_TYPES
from stream.settings import Settings
from tests.factories import NOW_MS, event
from tests.state_harness import canonical

CLICKS = EVENT_TYPES.index("click")


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


def drive(pipe: Pipeline, messages: list[Message], at_yield=None):
    steps = pipe.process_steps(messages, slice_seconds=0.0)
    yields = 0
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value, yields
        yields += 1
        if at_yield is not None:
            at_yield(yields)


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


def test_a_partition_revoked_at_a_yield_writes_nothing():
    pipe = pipeline()
    revoked_state = pipe.states[0]

    def revoke_first(yields: int) -> None:
        if yields == 1:
            pipe.revoke([0])

    result, _ = drive(pipe, batch(), revoke_first)
    assert {partition_of_key(key) for key, _ in result.records} == {1}
    assert all(letter.partition == 1 for letter in result.dead_letters)
    assert result.unowned == 2  # the message revoked inside, and the later one
    # The parked state resumes at its checkpoint: the message cut short is folded again.
    assert revoked_state.resume_offsets()[CLICKS] == 0
    assert pipe.parked[0] is revoked_state
