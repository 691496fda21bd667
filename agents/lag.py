"""How far behind the worker is: messages between its state and each partition's end."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

from faust.types import TP


def consumer_lag(
    positions: Mapping[tuple[str, int], int],
    assignment: set[TP],
    highwater: Callable[[TP], int | None],
) -> dict[tuple[str, int], int]:
    """Messages between where the state is complete and each assigned partition's high watermark
    (from the fetch responses, which are right on the embedded broker too)."""
    out = {}
    for (topic, partition), position in positions.items():
        tp = TP(topic, partition)
        if tp in assignment:
            mark = highwater(tp)
            if mark is not None:
                out[(topic, partition)] = max(0, mark - position)
    return out


def caught_up(
    lag: Mapping[tuple[str, int], int], topics: Iterable[str], partitions: Iterable[int]
) -> bool:
    """Every (topic, partition) owned has a known lag, and it is 0."""
    owned = [(topic, partition) for topic in topics for partition in partitions]
    return bool(owned) and all(lag.get(key) == 0 for key in owned)
