"""Budget pacing: how a campaign's spend runs against its daily and flight budgets. Pure.

``pacing`` is spend so far over the budget's share for the time elapsed: 1.0 is on plan, 1.5 is
spending half again as fast as the budget allows, 0.5 is under-delivering. Early in a day the
elapsed share is small and the ratio jumpy: rules on it wait for the first hours of the day.
"""

from __future__ import annotations

from typing import NamedTuple


class Pacing(NamedTuple):
    budget_used_ratio: float | None  # spend today / daily budget
    pacing_ratio: float | None  # spend today / (daily budget x elapsed share of the day)
    projected_spend: float | None  # spend today / elapsed share of the day
    flight_budget_used_ratio: float | None  # spend over the flight / total budget
    flight_pacing_ratio: float | None  # flight spend / (total budget x elapsed share of flight)


def pacing(
    spend_today: float,
    flight_spend: float | None,
    budgets: dict[str, float],
    day_share: float,
    flight_share: float | None,
) -> Pacing:
    daily, total = budgets.get("daily"), budgets.get("total")
    used = pace = projected = None
    if day_share > 0:
        projected = spend_today / day_share
    if daily:
        used = spend_today / daily
        if day_share > 0:
            pace = spend_today / (daily * day_share)
    flight_used = flight_pace = None
    if total and flight_spend is not None:
        flight_used = flight_spend / total
        if flight_share:
            flight_pace = flight_spend / (total * flight_share)
    return Pacing(used, pace, projected, flight_used, flight_pace)


def share_elapsed(now_ms: int, start_ms: int, end_ms: int) -> float:
    """The share of ``[start_ms, end_ms)`` elapsed at ``now_ms``, within [0, 1]."""
    if end_ms <= start_ms:
        return 1.0
    return min(1.0, max(0.0, (now_ms - start_ms) / (end_ms - start_ms)))
