"""The cluster's decisions as read back from the decisions topic: the current verdict per
campaign and rule, and a changes feed with a cursor that any worker understands.

A cursor is the next offset to read per partition of the decisions topic (``"0:12,1:7"``), so it
stays valid across workers and restarts. Each worker keeps the newest ``keep`` decisions per
partition; a cursor older than that gets ``reset``: the client reloads the current verdicts.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


class Changes(NamedTuple):
    decisions: list[dict]
    cursor: str
    reset: bool  # the cursor was older than what is kept: reload ``current``


def parse_cursor(text: str) -> dict[int, int]:
    """``"0:12,1:7"`` -> {0: 12, 1: 7}; raises ValueError on anything else."""
    cursor = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        partition, _, offset = part.partition(":")
        if not partition.isdigit() or not offset.isdigit():
            raise ValueError(f"cursor part {part!r} is not partition:offset")
        cursor[int(partition)] = int(offset)
    return cursor


def format_cursor(cursor: dict[int, int]) -> str:
    return ",".join(f"{p}:{o}" for p, o in sorted(cursor.items()))


class DecisionView:
    def __init__(self, keep: int = 10_000) -> None:
        self.keep = keep
        self.current: dict[str, dict[str, dict]] = {}  # campaign -> rule -> latest decision
        self._log: dict[int, deque[tuple[int, dict]]] = {}  # partition -> (offset, decision)
        self._next: dict[int, int] = {}  # partition -> next offset to read

    def add(self, partition: int, offset: int, decision: dict) -> None:
        self._next[partition] = max(self._next.get(partition, 0), offset + 1)
        log = self._log.setdefault(partition, deque(maxlen=self.keep))
        log.append((offset, decision))
        by_rule = self.current.setdefault(decision["campaign_id"], {})
        held = by_rule.get(decision["rule"])
        # A campaign's seq only grows, across retirement and takeover (``engine.next_seq``): the
        # highest is the newest, and a resend of an older decision changes nothing.
        if held is None or held["seq"] < decision["seq"]:
            by_rule[decision["rule"]] = decision

    @property
    def cursor(self) -> str:
        return format_cursor(self._next)

    def changes(self, cursor: dict[int, int]) -> Changes:
        """Decisions read after ``cursor``, in offset order per partition."""
        out: list[dict] = []
        reset = False
        for partition, log in sorted(self._log.items()):
            start = cursor.get(partition, 0)
            if log and start < log[0][0] and start < self._first_kept(partition):
                reset = True
            out.extend(d for offset, d in log if offset >= start)
        return Changes(out, self.cursor, reset)

    def _first_kept(self, partition: int) -> int:
        log = self._log[partition]
        # A log that starts at offset 0 and never overflowed holds every decision of the
        # partition; otherwise decisions before its first offset are gone from here.
        return log[0][0] if len(log) == log.maxlen or log[0][0] > 0 else 0
