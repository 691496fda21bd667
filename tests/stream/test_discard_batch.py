"""``changelog.discard_batch`` (the backtest's batch end) leaves the state exactly as
``finish_batch`` does, only without encoding records."""

from __future__ import annotations

from hypothesis import given, settings

from stream import changelog
from stream.events import decode_message
from stream.state import PartitionState
from tests.factories import NOW_MS
from tests.state_harness import CONFIG, PLAN_KIND, RULES, as_messages, canonical, run
from tests.stream.test_state import payload_lists

# A dedup cap this small evicts chunks in most examples: the batch end's eviction is compared too.
SMALL = CONFIG._replace(dedup_max_ids=6)


def run_discarding(messages, config, batch: int = 7) -> PartitionState:
    state = PartitionState(0, config)
    for start in range(0, len(messages), batch):
        for kind, offset, value, *timestamp in messages[start : start + batch]:
            if offset <= state.meta.checkpoint[kind]:
                continue
            if kind == PLAN_KIND:
                state.apply_plan(offset, *value)
                continue
            events, rejections = decode_message(value, kind, NOW_MS, RULES)
            state.apply_message(kind, offset, events, rejections, NOW_MS, *timestamp)
        changelog.discard_batch(state)
    return state


@settings(max_examples=60, deadline=None)
@given(payload_lists(max_age_ms=2 * 86_400_000))
def test_discarding_a_batch_leaves_the_state_finishing_it_leaves(payloads):
    messages = as_messages(payloads)
    for config in (CONFIG, SMALL):
        finished, _ = run(messages, config=config)
        assert canonical(run_discarding(messages, config)) == canonical(finished)
