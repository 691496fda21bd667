"""Time CPython's cyclic garbage collections, so that an event-loop stall can be laid at the
collector's door (or not): every collection runs on the loop's thread and holds it.

``gc.callbacks`` calls us at the start and the end of each collection; the pause is observed by
generation (a bounded label: 0, 1, 2) and the worst one since the last read is kept for the cheap
``/health`` probe, beside the loop's worst stall.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import deque
from collections.abc import Callable


class GcPauseMonitor:
    def __init__(self, observe: Callable[[int, float], None]) -> None:
        self._observe = observe  # (generation, seconds)
        self._started = 0.0
        self._started_cpu = 0.0
        self._worst = 0.0
        self._worst_generation: int | None = None
        self._worst_cpu = 0.0
        self._worst_collected = 0
        self._pending: deque[tuple[int, float]] = deque(maxlen=10_000)

    def drain(self) -> None:
        """Observe the collections timed since the last call (call it from ordinary code)."""
        while self._pending:
            self._observe(*self._pending.popleft())

    def install(self) -> GcPauseMonitor:
        if self._callback not in gc.callbacks:
            gc.callbacks.append(self._callback)
        return self

    def uninstall(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)

    def take_worst(self) -> tuple[float, int | None, float, int]:
        """The longest collection (seconds) since the last call, its generation, the CPU time
        it took (less than the wall time when the process was not running: a busy host), and
        the unreachable objects it freed (many: garbage a reference cycle held, freed at once)."""
        worst = self._worst, self._worst_generation, self._worst_cpu, self._worst_collected
        self._worst, self._worst_generation, self._worst_cpu = 0.0, None, 0.0
        self._worst_collected = 0
        return worst

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
            self._started_cpu = time.thread_time()
            return
        seconds = time.perf_counter() - self._started
        generation = info.get("generation", 2)
        # Observed later (``drain``): a metric's lock may be held by the code the collection
        # interrupted, on this same thread.
        self._pending.append((generation, seconds))
        if seconds > self._worst:
            self._worst, self._worst_generation = seconds, generation
            self._worst_cpu = time.thread_time() - self._started_cpu
            self._worst_collected = info.get("collected", 0)


YOUNG_COLLECTION_SECONDS = 0.1


async def collect_young_every(seconds: float) -> None:
    """Forever: a young collection (generations 0 and 1) every ``seconds``.

    CPython starts a young collection when allocations *net of frees* pass a threshold. The worker
    replaces objects as fast as it makes them (rows rebuilt, records re-encoded), so that count
    stays low while the young generation grows to hundreds of thousands of live objects, which
    one collection then walks at once (measured: 226,730 objects, ~230 ms of CPU). Collected on a
    clock instead, each walk holds what a tenth of a second made (at a quarter, 25-36 ms walks)."""
    while True:
        await asyncio.sleep(seconds)
        gc.collect(1)


def freeze_long_lived() -> int:
    """Move every object alive now out of the collector's sight (``gc.freeze``): after a restore
    they are the state, which lives as long as the process and holds no garbage cycles, and a
    full collection would otherwise walk all of them again and again. Returns how many.

    What an earlier freeze held is collected first (``unfreeze``): an object frozen alive that
    later became part of a garbage cycle (a task, a future of that rebalance) is freed now, so
    rebalances do not add up to a leak."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
