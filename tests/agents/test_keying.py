"""A campaign whose events arrive in more than one partition is detected and exported."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from agents.metrics import WorkerCollector
from agents.pipeline import Message, Pipeline
from stream.settings import Settings
from tests.factories import NOW_MS, event


def test_a_campaign_in_two_partitions_is_counted_once():
    settings = Settings(max_campaigns_per_partition=2)
    pipe = Pipeline(settings, lambda: NOW_MS)
    pipe.assign([0, 1, 2], [])
    clicks = settings.topics.clicks

    def message(partition: int, offset: int, campaign: str) -> Message:
        return Message(clicks, partition, offset, orjson.dumps(event("click", campaign=campaign)))

    pipe.process([message(0, 0, "keyed"), message(0, 1, "split"), message(2, 0, "alone")])
    assert pipe.campaigns_in_several_partitions() == 0
    # over its budget, partition 0 folds "extra" into __other__, as partition 1 does: not a split
    pipe.process(
        [message(1, 0, "split"), message(0, 2, "extra"), message(1, 1, "x"), message(1, 2, "y")]
    )
    assert pipe.campaigns_in_several_partitions() == 1

    registry = CollectorRegistry()
    registry.register(
        WorkerCollector(lambda: len(pipe.states), None, pipe.campaigns_in_several_partitions)
    )
    assert registry.get_sample_value("kpi_campaigns_in_several_partitions") == 1
