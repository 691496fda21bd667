"""Measure how long the worker's event loop is blocked, with a ticker that should wake every 10 ms.

Anything that holds the loop (a large batch, a scrape) delays every other task: the consumer's
heartbeats, fetches and the web server. The ticker's lateness is that delay, observed into a
histogram, and the worst one since the last read is kept for the cheap ``/health`` probe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


class LoopLagMonitor:
    def __init__(self, observe: Callable[[float], None], interval: float = 0.01) -> None:
        self._observe = observe
        self.interval = interval
        self._worst = 0.0

    def take_worst(self) -> float:
        """The longest stall (seconds) since the last call."""
        worst, self._worst = self._worst, 0.0
        return worst

    async def run(self) -> None:
        while True:
            started = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - started - self.interval)
            self._observe(lag)
            if lag > self._worst:
                self._worst = lag
