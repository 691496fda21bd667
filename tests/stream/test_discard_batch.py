"""``changelog.discard_batch`` (the backtest's batch end) leaves the state exactly as
``finish_batch`` does, only without encoding records."""

from __future__ import annotations

from hypothesis import given, settings

from stream import changelog
from tests.state_harness import CONFIG, as_messages, canonical, run
from tests.stream.test_state import payload_lists

# A dedup cap this small evicts chunks in most examples: the batch end's eviction is compared too.
SMALL = CONFIG._replace(dedup_max_ids=6)


@settings(max_examples=60, deadline=None)
@given(payload_lists(max_age_ms=2 * 86_400_000))
def test_discarding_a_batch_leaves_the_state_finishing_it_leaves(payloads):
    messages = as_messages(payloads)
    for config in (CONFIG, SMALL):
        finished, _ = run(messages, config=config)
        discarded, log = run(messages, config=config, finish=changelog.discard_batch)
        assert log == []
        assert canonical(discarded) == canonical(finished)
