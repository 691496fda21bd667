"""Measure how long the worker's event loop is blocked, with a ticker that should wake every 10 ms.

Anything that holds the loop (a large batch, a scrape) delays every other task: the consumer's
heartbeats, fetches and the web server. The ticker's lateness is that delay, observed into a
histogram, and the worst one since the last read is kept for the cheap ``/health`` probe.

What held it: a watchdog thread looks every ``interval`` at when the ticker last ran; while that is
``trace_after`` late, it samples the loop thread's stack (``sys._current_frames``) at each look, so
the worst stall comes with the code that was running in it (one sample per ``interval``: a stall
made of several pieces of work names each).
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import traceback
from collections.abc import Callable

STACK_FRAMES = 12  # innermost frames kept of a stalled loop's stack
MAX_SAMPLES = 20  # stacks kept of one stall


class LoopLagMonitor:
    def __init__(
        self, observe: Callable[[float], None], interval: float = 0.01, trace_after: float = 0.03
    ) -> None:
        self._observe = observe
        self.interval = interval
        self.trace_after = trace_after
        self._worst = 0.0
        self._worst_cpu = 0.0
        self._worst_stack: list[str] = []
        self._beat = time.perf_counter()
        self._samples: list[list[str]] = []  # of the stall in progress, taken by the watchdog
        self._worst_samples: list[list[str]] = []
        self._loop_thread: int | None = None

    def take_worst(self) -> float:
        """The longest stall (seconds) since the last call."""
        worst, self._worst = self._worst, 0.0
        return worst

    def take_worst_stack(self) -> list[str]:
        """Where the loop's thread was during that stall (innermost last), if it lasted past
        ``trace_after``: the first sample."""
        worst, self._worst_stack = self._worst_stack, []
        return worst

    def take_worst_samples(self) -> list[list[str]]:
        """Every stack sampled during that stall, in time order."""
        worst, self._worst_samples = self._worst_samples, []
        return worst

    def _watch(self) -> None:
        while True:
            time.sleep(self.interval)
            thread = self._loop_thread
            samples = self._samples
            if thread is None or len(samples) >= MAX_SAMPLES:
                continue
            if time.perf_counter() - self._beat > self.interval + self.trace_after:
                frame = sys._current_frames().get(thread)
                if frame is not None:
                    samples.append(
                        [
                            f"{f.filename}:{f.lineno} {f.name}"
                            for f in traceback.extract_stack(frame)[-STACK_FRAMES:]
                        ]
                    )

    def take_worst_cpu(self) -> float:
        """CPU time the loop's thread used during that stall: near the stall, the loop was busy
        (work on it held it); far below, the process was not running (a busy host)."""
        worst, self._worst_cpu = self._worst_cpu, 0.0
        return worst

    async def run(self) -> None:
        self._loop_thread = threading.get_ident()
        threading.Thread(target=self._watch, name="loop-lag-watchdog", daemon=True).start()
        while True:
            started = self._beat = time.perf_counter()
            started_cpu = time.thread_time()
            await asyncio.sleep(self.interval)
            lag = max(0.0, time.perf_counter() - started - self.interval)
            self._observe(lag)
            samples, self._samples = self._samples, []
            if lag > self._worst:
                self._worst = lag
                self._worst_cpu = time.thread_time() - started_cpu
                self._worst_stack = samples[0] if samples else []
                self._worst_samples = samples
