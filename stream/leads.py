"""The lead / first-sales-contact join, and the response-time views derived from it.

A lead record is a self-contained min-fold of its own events: the lead's time and the earliest
contact's time, each with the position of the last event folded (for idempotence). It is held
packed in one int, since a worker can hold hundreds of thousands of them.

Every response-time figure (window quantiles, the histogram, leads awaiting contact, unmatched
contacts) is derived in memory from the lead records by ``ResponseIndex``, never persisted: which
event completes a pair depends on how the lead and contact topics interleave, which differs
between a run and its replay, while the records do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

from . import sketch as qsketch
from .windows import bucket_start

HISTOGRAM_BOUNDS_SECONDS = (60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400)
HISTOGRAM_BINS = len(HISTOGRAM_BOUNDS_SECONDS) + 1
_HIST_BOUNDS_MS = tuple(b * 1000 for b in HISTOGRAM_BOUNDS_SECONDS)
_FIELD = 64
_MASK = (1 << _FIELD) - 1


def histogram_bin(response_ms: int) -> int:
    for index, bound in enumerate(_HIST_BOUNDS_MS):
        if response_ms <= bound:
            return index
    return len(_HIST_BOUNDS_MS)


class LeadJoin(NamedTuple):
    lead_ms: int | None = None
    contact_ms: int | None = None  # earliest sales contact
    lead_hw: int = -1
    contact_hw: int = -1

    def response_ms(self) -> int | None:
        if self.lead_ms is None or self.contact_ms is None:
            return None
        return max(
            0, self.contact_ms - self.lead_ms
        )  # a contact logged before its lead counts as 0

    def newest_ms(self) -> int:
        return max(t for t in (self.lead_ms, self.contact_ms, 0) if t is not None)

    def pack(self) -> int:
        """Four 64-bit fields, each stored +1 so that None / -1 are 0. Raises ``ValueError`` for
        a value a field cannot hold (validation keeps times from 2000 on): a negative time would
        borrow from the next field and corrupt the record for good."""
        for value in (self.lead_ms, self.contact_ms):
            if value is not None and not 0 <= value < _MASK:
                raise ValueError(f"lead record time {value} outside [0, 2^64 - 1)")
        for value in (self.lead_hw, self.contact_hw):
            if not -1 <= value < _MASK:
                raise ValueError(f"lead record position {value} outside [-1, 2^64 - 1)")
        lead = 0 if self.lead_ms is None else self.lead_ms + 1
        contact = 0 if self.contact_ms is None else self.contact_ms + 1
        return (
            lead
            | (contact << _FIELD)
            | ((self.lead_hw + 1) << 2 * _FIELD)
            | ((self.contact_hw + 1) << 3 * _FIELD)
        )

    @staticmethod
    def unpack(packed: int) -> LeadJoin:
        lead = packed & _MASK
        contact = (packed >> _FIELD) & _MASK
        return LeadJoin(
            lead - 1 if lead else None,
            contact - 1 if contact else None,
            ((packed >> 2 * _FIELD) & _MASK) - 1,
            (packed >> 3 * _FIELD) - 1,
        )


@dataclass(slots=True)
class ResponseView:
    """One campaign's response times from its live lead records."""

    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    sum_ms: int = 0
    sketches: qsketch.BucketSketches = field(
        default_factory=qsketch.BucketSketches
    )  # by contact bucket
    version: int = 0  # bumped on every change: readers cache what they derive from it


class ResponseIndex:
    """Derived views over one partition's lead records; add or remove one record at a time."""

    def __init__(self, bucket_ms: int) -> None:
        self.bucket_ms = bucket_ms
        self.responses: dict[str, ResponseView] = {}
        self.awaiting_contact: dict[str, dict[str, int]] = {}  # campaign -> lead_id -> lead_ms
        self.unmatched_contacts: dict[str, int] = {}  # campaign -> contacts with no lead yet
        # One int object per bucket start, shared by every campaign's sketches (~16 MB at
        # 10,000 campaigns with an hour of responses, if each held its own).
        self._starts: dict[int, int] = {}

    def update(self, campaign: str, lead_id: str, record: LeadJoin, sign: int = 1) -> None:
        """Add (sign=1) or remove (-1) one lead record's part of the views."""
        response = record.response_ms()
        if response is not None and record.contact_ms is not None:
            view = self.responses.get(campaign)
            if view is None:
                view = self.responses[campaign] = ResponseView()
            view.version += 1
            view.histogram[histogram_bin(response)] += sign
            view.sum_ms += sign * response
            start = bucket_start(record.contact_ms, self.bucket_ms)
            view.sketches.add(self._starts.setdefault(start, start), response, sign)
        elif record.lead_ms is not None:
            if sign > 0:
                self.awaiting_contact.setdefault(campaign, {})[lead_id] = record.lead_ms
            else:
                waiting = self.awaiting_contact[campaign]
                del waiting[lead_id]
                if not waiting:
                    del self.awaiting_contact[campaign]
        elif record.contact_ms is not None:
            left = self.unmatched_contacts.get(campaign, 0) + sign
            if left:
                self.unmatched_contacts[campaign] = left
            else:
                del self.unmatched_contacts[campaign]

    def drop_sketches_before(self, cutoff_start: int) -> None:
        self._starts = {start: start for start in self._starts.values() if start >= cutoff_start}
        for view in self.responses.values():
            if view.sketches.drop_before(cutoff_start):
                view.version += 1
