"""A table of hostile plan records on the plans topic while events flow, on the embedded broker
and a real worker process: the worker stays up, the events' figures are exact, every hostile
record is refused (counted and dead-lettered, one by one), and the one valid plan, published
before the hostile records that share its key and re-sent after them, stays in force."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from agents.broker import EmbeddedBroker
from stream.settings import Settings, Topics
from tests.e2e.harness import WorkerProcess, read_topic, total, wait_for

pytestmark = pytest.mark.e2e
PLANS = Topics().plans
CLICKS = Topics().clicks
REJECTED = Topics().rejected
OK = "camp-ok"
VALID = orjson.dumps(
    {
        "schema": 1,
        "campaign_id": OK,
        "targets": {"cpa": 12.5},
        "budget": {"daily": 500},
        "timezone": "Europe/Berlin",
        "labels": {"owner": "ana"},
    }
)


def poisoned(**fields: object) -> bytes:
    """camp-ok's plan with other figures (cpa 99, UTC, owner mallory) and one bad field: were it
    accepted, the exported plan would show it."""
    plan: dict[str, object] = {
        "campaign_id": OK,
        "targets": {"cpa": 99.0},
        "timezone": "UTC",
        "labels": {"owner": "mallory"},
    }
    plan.update(fields)
    return orjson.dumps(plan)


def raw(fragment: str) -> bytes:
    """camp-ok's plan written by hand around ``fragment`` (what orjson would not write)."""
    return f'{{"campaign_id":"{OK}","targets":{{"cpa":99}},{fragment}}}'.encode()


WEIRD = {
    "nul": "\u0000",
    "nel": "\u0085",
    "lsep": "\u2028",
    "rlo": "\u202e",
    "lri": "\u2066",
    "zwsp": "\u200b",
    "bom": "\ufeff",
    "nbsp": "\u00a0",
}
BIG = "1" + "0" * 400
EVENTS_PER_ROW = 20

# (id, key, value): each must be refused, none may touch camp-ok's plan.
HOSTILE: list[tuple[str, bytes | None, bytes | None]] = [
    *(
        (f"tz-{name}", OK.encode(), poisoned(timezone=zone))
        for name, zone in [
            ("Europe", "Europe"),  # a tzdata folder: IsADirectoryError before the fix
            ("Etc", "Etc"),
            ("America", "America"),
            ("300chars", "A" * 300),
            ("dotdot", "../../etc/passwd"),
            ("absolute", "/etc/localtime"),
            ("localtime", "localtime"),
            ("posixrules", "posixrules"),
            ("Factory", "Factory"),
            ("empty", ""),
            ("nul", "Europe/Berlin\x00"),
            ("number", 1),
            ("Kolkata", "Asia/Kolkata"),  # +05:30: not whole KPI_LONG_BUCKET (1h) buckets
        ]
    ),
    *(
        (f"{section}-{name}", OK.encode(), poisoned(**{section: {slot: value}}))
        for section, slot in (("targets", "cpa"), ("budget", "daily"))
        for name, value in [
            ("negative", -5),
            ("zero", 0),
            ("huge", 1e300),
            ("string", "12.5"),
            ("bool", True),
            ("list", [12.5]),
            ("object", {"v": 1}),
        ]
    ),
    *(
        (f"{section}-{name}", OK.encode(), raw(f'"{section}":{{"{slot}":{text}}}'))
        for section, slot in (("targets", "ctr"), ("budget", "daily"))
        for name, text in [("NaN", "NaN"), ("inf", "Infinity"), ("1e400", "1e400"), ("400d", BIG)]
    ),
    ("target-unknown-kpi", OK.encode(), poisoned(targets={"cpx": 1.0})),
    ("ctr-above-1", OK.encode(), poisoned(targets={"ctr": 1.5})),
    (
        "flight-backwards",
        OK.encode(),
        poisoned(flight={"start": "2026-05-02", "end": "2026-05-01"}),
    ),
    ("flight-feb30", OK.encode(), poisoned(flight={"start": "2026-02-30"})),
    ("flight-99999", OK.encode(), poisoned(flight={"end": "99999-01-01"})),
    ("flight-9999-12-31", OK.encode(), poisoned(flight={"end": "9999-12-31"})),
    ("flight-0001-01-01", OK.encode(), poisoned(flight={"start": "0001-01-01"})),
    ("flight-extra", OK.encode(), poisoned(flight={"start": "2026-05-01", "stop": "x"})),
    *(
        (f"id-{name}", f"camp{c}ok".encode(), poisoned(campaign_id=f"camp{c}ok"))
        for name, c in WEIRD.items()
    ),
    *(
        (f"label-{name}", OK.encode(), poisoned(labels={"owner": f"ana{c}"}))
        for name, c in WEIRD.items()
    ),
    ("label-unknown", OK.encode(), poisoned(labels={"boss": "x"})),
    ("label-long", OK.encode(), poisoned(labels={"owner": "x" * 129})),
    ("id-long", b"c" * 257, poisoned(campaign_id="c" * 257)),
    ("id-number", b"7", poisoned(campaign_id=7)),
    ("both-scopes", OK.encode(), poisoned(channel="search")),
    ("no-scope", OK.encode(), orjson.dumps({"targets": {"cpa": 99.0}})),
    ("schema-2", OK.encode(), poisoned(schema=2)),
    ("schema-str", OK.encode(), poisoned(schema="1")),
    ("schema-true", OK.encode(), poisoned(schema=True)),
    ("not-json", OK.encode(), b"campaign_id=camp-ok cpa=99"),
    ("truncated-json", OK.encode(), poisoned()[:-5]),
    ("json-list", OK.encode(), b"[]"),
    ("json-number", OK.encode(), b"42"),
    ("json-null", OK.encode(), b"null"),
    ("json-string", OK.encode(), b'"camp-ok"'),
    ("not-utf8-value", OK.encode(), b'{"campaign_id":"camp-ok","labels":{"owner":"\xff"}}'),
    ("key-not-campaign", OK.encode(), poisoned(campaign_id="other")),
    ("key-other-campaign", b"other", poisoned()),
    ("key-channel-form", b"\x00channel:search", poisoned()),
    ("key-not-utf8", b"\xff\xfe", poisoned()),
    ("no-key", None, poisoned()),
    ("empty-key", b"", poisoned()),
    ("empty-key-tombstone", b"", None),
    ("value-1MB", OK.encode(), poisoned(labels={"owner": "x" * (1 << 20)})),
    ("nested-10000", OK.encode(), b"[" * 10_000 + b"]" * 10_000),
    ("nested-in-field", OK.encode(), raw('"labels":' + "[" * 10_000 + "]" * 10_000)),
    ("unknown-field", OK.encode(), poisoned(priority="high")),
    ("empty-object", OK.encode(), b"{}"),
    ("sections-not-objects", OK.encode(), poisoned(targets=[99])),
]
assert len({row_id for row_id, _, _ in HOSTILE}) == len(HOSTILE)


def clicks(campaign: str, first: int, count: int, now_ms: int) -> bytes:
    return orjson.dumps(
        [
            {
                "event_type": "click",
                "occurred_at": now_ms,
                "campaign_id": campaign,
                "event_id": f"{campaign}-{first + i}",
                "cost": 0.25,
            }
            for i in range(count)
        ]
    )


class Publisher:
    """One producer: plan records to every partition of the plans topic, click events between
    them, and a sentinel per partition after them."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.where: dict[tuple[int, int], str] = {}  # (partition, offset) -> hostile row id
        self.sent = {OK: 0, "steady": 0}  # click events sent, by campaign
        self.partitions: list[int] = []

    async def run(self, rows: list[tuple[str, bytes | None, bytes | None]], sentinel: str) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            linger_ms=5,
            compression_type="gzip",  # the 1 MB value
            max_request_size=16 << 20,
            max_batch_size=16 << 20,
        )
        await producer.start()
        now = int(time.time() * 1000)
        try:
            self.partitions = sorted(await producer.partitions_for(PLANS))
            for row_id, key, value in rows:
                futures = [
                    await producer.send(PLANS, value, key=key, partition=p) for p in self.partitions
                ]
                for meta in await asyncio.gather(*futures):
                    if row_id != "valid":
                        self.where[(meta.partition, meta.offset)] = row_id
                for campaign in self.sent:  # events flow between the plan records
                    await producer.send(
                        CLICKS,
                        clicks(campaign, self.sent[campaign], EVENTS_PER_ROW, now),
                        key=campaign.encode(),
                    )
                    self.sent[campaign] += EVENTS_PER_ROW
            # A sentinel after them in each partition: the plan (and an event, for its row) of a
            # campaign of that partition alone. Once every sentinel's target is exported, every
            # record before them was folded.
            for p in self.partitions:
                name = f"{sentinel}-{p}"
                plan = orjson.dumps({"campaign_id": name, "targets": {"cpc": 1.0 + p}})
                await producer.send(PLANS, plan, key=name.encode(), partition=p)
                await producer.send(CLICKS, clicks(name, 0, 1, now), partition=p)
            await producer.flush()
        finally:
            await producer.stop()


def folded(worker: WorkerProcess, publisher: Publisher, sentinel: str):
    """The worker's samples once the sentinels and every event sent are folded, else None."""
    if worker.process is not None and worker.process.poll() is not None:
        raise AssertionError(f"the worker exited ({worker.process.returncode})")
    m = worker.try_metrics()
    done = all(
        ("kpi_plan_target", (("campaign", f"{sentinel}-{p}"), ("kpi", "cpc"))) in m
        for p in publisher.partitions
    ) and all(total(m, "kpi_events_total", campaign=c) >= n for c, n in publisher.sent.items())
    return m if done else None


def assert_valid_plan_in_force(metrics: dict) -> None:
    """camp-ok's valid plan is the one exported: none of the poisoned figures."""
    targets = {
        dict(labels)["kpi"]: value
        for (name, labels), value in metrics.items()
        if name == "kpi_plan_target" and dict(labels)["campaign"] == OK
    }
    assert targets == {"cpa": 12.5}, targets
    assert total(metrics, "kpi_plan_budget", campaign=OK, period="daily") == 500
    info = [
        dict(labels)
        for (name, labels), value in metrics.items()
        if name == "kpi_plan_info" and dict(labels)["campaign"] == OK and value
    ]
    assert len(info) == 1 and info[0]["timezone"] == "Europe/Berlin", info
    assert info[0]["owner"] == "ana", info
    assert not [k for k in metrics if dict(k[1]).get("campaign") == "other"]


def test_hostile_plans_are_refused_one_by_one_and_the_valid_plan_stays(tmp_path):
    valid = ("valid", OK.encode(), VALID)
    with EmbeddedBroker() as broker:
        worker = WorkerProcess(broker.url, "kpi-hostile-plans", str(tmp_path / "worker.log"))
        worker.start()
        publisher = Publisher(broker.bootstrap)
        try:
            wait_for(lambda: worker.try_metrics(), 90, "the worker to serve /metrics")
            # The valid plan first, then every hostile row (most under its key) amid events.
            asyncio.run(publisher.run([valid, *HOSTILE], "mid"))
            wait_for(lambda: folded(worker, publisher, "mid"), 45, "the hostile rows folded")
            between = worker.metrics()
            # The valid plan again, last: its final state is known.
            asyncio.run(publisher.run([valid], "last"))
            wait_for(lambda: folded(worker, publisher, "last"), 30, "the re-sent plan folded")
            time.sleep(1.5)  # anything counted twice would show by now
            metrics = worker.metrics()
            health = orjson.loads(worker.get("/health"))
            alive = worker.process is not None and worker.process.poll() is None
            copies = len(HOSTILE) * len(publisher.partitions)
            dead = asyncio.run(read_topic(broker.bootstrap, REJECTED, copies + 1, timeout=6))
        finally:
            worker.stop()
            print(open(worker.log_path, errors="replace").read()[-3000:])

    # The worker stayed up and answers.
    assert alive, "the worker process exited"
    assert isinstance(health, dict) and health
    assert len(publisher.where) == copies

    # After the hostile rows and before the re-send, the first valid plan was still in force.
    assert_valid_plan_in_force(between)
    assert total(between, "kpi_events_rejected_total", reason="invalid_plan") == copies

    # Every hostile copy was dead-lettered once, as invalid_plan: a row missing was accepted.
    refused: dict[tuple[int, int], dict[str, str]] = {}
    for record in dead:
        headers = {k: v.decode(errors="replace") for k, v in record.headers}
        assert headers["kpi.source.topic"] == PLANS, headers
        spot = (int(headers["kpi.source.partition"]), int(headers["kpi.source.offset"]))
        assert spot in publisher.where, f"a record that is not hostile was refused: {headers}"
        assert spot not in refused, f"dead-lettered twice: {headers}"
        refused[spot] = headers
    accepted = sorted({publisher.where[spot] for spot in set(publisher.where) - set(refused)})
    assert not accepted, f"hostile rows accepted: {accepted}"
    assert {h["kpi.reason"] for h in refused.values()} == {"invalid_plan"}
    details = {publisher.where[spot]: h["kpi.detail"] for spot, h in refused.items()}
    for row_id, detail in sorted(details.items()):
        print(f"{row_id}: {detail[:110]}")
    assert "KPI_LONG_BUCKET" in details["tz-Kolkata"], details["tz-Kolkata"]
    assert "IANA" in details["tz-Europe"], details["tz-Europe"]

    # The counters agree: the hostile copies and nothing else were rejected.
    rejected = {
        dict(labels)["reason"]: value
        for (name, labels), value in metrics.items()
        if name == "kpi_events_rejected_total" and value
    }
    assert rejected == {"invalid_plan": copies}
    assert total(metrics, "kpi_dead_letters_sent_total") == copies

    # The events' figures are exact.
    for campaign, count in publisher.sent.items():
        assert total(metrics, "kpi_events_total", campaign=campaign) == count, campaign
        assert total(metrics, "kpi_events_total", campaign=campaign, event_type="click") == count
        spend = total(metrics, "kpi_window_spend", campaign=campaign, window="1h")
        assert spend == count * 0.25, (campaign, spend)
    for p in publisher.partitions:
        for sentinel in ("mid", "last"):
            assert total(metrics, "kpi_events_total", campaign=f"{sentinel}-{p}") == 1

    # And at the end, camp-ok's valid plan is the one in force.
    assert_valid_plan_in_force(metrics)
    assert Settings().long_bucket_seconds == 3600  # the Kolkata row's premise
