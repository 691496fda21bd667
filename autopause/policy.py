"""What the reference pauser does with one decision. Pure: the decision, the clock, the ledger's
answers and the pauser's own limits in; an ``Action`` out.

Order of the checks (the first that applies wins):
1. already in the ledger with an outcome: skip (a replay, or a resend with the same id);
2. not a ``pause`` / ``resume`` (``unknown``, ``hold``, ``suppressed``): note it, act on nothing;
3. expired (``valid_until`` passed): drop;
4. out of order (a ``seq`` at or below one already handled for the campaign): drop;
5. not allowed (``--allow`` does not match the campaign): drop;
6. shadow (the pauser's mode, or the decision's): record what would be done, run nothing;
7. kill switch present, or the pauser's own breaker (pauses in the last hour, share of the
   campaigns seen that are paused) open: wait, do not consume further;
8. otherwise: act.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

ACT, SKIP, DROP, NOTE, SHADOW, WAIT = "act", "skip", "drop", "note", "shadow", "wait"
ACTIONS = {"pause": "pause", "resume": "resume"}


@dataclass(frozen=True)
class Limits:
    mode: str = "shadow"  # shadow | live: a pauser acts only when told to
    allow: str | None = None  # regular expression on campaign_id (full match)
    max_pauses_per_hour: int = 20
    max_share: float = 0.2  # of the campaigns seen, at most this share paused by this pauser


class Known(NamedTuple):
    """What the ledger says about a decision's context."""

    outcome: str | None  # this decision's recorded outcome, if any ("started" is not one)
    last_seq: int | None  # the highest seq handled for the campaign
    pauses_last_hour: int
    paused_campaigns: int  # campaigns this pauser paused and nobody resumed
    campaigns_seen: int


class Action(NamedTuple):
    kind: str  # ACT | SKIP | DROP | NOTE | SHADOW | WAIT
    reason: str


def judge(
    decision: dict, now_ms: int, known: Known, limits: Limits, kill_switch: bool = False
) -> Action:
    if known.outcome is not None:
        return Action(SKIP, f"already handled: {known.outcome}")
    verdict = decision.get("verdict")
    if verdict not in ACTIONS:
        return Action(NOTE, f"verdict {verdict}: nothing to do")
    if now_ms > decision["valid_until_ms"]:
        return Action(DROP, f"expired {(now_ms - decision['valid_until_ms']) // 1000}s ago")
    if known.last_seq is not None and decision["seq"] <= known.last_seq:
        return Action(DROP, f"out of order: seq {decision['seq']} after {known.last_seq}")
    if limits.allow is not None and re.fullmatch(limits.allow, decision["campaign_id"]) is None:
        return Action(DROP, "campaign not allowed (--allow)")
    if limits.mode == "shadow" or decision.get("mode") == "shadow":
        return Action(SHADOW, f"shadow: would {verdict} {decision['campaign_id']}")
    if kill_switch:
        return Action(WAIT, "kill switch present")
    if verdict == "pause":
        if known.pauses_last_hour >= limits.max_pauses_per_hour:
            return Action(
                WAIT,
                f"{known.pauses_last_hour} pauses in the last hour "
                f"(--max-pauses-per-hour {limits.max_pauses_per_hour})",
            )
        seen = known.campaigns_seen
        if seen == 0:
            return Action(
                WAIT,
                "no decision has said how many campaigns there are yet "
                "(campaigns_judged): --max-share cannot be checked",
            )
        if (known.paused_campaigns + 1) / seen > limits.max_share:
            return Action(
                WAIT,
                f"{known.paused_campaigns + 1} of {seen} campaigns would be paused "
                f"(--max-share {limits.max_share:g})",
            )
    return Action(ACT, verdict)
