"""What the reference pauser does with one decision. Pure: the decision, the clock, the ledger's
answers and the pauser's own limits in; an ``Action`` out.

Order of the checks (the first that applies wins):
1. already in the ledger with an outcome: skip (a replay, or a resend with the same id);
2. not a ``pause`` / ``resume`` (``unknown``, ``hold``, ``suppressed``): note it, act on nothing;
3. expired (``valid_until`` passed): drop;
4. out of order (a ``seq`` at or below one already handled for the campaign): drop;
5. not allowed (``--allow`` does not match the campaign): drop;
6. shadow (the pauser's mode, or the decision's): record what would be done, run nothing;
7. a ``resume`` of a pause this pauser did not make for that rule, or that another rule's pause
   of ours still holds: decline (recorded as skipped, the campaign left as it is);
8. kill switch present, or the pauser's own breaker (pauses in the last hour, share of the
   campaigns seen that are paused, once at least ``min_campaigns`` would be paused) open: hold,
   do not consume further. A hold ends when its cause goes or the decision expires (check 3);
9. otherwise: act.

``validate`` comes first, at the boundary: a decision that is not well formed never reaches
``judge``, the ledger or the command's environment.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

from stream.ids import unprintable

ACT, SKIP, DROP, NOTE, SHADOW, WAIT = "act", "skip", "drop", "note", "shadow", "wait"
DECLINE = "decline"  # a resume of a pause that is not this pauser's (recorded as skipped)
ACTIONS = {"pause": "pause", "resume": "resume"}
# Why a decision is held (a bounded set: the pauser's metric label).
KILL_SWITCH, RATE_LIMIT, SHARE_LIMIT, POPULATION_UNKNOWN = (
    "kill_switch",
    "rate_limit",
    "share_limit",
    "population_unknown",
)
MAX_ID_LENGTH = 256


@dataclass(frozen=True)
class Limits:
    mode: str = "shadow"  # shadow | live: a pauser acts only when told to
    allow: str | None = None  # regular expression on campaign_id (full match)
    max_pauses_per_hour: int = 20
    max_share: float = 0.2  # of the campaigns seen, at most this share paused by this pauser
    min_campaigns: int = 5  # the share is checked only from this many paused (as the worker's)


class Known(NamedTuple):
    """What the ledger says about a decision's context."""

    outcome: str | None  # this decision's recorded outcome, if any ("started" is not one)
    last_seq: int | None  # the highest seq handled for the campaign
    pauses_last_hour: int
    paused_campaigns: int  # campaigns this pauser paused and nobody resumed
    campaigns_seen: int
    # The rules whose pause of this campaign this pauser made and still holds (``Ledger.
    # pausing_rules``): a resume acts only for the last of them.
    pausing: frozenset[str] = frozenset()


class Action(NamedTuple):
    kind: str  # ACT | SKIP | DROP | NOTE | SHADOW | WAIT
    reason: str
    held_by: str | None = None  # for WAIT: KILL_SWITCH | RATE_LIMIT | SHARE_LIMIT | ...


def _id_problem(value: object) -> str | None:
    if not isinstance(value, str):
        return f"not a string ({type(value).__name__})"
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        return f"length {len(value)}, not 1-{MAX_ID_LENGTH}"
    return unprintable(value)


def _is_int(value: object) -> bool:
    """An integer SQLite can store (JSON's true and false are not integers here)."""
    return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63


_IDS = ("decision_id", "campaign_id", "rule")
_INTS = ("seq", "valid_until_ms")
_OPTIONAL_INTS = ("issued_at_ms", "partition", "campaigns_judged")
_OPTIONAL_STRINGS = ("mode", "issued_at")


def validate(value: object) -> dict | str:
    """The decision, if it is one the pauser can judge, record and hand to a command; otherwise
    why not. Pure: the parsed JSON in."""
    if not isinstance(value, dict):
        return f"not a JSON object ({type(value).__name__})"
    for name in _IDS:
        problem = _id_problem(value.get(name))
        if problem is not None:
            return f"{name} {problem}"
    if not isinstance(value.get("verdict"), str):
        return "verdict is not a string"
    for name in _INTS:
        if not _is_int(value.get(name)):
            return f"{name} is not an integer"
    for name in _OPTIONAL_INTS:
        if name in value and not (_is_int(value[name]) and value[name] >= 0):
            return f"{name} is not a non-negative integer"
    for name in _OPTIONAL_STRINGS:
        if name in value and not isinstance(value[name], str):
            return f"{name} is not a string"
    return value


def judge(
    decision: dict, now_ms: int, known: Known, limits: Limits, kill_switch: bool = False
) -> Action:
    if known.outcome is not None:
        return Action(SKIP, f"already handled: {known.outcome}")
    verdict = decision.get("verdict")
    if verdict == "notify":  # a rule with action: notify: reported, never acted on
        return Action(NOTE, f"notify: {decision['rule']} holds for {decision['campaign_id']}")
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
    if verdict == "resume":
        declined = _not_ours(decision, known)
        if declined is not None:
            return declined
    if kill_switch:
        return Action(WAIT, "kill switch present", KILL_SWITCH)
    if verdict == "pause":
        return _pause_breaker(known, limits) or Action(ACT, verdict)
    return Action(ACT, verdict)


def _not_ours(decision: dict, known: Known) -> Action | None:
    """A resume acts only on a campaign this pauser paused for the decision's rule, when no
    other rule's pause of ours still holds it. A human may have paused it for another reason;
    a pause dropped (expired under the kill switch or a hold) was never made."""
    rule = decision["rule"]
    if rule not in known.pausing:
        return Action(
            DECLINE,
            f"not paused by this pauser for rule {rule} (its pause was not made, or was "
            "undone or resumed since): left as it is",
        )
    others = sorted(known.pausing - {rule})
    if others:
        return Action(
            DECLINE,
            f"still paused by this pauser for rule {', '.join(others)}: resumed with the last",
        )
    return None


def _pause_breaker(known: Known, limits: Limits) -> Action | None:
    if known.pauses_last_hour >= limits.max_pauses_per_hour:
        return Action(
            WAIT,
            f"{known.pauses_last_hour} pauses in the last hour "
            f"(--max-pauses-per-hour {limits.max_pauses_per_hour})",
            RATE_LIMIT,
        )
    would_be = known.paused_campaigns + 1
    # As the worker's breaker: a share of a small population says nothing (1 of 3 is 33%).
    if would_be < limits.min_campaigns:
        return None
    seen = known.campaigns_seen
    if seen == 0:
        return Action(
            WAIT,
            "no decision has said how many campaigns there are yet "
            "(campaigns_judged): --max-share cannot be checked",
            POPULATION_UNKNOWN,
        )
    if would_be / seen > limits.max_share:
        return Action(
            WAIT,
            f"{would_be} of {seen} campaigns would be paused "
            f"(--max-share {limits.max_share:g}, --min-campaigns {limits.min_campaigns})",
            SHARE_LIMIT,
        )
    return None


def retry_refused(decision: dict, now_ms: int, kill_switch: bool) -> str | None:
    """Why a failed command may not be run again for ``decision`` (None: it may). Retries back
    off for minutes; meanwhile the decision may expire or an operator stop the pauser, and a
    retry then would act late or against the kill switch."""
    if kill_switch:
        return "kill switch present: no more attempts"
    if now_ms > decision["valid_until_ms"]:
        return f"expired {(now_ms - decision['valid_until_ms']) // 1000}s ago: no more attempts"
    return None
