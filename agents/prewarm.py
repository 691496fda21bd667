"""A restart's state, built from the local store's file while the worker waits for the group.

A restarted worker waits seconds for its assignment (the embedded broker's JoinGroup and
SyncGroup each wait half the session timeout). Meanwhile a thread reads the partitions it owned
last (the file says which) and builds their states. At the hand-over a built state is taken only
if the file has not moved for that partition since it was read: no record came from the
changelog's tail in between, so it is the state a rebuild would make then; any other partition is
rebuilt as usual.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from stream.state import PartitionState

from .local_store import LocalRecords

log = logging.getLogger(__name__)

Build = Callable[[Iterable[int], list[tuple[bytes, bytes]]], dict[int, PartitionState]]


class Prewarm:
    def __init__(self, path: str | Path, topic: str, build: Build) -> None:
        self.path, self.topic, self.build = Path(path), topic, build
        # partition -> (the file's offset it was built at, the state)
        self.states: dict[int, tuple[int, PartitionState]] = {}
        self.seconds: float | None = None  # how long reading and building took
        self.started = False
        self._done = threading.Event()

    def start(self) -> Prewarm:
        """Build on a thread of its own (a daemon: a worker stopping meanwhile does not wait)."""
        self.started = True
        if not self.path.exists():
            self._done.set()
            return self
        threading.Thread(target=self._run, name="prewarm", daemon=True).start()
        return self

    def _run(self) -> None:
        began = time.perf_counter()
        try:
            local = LocalRecords(self.path)
            try:
                marks, records = local.owned_snapshot(self.topic)
            finally:
                local.close()
            built = self.build(marks, records)
            self.states = {p: (marks[p], state) for p, state in built.items()}
            log.info("prewarm: built partitions %s from %s", sorted(built), self.path)
        except Exception:  # only a head start: the hand-over rebuilds as if it never ran
            log.exception("prewarm: could not build from %s", self.path)
            self.states = {}
        finally:
            self.seconds = round(time.perf_counter() - began, 3)
            self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def take(self, offsets: Mapping[int, int]) -> dict[int, PartitionState]:
        """The built states whose partition the file still holds at the offset they were built
        at (``offsets``: the file's now, for the partitions being handed over). Once: what is
        not taken is dropped."""
        states, self.states = self.states, {}
        return {p: state for p, (at, state) in states.items() if offsets.get(p) == at}
