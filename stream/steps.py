"""Work written as generators that yield between slices (so that an event loop can run in
between), and the one way to run such work in one go."""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")


def run_to_end(steps: Generator[None, None, T]) -> T:
    """Run ``steps`` without pausing; its return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
