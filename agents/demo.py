"""Realistic synthetic traffic with scripted incidents, for ``kpi-monitor run --demo``.

About 20 campaigns over several channels, each channel with its own normal CTR (search several
percent, display a few tenths of a percent), and plans: per-channel defaults (targets from the
channel's campaigns) and a daily budget for ``camp-11``. After ``incident_after`` seconds:
- ``camp-03``'s CTR collapses (clicks nearly stop while impressions go on);
- ``camp-07``'s leads stop being contacted by sales;
- ``camp-11`` overspends: five times its traffic, against a budget of about ten minutes of its
  normal spend (its plan's time zone puts it at midday, past the pacing rule's first hours).
A small share of events is malformed, duplicated or late, as in real feeds.
The scenario is pure (clock and random generator passed in); ``run_traffic`` only publishes it.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaProducer

from stream.plans import Plan
from stream.settings import Settings

from .kafka_auth import aiokafka_kwargs
from .plans_cli import publish as publish_plans
from .topics import bootstrap_servers, ensure_topics

CHANNELS = ("search", "social", "video", "email", "display")  # display: camp-04, -09, -14, -19
CTR_COLLAPSE_CAMPAIGN = "camp-03"
UNCONTACTED_CAMPAIGN = "camp-07"
OVERSPEND_CAMPAIGN = "camp-11"
OVERSPEND_FACTOR = 5
# Normal CTR by channel (others: 2-6%): a display campaign at 0.3% is healthy, a search one is not.
CHANNEL_CTR = {"search": (0.04, 0.07), "display": (0.002, 0.005)}


@dataclass
class Campaign:
    name: str
    channel: str
    impressions_per_second: float
    ctr: float
    cpm: float  # cost per 1000 impressions
    lead_rate: float  # leads per click
    close_rate: float  # sales per lead
    order_value: float


@dataclass
class Scenario:
    campaigns: list[Campaign]
    started_ms: int
    incident_after_ms: int = 120_000
    bad_share: float = 0.002
    duplicate_share: float = 0.005
    late_share: float = 0.01
    pending_contacts: list[tuple[int, dict]] = field(default_factory=list)
    _seq: int = 0

    @classmethod
    def default(
        cls,
        now_ms: int,
        rng: random.Random,
        *,
        campaigns: int = 20,
        scale: float = 1.0,
        incident_after_s: float = 120,
    ) -> Scenario:
        made = []
        for i in range(campaigns):
            made.append(
                Campaign(
                    name=f"camp-{i:02d}",
                    channel=CHANNELS[i % len(CHANNELS)],
                    impressions_per_second=scale * rng.uniform(5, 25),
                    ctr=rng.uniform(*CHANNEL_CTR.get(CHANNELS[i % len(CHANNELS)], (0.02, 0.06))),
                    cpm=rng.uniform(2, 12),
                    lead_rate=rng.uniform(0.1, 0.3),
                    close_rate=rng.uniform(0.2, 0.4),
                    order_value=rng.uniform(40, 200),
                )
            )
        return cls(made, now_ms, int(incident_after_s * 1000))

    def plans(self, now_ms: int) -> list[Plan]:
        """Channel defaults (each target the mean of its channel's campaigns) and the overspending
        campaign's daily budget, in a zone where it is about midday at ``now_ms``."""
        out = []
        for channel in CHANNELS:
            members = [c for c in self.campaigns if c.channel == channel]
            if not members:
                continue
            cost_per_click = [c.cpm / 1000 / c.ctr for c in members]
            conversion = [c.lead_rate * c.close_rate for c in members]
            targets = {
                "ctr": _mean(c.ctr for c in members),
                "conversion": _mean(conversion),
                "cpa": _mean(cpc / conv for cpc, conv in zip(cost_per_click, conversion)),
                "roas": _mean(
                    c.order_value * conv / cpc
                    for c, cpc, conv in zip(members, cost_per_click, conversion)
                ),
            }
            targets = {k: float(f"{v:.4g}") for k, v in targets.items()}
            labels = {"owner": f"{channel}-team@example.com", "team": channel}
            out.append(Plan(None, channel, targets, {}, None, None, None, labels))
        hot = next(c for c in self.campaigns if c.name == OVERSPEND_CAMPAIGN)
        normal_spend_per_second = hot.impressions_per_second * hot.cpm / 1000
        budget = {"daily": float(f"{normal_spend_per_second * 600:.4g}")}
        labels = {"owner": "anna@example.com", "team": hot.channel, "market": "demo"}
        out.append(
            Plan(OVERSPEND_CAMPAIGN, None, {}, budget, None, None, midday_zone(now_ms), labels)
        )
        return out

    def _id(self, prefix: str) -> str:
        self._seq += 1
        return f"{prefix}-{self.started_ms}-{self._seq}"

    def tick(
        self, now_ms: int, seconds: float, rng: random.Random
    ) -> list[tuple[str, bytes, bytes]]:
        """Events of the last ``seconds`` as (event_type, key, value) messages."""
        incident = now_ms - self.started_ms >= self.incident_after_ms
        out: list[tuple[str, dict]] = []
        for c in self.campaigns:
            rate = c.impressions_per_second
            if incident and c.name == OVERSPEND_CAMPAIGN:
                rate *= OVERSPEND_FACTOR
            impressions = _poisson(rng, rate * seconds)
            ctr = c.ctr / 40 if incident and c.name == CTR_COLLAPSE_CAMPAIGN else c.ctr
            clicks = sum(rng.random() < ctr for _ in range(impressions))
            for _ in range(impressions):
                out.append(
                    ("impression", self._event("impression", c, now_ms, rng, cost=c.cpm / 1000))
                )
            for _ in range(clicks):
                out.append(("click", self._event("click", c, now_ms, rng)))
                if rng.random() < c.lead_rate:
                    lead = self._event("lead", c, now_ms, rng, lead_id=self._id("lead"))
                    out.append(("lead", lead))
                    if not (incident and c.name == UNCONTACTED_CAMPAIGN):
                        delay = int(rng.uniform(20_000, 600_000))
                        contact = self._event(
                            "sales_contact", c, now_ms + delay, rng, lead_id=lead["lead_id"]
                        )
                        self.pending_contacts.append((now_ms + delay, contact))
                    if rng.random() < c.close_rate:
                        out.append(
                            (
                                "sale",
                                self._event(
                                    "sale",
                                    c,
                                    now_ms,
                                    rng,
                                    lead_id=lead["lead_id"],
                                    value=round(c.order_value * rng.uniform(0.5, 1.5), 2),
                                    currency="USD",
                                ),
                            )
                        )
        due = [e for t, e in self.pending_contacts if t <= now_ms]
        self.pending_contacts = [(t, e) for t, e in self.pending_contacts if t > now_ms]
        out.extend(("sales_contact", e) for e in due)
        return self._messages(out, rng)

    def _event(
        self, event_type: str, c: Campaign, at_ms: int, rng: random.Random, **fields
    ) -> dict:
        if event_type != "sales_contact" and rng.random() < self.late_share:
            at_ms -= int(rng.uniform(60_000, 300_000))  # arrives minutes late
        return {
            "event_id": self._id(event_type[:3]),
            "event_type": event_type,
            "occurred_at": at_ms - int(rng.uniform(0, 500)),
            "campaign_id": c.name,
            "channel": c.channel,
            "ad_id": f"{c.name}-ad-{rng.randint(1, 4)}",
            **fields,
        }

    def _messages(
        self, events: list[tuple[str, dict]], rng: random.Random
    ) -> list[tuple[str, bytes, bytes]]:
        messages = []
        for event_type, body in events:
            key = body["campaign_id"].encode()
            roll = rng.random()
            if roll < self.bad_share:
                broken = dict(body)
                broken.pop("occurred_at")
                messages.append((event_type, key, orjson.dumps(broken)))
                continue
            value = orjson.dumps(body)
            messages.append((event_type, key, value))
            if roll < self.bad_share + self.duplicate_share:
                messages.append((event_type, key, value))  # a producer retry
        return messages


def _mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def midday_zone(now_ms: int) -> str:
    """A fixed-offset IANA zone in which ``now_ms`` falls between 12:00 and 13:00."""
    offset = 12 - (now_ms // 3_600_000) % 24  # hours to add to UTC: -11 .. 12
    if offset == 0:
        return "Etc/UTC"
    return f"Etc/GMT{'-' if offset > 0 else '+'}{abs(offset)}"  # POSIX: the sign is inverted


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 50:
        return max(0, round(rng.gauss(mean, mean**0.5)))
    count, threshold, product = 0, pow(2.718281828459045, -mean), rng.random()
    while product > threshold:
        count += 1
        product *= rng.random()
    return count


async def run_traffic(
    settings: Settings,
    *,
    seconds: float = 0,
    scale: float = 1.0,
    incident_after_s: float = 120,
    seed: int = 7,
) -> None:
    """Publish the default scenario until ``seconds`` have passed (0: forever)."""
    await ensure_topics(settings)
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers(settings.broker or ""),
        acks="all",
        linger_ms=20,
        **aiokafka_kwargs(settings),
    )
    await producer.start()
    rng = random.Random(seed)
    topic_of = dict(
        zip(("impression", "click", "lead", "sale", "sales_contact"), settings.topics.inputs())
    )
    started = time.monotonic()
    scenario = Scenario.default(
        time.time_ns() // 1_000_000, rng, scale=scale, incident_after_s=incident_after_s
    )
    plans = scenario.plans(scenario.started_ms)
    await publish_plans(settings, plans)
    print(
        f"demo traffic: {len(scenario.campaigns)} campaigns, {len(plans)} plans; incidents after "
        f"{incident_after_s:.0f}s "
        f"(incident_at_ms={scenario.started_ms + scenario.incident_after_ms}): "
        f"{CTR_COLLAPSE_CAMPAIGN} CTR collapses, {UNCONTACTED_CAMPAIGN} leads go uncontacted, "
        f"{OVERSPEND_CAMPAIGN} overspends its daily budget",
        flush=True,
    )
    try:
        last = time.monotonic()
        while not seconds or time.monotonic() - started < seconds:
            await asyncio.sleep(0.25)
            now = time.monotonic()
            for event_type, key, value in scenario.tick(
                time.time_ns() // 1_000_000, now - last, rng
            ):
                await producer.send(topic_of[event_type], value, key=key)
            last = now
        await producer.flush()
    finally:
        await producer.stop()
