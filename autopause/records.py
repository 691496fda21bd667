"""The auto-pause state of a campaign as a changelog record, and a decision as the JSON the
decisions topic and ``/decisions`` carry.

A campaign's record holds its tracks (one per rule), its latest ``seq`` and an **outbox**: the
decisions issued but not yet acknowledged by the decisions topic. The record is written (and
acknowledged) before the decisions are sent, and written again without them after; a worker
that crashes in between, or takes the partition over, sends the outbox again, ids unchanged, so a
pauser acts once. A decision not yet in an acknowledged outbox was never sent: after a crash the
worker judges afresh.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from rulebook.rules import Condition, Rule
from stream import codec

from .engine import Campaign, Decision, Track
from .evaluate import Evaluation

SCHEMA = 1


def campaign_of(value: object, now_ms: int) -> Campaign:
    """The live object for a state entry: restored plain JSON, or already live."""
    if isinstance(value, Campaign):
        return value
    if not isinstance(value, dict):
        return Campaign(now_ms)
    tracks = {
        # A seventh field (the end of a pause for the rest of the day) since issue 16.
        name: Track(phase, breach, clear, last, tuple(pauses), flag, *rest[:1])
        for name, (phase, breach, clear, last, pauses, flag, *rest) in value.get(
            "tracks", {}
        ).items()
    }
    return Campaign(value["first"], value["seq"], tracks, list(value.get("outbox", ())))


def encode(campaign: Campaign) -> bytes:
    return codec.dumps(
        {
            "v": SCHEMA,
            "first": campaign.first_seen_ms,
            "seq": campaign.seq,
            "tracks": {
                name: [
                    t.phase,
                    t.breach_since,
                    t.clear_since,
                    t.last_action_ms,
                    list(t.pauses),
                    t.flag,
                    *([t.until_ms] if t.until_ms is not None else []),
                ]
                for name, t in sorted(campaign.tracks.items())
            },
            "outbox": campaign.outbox,
        }
    )


def record(partition: int, name: str, campaign: Campaign | None) -> codec.Record:
    return (
        codec.key(partition, codec.AUTOPAUSE, name),
        None if campaign is None else encode(campaign),
    )


def decision_id(campaign: str, rule: str, seq: int, issued_at_ms: int) -> str:
    """Fixed when the decision is made and kept in the outbox, so every resend carries it. The
    issue time is part of it: should two decisions ever share a seq (the clock run back after a
    campaign's state was dropped), a pauser's ledger must still not take a new one for an old one."""
    text = f"{campaign}\0{rule}\0{seq}\0{issued_at_ms}"
    return hashlib.blake2b(text.encode(), digest_size=10).hexdigest()


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def decision_json(
    decision: Decision,
    rule: Rule,
    *,
    partition: int,
    mode: str,
    ttl_ms: int,
    context: dict[str, Any],
) -> dict:
    """The published form. ``context``: what the worker knew of the data (watermark, lag, trust)."""
    evidence = decision.evidence
    volume = None
    if rule.min_volume is not None:
        volume = {
            "event_type": rule.min_volume.event_type,
            "window": rule.min_volume.window,
            "count": evidence.volume,
            "required": rule.min_volume.count,
        }
    return {
        **_published(decision, partition=partition, mode=mode, ttl_ms=ttl_ms),
        "evidence": {
            "kpi": rule.kpi,
            "value": evidence.value,
            "op": rule.op,
            # A rule against the plan compares with its factor times the campaign's target.
            "threshold": rule.threshold if evidence.threshold is None else evidence.threshold,
            "target": rule.target,
            # ... or with its factor times the campaign's own normal (stream.baselines).
            "baseline": rule.first.baseline.label if rule.first.baseline else None,
            "factor": rule.threshold if rule.target or rule.first.baseline else None,
            "confident": rule.confident,
            "bound": evidence.bound,
            "wilson": None
            if evidence.bounds is None
            else {"lower": evidence.bounds[0], "upper": evidence.bounds[1]},
            "window": rule.window,
            "settle": rule.settle,
            "for": rule.for_,
            "volume": volume,
            "resume_threshold": rule.resume_threshold,
            # A compound rule: each condition as it stood (the fields above are the first's).
            "combine": rule.combine if rule.compound else None,
            "conditions": [
                _condition_evidence(condition, part)
                for condition, part in zip(rule.conditions, evidence.parts)
            ]
            if rule.compound
            else None,
            **context,
        },
    }


def orphan_decision_json(decision: Decision, *, partition: int, mode: str, ttl_ms: int) -> dict:
    """A decision about a rule the worker no longer judges by (it left the rules file): the
    promise of a pause for the rest of the day, kept at its midnight. No figure is evidence."""
    return {
        **_published(decision, partition=partition, mode=mode, ttl_ms=ttl_ms),
        "evidence": {
            "kpi": None,
            "reason": "the rule is no longer in the rules file (or no longer decides for this "
            "campaign): its pause for the rest of the day ends at midnight, as promised",
        },
    }


def _published(decision: Decision, *, partition: int, mode: str, ttl_ms: int) -> dict:
    """What every published decision carries besides its evidence."""
    return {
        "decision_id": decision_id(
            decision.campaign, decision.rule, decision.seq, decision.issued_at_ms
        ),
        "campaign_id": decision.campaign,
        "rule": decision.rule,
        "verdict": decision.verdict,
        "seq": decision.seq,
        "issued_at": iso(decision.issued_at_ms),
        "issued_at_ms": decision.issued_at_ms,
        "valid_until": iso(decision.issued_at_ms + ttl_ms),
        "valid_until_ms": decision.issued_at_ms + ttl_ms,
        # A pause for the rest of the day: its resume is issued at this (campaign) midnight.
        "resume_at": None if decision.until_ms is None else iso(decision.until_ms),
        "resume_at_ms": decision.until_ms,
        "mode": mode,
        "partition": partition,
    }


def _condition_evidence(condition: Condition, part: Evaluation) -> dict[str, Any]:
    volume = condition.min_volume
    return {
        "kpi": condition.kpi,
        "window": condition.window,
        "value": part.value,
        "op": condition.op,
        "threshold": condition.threshold if part.threshold is None else part.threshold,
        "target": condition.target,
        "baseline": condition.baseline.label if condition.baseline else None,
        "factor": condition.threshold if condition.target or condition.baseline else None,
        "confident": condition.confident,
        "bound": part.bound,
        "volume": None
        if volume is None
        else {
            "event_type": volume.event_type,
            "window": volume.window,
            "count": part.volume,
            "required": volume.count,
        },
        "holds": part.holds,
    }


def explain(evidence: object) -> str:
    """A decision's evidence in one line, as ``history`` and ``backtest`` print it: each
    condition's KPI and value against its threshold (and the target or baseline it is a factor
    of), joined as the rule combines them."""
    if not isinstance(evidence, dict) or not evidence.get("kpi"):
        return ""
    parts = evidence.get("conditions") or [evidence]
    said = []
    for part in parts:
        if not isinstance(part, dict):
            continue
        of = ""
        if part.get("target"):
            of = f" ({part.get('factor')} x target {part['target']})"
        elif part.get("baseline"):
            of = f" ({part.get('factor')} x {part['baseline']})"
        window = f" on {part['window']}" if part.get("window") else ""
        said.append(
            f"{part.get('kpi')}={part.get('value')!r} {part.get('op')} "
            f"{part.get('threshold')}{of}{window}"
        )
    return (" or " if evidence.get("combine") == "any" else " and ").join(said)
