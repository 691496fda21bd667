"""Garbage collections timed (agents.gc_pauses): observed outside the collector's callback, the
worst kept for /health; a freeze after a restore collects what an earlier freeze held."""

from __future__ import annotations

import gc
import weakref

from agents.gc_pauses import GcPauseMonitor, freeze_long_lived


def test_collections_are_observed_after_the_fact_with_the_worst_kept():
    seen: list[tuple[int, float]] = []
    monitor = GcPauseMonitor(lambda generation, seconds: seen.append((generation, seconds)))
    monitor.install()
    try:
        gc.collect()
        assert seen == []  # the callback only records: a metric's lock may be held
        monitor.drain()
    finally:
        monitor.uninstall()
    assert seen and seen[-1][0] == 2 and seen[-1][1] >= 0
    seconds, generation, cpu, collected = monitor.take_worst()
    assert seconds > 0 and generation is not None and cpu >= 0 and collected >= 0
    assert monitor.take_worst()[0] == 0.0  # taken: reset
    assert monitor._callback not in gc.callbacks


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def test_a_cycle_frozen_alive_is_collected_by_the_next_freeze():
    a, b = Node(), Node()
    a.other, b.other = b, a
    alive = weakref.ref(a)
    try:
        freeze_long_lived()
        assert gc.get_freeze_count() > 0
        del a, b  # garbage now, but frozen: no collection sees it
        gc.collect()
        assert alive() is not None
        freeze_long_lived()  # unfreezes and collects first
        assert alive() is None
    finally:
        gc.unfreeze()
