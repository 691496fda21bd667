"""Build contract-v1 event dicts and messages for tests."""

from __future__ import annotations

import itertools

import orjson

from stream.events import EVENT_TYPES

NOW_MS = 1_790_000_040_000  # 2026-09-21T14:14:00Z, on a bucket boundary: the clock passed in
_ids = itertools.count()


def event(
    event_type: str,
    *,
    campaign: str = "c1",
    at_ms: int = NOW_MS,
    event_id: str | None = None,
    **fields: object,
) -> dict:
    body = {
        "event_id": f"{event_type}-{next(_ids)}" if event_id is None else event_id,
        "event_type": event_type,
        "occurred_at": at_ms,
        "campaign_id": campaign,
    }
    if event_type in ("lead", "sales_contact"):
        body["lead_id"] = fields.pop("lead_id", f"lead-{next(_ids)}")
    if event_type == "sale":
        body.setdefault("value", fields.pop("value", 10.0))
        body["currency"] = fields.pop("currency", "USD")
    body.update(fields)
    return body


def raw(*events: dict) -> bytes:
    return orjson.dumps(events[0] if len(events) == 1 else list(events))


def kind(event_type: str) -> int:
    return EVENT_TYPES.index(event_type)
