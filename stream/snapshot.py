"""A read-only view of the KPI state of several partitions at one instant, with labels folded.

Built at scrape time (Prometheus) or request time (JSON); the state itself is not touched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from . import sketch as qsketch
from .kpis import Kpis, compute_kpis
from .labels import LabelBudget
from .state import KINDS, PartitionState
from .windows import WindowSums, trailing_window_sums


@dataclass
class Snapshot:
    now_ms: int
    events_total: dict[tuple[str, str, int], int] = field(default_factory=dict)
    windows: dict[tuple[str, int], WindowSums] = field(default_factory=dict)
    histograms: dict[str, tuple[list[int], int]] = field(default_factory=dict)
    awaiting_contact: dict[str, int] = field(default_factory=dict)
    oldest_awaiting_ms: dict[str, int] = field(default_factory=dict)
    unmatched_contacts: dict[str, int] = field(default_factory=dict)
    rejected: dict[str, int] = field(default_factory=dict)
    late: list[int] = field(default_factory=lambda: [0] * KINDS)
    duplicate: list[int] = field(default_factory=lambda: [0] * KINDS)
    folded_campaigns: int = 0

    def kpis(self, campaign: str, window_ms: int) -> Kpis:
        sums = self.windows[(campaign, window_ms)]
        return compute_kpis(sums.counts, sums.revenue_micros, sums.spend_micros)

    def oldest_awaiting_age_seconds(self, campaign: str) -> float:
        """Age of the campaign's oldest lead still awaiting a first contact (0 if in the future)."""
        return max(0, self.now_ms - self.oldest_awaiting_ms[campaign]) / 1000

    def response_quantile_seconds(self, campaign: str, window_ms: int, q: float) -> float | None:
        value = qsketch.quantile(self.windows[(campaign, window_ms)].response_sketch, q)
        return None if value is None else value / 1000


def _add_into(target: WindowSums | None, extra: WindowSums) -> WindowSums:
    if target is None:
        return WindowSums(list(extra.counts), extra.revenue_micros, extra.spend_micros,
                          dict(extra.response_sketch))
    for kind in range(KINDS):
        target.counts[kind] += extra.counts[kind]
    merged = qsketch.merge([target.response_sketch, extra.response_sketch])
    return WindowSums(target.counts, target.revenue_micros + extra.revenue_micros,
                      target.spend_micros + extra.spend_micros, merged)


def build_snapshot(
    states: Iterable[PartitionState],
    now_ms: int,
    bucket_ms: int,
    windows_ms: Iterable[int],
    campaigns: LabelBudget,
    channels: LabelBudget,
) -> Snapshot:
    snap = Snapshot(now_ms)
    windows_ms = tuple(windows_ms)
    states = sorted(states, key=lambda s: s.partition)
    for state in states:
        meta = state.meta
        for reason, count in meta.rejected.items():
            snap.rejected[reason] = snap.rejected.get(reason, 0) + count
        for kind in range(KINDS):
            snap.late[kind] += meta.late[kind]
            snap.duplicate[kind] += meta.duplicate[kind]

    all_campaigns = sorted({c for s in states for c in s.totals})  # every campaign has totals
    for campaign in all_campaigns:
        label = campaigns.label(campaign)
        for state in states:
            totals = state.totals.get(campaign)
            if totals is not None:
                for channel, counts in totals.by_channel.items():
                    channel_label = channels.label(channel)
                    for kind, count in enumerate(counts):
                        key = (label, channel_label, kind)
                        snap.events_total[key] = snap.events_total.get(key, 0) + count
            histogram = state.response_histogram(campaign)
            if histogram is not None and sum(histogram[0]):  # no all-zero series per campaign
                bins, total_ms = snap.histograms.get(label, ([0] * len(histogram[0]), 0))
                snap.histograms[label] = ([a + b for a, b in zip(bins, histogram[0])],
                                          total_ms + histogram[1])
            view = state.responses.get(campaign)
            per_window = trailing_window_sums(state.buckets.get(campaign, {}),
                                              view.sketches if view else {}, now_ms, bucket_ms,
                                              windows_ms)
            for window, sums in per_window.items():
                snap.windows[(label, window)] = _add_into(snap.windows.get((label, window)), sums)
            waiting = state.awaiting_contact.get(campaign)
            if waiting:
                snap.awaiting_contact[label] = snap.awaiting_contact.get(label, 0) + len(waiting)
                oldest = min(waiting.values())
                snap.oldest_awaiting_ms[label] = min(snap.oldest_awaiting_ms.get(label, oldest), oldest)
            unmatched = state.unmatched_contacts.get(campaign)
            if unmatched:
                snap.unmatched_contacts[label] = snap.unmatched_contacts.get(label, 0) + unmatched
    snap.folded_campaigns = len(campaigns.folded)
    return snap
