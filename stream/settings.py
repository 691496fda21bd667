"""One typed settings object, read from the environment (``KPI_*``) and overridden by CLI flags.

A bad value fails fast with a message that names the setting, so a typo in a deployment is
caught at start-up instead of surfacing as wrong numbers later.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .durations import format_duration, parse_duration
from .events import EVENTS_PER_MESSAGE_LIMIT
from .horizons import grid_problem
from .plans import is_time_zone


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names it."""


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class Topics:
    impressions: str = "marketing.impressions"
    clicks: str = "marketing.clicks"
    leads: str = "marketing.leads"
    sales: str = "marketing.sales"
    sales_contacts: str = "marketing.sales_contacts"
    rejected: str = "marketing.rejected"
    decisions: str = "marketing.kpi-decisions"  # auto-pause decisions, keyed by campaign_id
    plans: str = "marketing.campaign-plans"  # compacted, keyed by campaign_id (stream.plans)

    def inputs(self) -> tuple[str, str, str, str, str]:
        """Input topics in event-type order (see ``stream.events.EVENT_TYPES``)."""
        return (self.impressions, self.clicks, self.leads, self.sales, self.sales_contacts)


@dataclass(frozen=True)
class Settings:
    broker: str | None = None  # None: start the embedded broker
    app_id: str = "kpi-monitor"
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    web_token: str = ""  # bearer token every HTTP endpoint requires ("" : none, loopback only)
    partitions: int = 4
    topics: Topics = field(default_factory=Topics)
    bucket_seconds: int = 60
    windows_seconds: tuple[int, ...] = (300, 900, 3600)
    # The long horizons (today, 7d, 30d, flight) sum hour buckets kept this long.
    long_bucket_seconds: int = 3600
    long_retention_seconds: int = 32 * 86400
    grace_seconds: int = 600
    future_tolerance_seconds: int = 300
    dedup_horizon_seconds: int = 600
    dedup_max_ids_per_partition: int = 250_000
    lead_ttl_seconds: int = 7 * 86400
    currency: str = "USD"
    timezone: str = "UTC"  # IANA zone of a campaign's "today" when its plan names none
    # Upper bounds of the event contract (stream.events): beyond them an event is rejected.
    max_cost: float = 10_000.0  # per impression or click, in the reporting currency
    max_sale_value: float = 10_000_000.0  # per sale
    max_events_per_message: int = 10_000
    max_message_bytes: int = 4 << 20
    max_campaigns_per_partition: int = 3000
    max_channels_per_partition: int = 100
    export: str = "lean"  # lean | full: the per-campaign series /metrics exports
    ingest: str = "batch"  # batch: whole fetched batches past Faust's per-message path | faust
    batch_size: int = 1000
    batch_within_seconds: float = 0.1
    session_timeout_seconds: float = 10.0
    fetch_max_wait_seconds: float = 0.1
    data_dir: str = ""
    # The state table's local store (agents.local_store): a restart reads its own file in
    # data_dir plus the changelog's tail; off: every restart reads the whole changelog.
    local_store: bool = True
    # gc.freeze() after each restore: the restored state leaves the cyclic collector's walks
    # (agents.gc_pauses); off: the collector keeps walking it in every full collection.
    gc_freeze: bool = True
    # Static group membership (Kafka's group.instance.id): a worker restarted with the same id
    # takes its own place in the group at once, instead of after the dead member's session
    # timeout. One id per worker (e.g. its host name); empty: dynamic membership.
    instance_id: str = ""
    security_protocol: str = "PLAINTEXT"  # PLAINTEXT | SSL | SASL_PLAINTEXT | SASL_SSL
    sasl_mechanism: str = "PLAIN"  # PLAIN | SCRAM-SHA-256 | SCRAM-SHA-512
    sasl_username: str = ""
    sasl_password: str = ""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    # Auto-pause decisions (autopause): the may_pause rules of the rules file, judged by the worker.
    rules_path: str = ""  # "" : the shipped ops/kpi-rules.yaml
    decisions: bool = True
    decision_interval_seconds: float = 15.0
    decision_ttl_seconds: int = 900  # a decision's valid_until: issued_at + this
    decision_mode: str = "live"  # live | shadow: whether pausers may act on the decisions
    decision_max_lag: int = 10_000  # messages behind in a partition: its campaigns are unknown
    decision_max_stall_seconds: int = (
        300  # the rule's traffic event time stalled this long: unknown
    )
    decision_max_late_share: float = 0.05  # late share of the rule's events since the last tick
    breaker_share: float = 0.2  # of active campaigns tripping one rule within the breaker window
    breaker_min_campaigns: int = 5
    breaker_window_seconds: int = 600

    def __post_init__(self) -> None:
        _check(self.web_port > 0 and self.web_port < 65536, "KPI_WEB_PORT", "must be 1-65535")
        _check(
            bool(self.web_token) or self.web_host in LOOPBACK,
            "KPI_WEB_TOKEN",
            f"required when KPI_WEB_HOST ({self.web_host}) is reachable beyond this machine: "
            "every endpoint then takes 'Authorization: Bearer <token>'",
        )
        _check(self.partitions >= 1, "KPI_PARTITIONS", "must be >= 1")
        _check(self.bucket_seconds >= 1, "KPI_BUCKET", "must be at least 1s")
        _check(bool(self.windows_seconds), "KPI_WINDOWS", "needs at least one window")
        for window in self.windows_seconds:
            _check(
                window >= self.bucket_seconds and window % self.bucket_seconds == 0,
                "KPI_WINDOWS",
                f"window {format_duration(window)} must be a whole number of buckets "
                f"({format_duration(self.bucket_seconds)})",
            )
        _check(
            self.long_bucket_seconds % self.bucket_seconds == 0
            and 86400 % self.long_bucket_seconds == 0,
            "KPI_LONG_BUCKET",
            "must divide a day and be a whole number of buckets (KPI_BUCKET), got "
            f"{format_duration(self.long_bucket_seconds)}",
        )
        _check(
            self.long_retention_seconds >= 31 * 86400,
            "KPI_LONG_RETENTION",
            "must be at least 31d: the 30d horizon reads 30 calendar days back in the "
            f"campaign's time zone, got {format_duration(self.long_retention_seconds)}",
        )
        _check(self.grace_seconds >= 0, "KPI_GRACE", "must be >= 0")
        _check(self.dedup_horizon_seconds >= 0, "KPI_DEDUP_HORIZON", "must be >= 0")
        _check(self.dedup_max_ids_per_partition >= 1, "KPI_DEDUP_MAX_IDS", "must be >= 1")
        _check(
            len(self.currency) == 3
            and self.currency.isascii()  # fullwidth "ＵＳＤ" is alphabetic and upper case too
            and self.currency.isalpha()
            and self.currency.isupper(),
            "KPI_CURRENCY",
            "must be an ISO 4217 code such as USD",
        )
        _check(
            is_time_zone(self.timezone),
            "KPI_TIMEZONE",
            f"must be an IANA time zone such as Europe/Berlin, got {self.timezone[:60]!r}",
        )
        # The long horizons sum whole long buckets: a day that does not start on one would count
        # a bucket in two days (stream.horizons).
        grid = grid_problem(self.timezone, self.long_bucket_seconds * 1000)
        _check(grid is None, "KPI_TIMEZONE", str(grid))
        # Money is summed per bucket in int64 millionths (9.2e12 units): at 1e9 an event, a bucket
        # holds 9,000 events at the bound before its sum saturates.
        _check(0 < self.max_cost <= 1e9, "KPI_MAX_COST", "must be within (0, 1e9]")
        _check(0 < self.max_sale_value <= 1e9, "KPI_MAX_SALE_VALUE", "must be within (0, 1e9]")
        _check(
            1 <= self.max_events_per_message <= EVENTS_PER_MESSAGE_LIMIT,
            "KPI_MAX_EVENTS_PER_MESSAGE",
            f"must be within 1-{EVENTS_PER_MESSAGE_LIMIT} (events are positioned by their "
            "index in a message in 20 bits)",
        )
        _check(self.max_message_bytes >= 1024, "KPI_MAX_MESSAGE_BYTES", "must be >= 1024")
        _check(
            self.max_campaigns_per_partition >= 1, "KPI_MAX_CAMPAIGNS_PER_PARTITION", "must be >= 1"
        )
        _check(
            self.max_channels_per_partition >= 1, "KPI_MAX_CHANNELS_PER_PARTITION", "must be >= 1"
        )
        _check(self.export in ("lean", "full"), "KPI_EXPORT", f"lean or full, got {self.export!r}")
        _check(
            self.ingest in ("batch", "faust"), "KPI_INGEST", f"batch or faust, got {self.ingest!r}"
        )
        _check(self.batch_size >= 1, "KPI_BATCH_SIZE", "must be >= 1")
        _check(
            0 < self.fetch_max_wait_seconds <= 30, "KPI_FETCH_MAX_WAIT", "must be within (0, 30s]"
        )
        _check(
            self.security_protocol in ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"),
            "KPI_SECURITY_PROTOCOL",
            "one of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL",
        )
        if self.security_protocol.startswith("SASL"):
            _check(
                self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"),
                "KPI_SASL_MECHANISM",
                "one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512",
            )
            _check(bool(self.sasl_username), "KPI_SASL_USERNAME", "required with SASL")
            _check(bool(self.sasl_password), "KPI_SASL_PASSWORD", "required with SASL")
        _check(self.decision_interval_seconds >= 1, "KPI_DECISION_INTERVAL", "must be at least 1s")
        _check(
            self.decision_ttl_seconds >= self.decision_interval_seconds,
            "KPI_DECISION_TTL",
            "must be at least KPI_DECISION_INTERVAL",
        )
        _check(
            self.decision_mode in ("live", "shadow"),
            "KPI_DECISION_MODE",
            f"live or shadow, got {self.decision_mode!r}",
        )
        _check(self.decision_max_lag >= 0, "KPI_DECISION_MAX_LAG", "must be >= 0")
        _check(
            self.decision_max_stall_seconds >= 1, "KPI_DECISION_MAX_STALL", "must be at least 1s"
        )
        _check(
            0 < self.decision_max_late_share <= 1,
            "KPI_DECISION_MAX_LATE_SHARE",
            "must be within (0, 1]",
        )
        _check(0 < self.breaker_share <= 1, "KPI_BREAKER_SHARE", "must be within (0, 1]")
        _check(self.breaker_min_campaigns >= 1, "KPI_BREAKER_MIN_CAMPAIGNS", "must be >= 1")
        _check(self.breaker_window_seconds >= 1, "KPI_BREAKER_WINDOW", "must be at least 1s")
        if self.broker is not None:
            _check(
                self.broker.startswith("kafka://"),
                "KPI_BROKER",
                f"must look like kafka://host:port, got {self.broker!r}",
            )

    @property
    def retention_seconds(self) -> int:
        """How long a bucket is kept: the longest window plus the grace period."""
        return max(self.windows_seconds) + self.grace_seconds

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)


def _check(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise SettingsError(f"{name}: {message}")


def _read(env: Mapping[str, str], name: str, convert, default):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except (ValueError, TypeError) as exc:
        raise SettingsError(f"{name}: {exc}") from None


def _duration(raw: str) -> int:
    seconds = parse_duration(raw)
    if seconds != int(seconds):
        raise ValueError(f"{raw!r} must be a whole number of seconds")
    return int(seconds)


def _durations(raw: str) -> tuple[int, ...]:
    return tuple(sorted({_duration(part) for part in raw.split(",") if part.strip()}))


def _switch(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"on or off, got {raw!r}")


def _int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"not an integer: {raw!r}") from None


def settings_from_env(env: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Settings from ``KPI_*`` variables; keyword overrides (CLI flags) win over the environment."""
    env = os.environ if env is None else env
    if env.get("KPI_MAX_CAMPAIGNS"):
        raise SettingsError(
            "KPI_MAX_CAMPAIGNS: replaced by KPI_MAX_CAMPAIGNS_PER_PARTITION (campaigns "
            "are now bounded in state, per partition)"
        )
    base = Settings()
    topics = Topics(
        impressions=env.get("KPI_TOPIC_IMPRESSIONS") or base.topics.impressions,
        clicks=env.get("KPI_TOPIC_CLICKS") or base.topics.clicks,
        leads=env.get("KPI_TOPIC_LEADS") or base.topics.leads,
        sales=env.get("KPI_TOPIC_SALES") or base.topics.sales,
        sales_contacts=env.get("KPI_TOPIC_SALES_CONTACTS") or base.topics.sales_contacts,
        rejected=env.get("KPI_TOPIC_REJECTED") or base.topics.rejected,
        decisions=env.get("KPI_TOPIC_DECISIONS") or base.topics.decisions,
        plans=env.get("KPI_TOPIC_PLANS") or base.topics.plans,
    )
    values: dict[str, Any] = {
        "broker": env.get("KPI_BROKER") or None,
        "app_id": env.get("KPI_APP_ID") or base.app_id,
        "web_host": env.get("KPI_WEB_HOST") or base.web_host,
        "web_port": _read(env, "KPI_WEB_PORT", _int, base.web_port),
        "web_token": env.get("KPI_WEB_TOKEN") or "",
        "partitions": _read(env, "KPI_PARTITIONS", _int, base.partitions),
        "topics": topics,
        "bucket_seconds": _read(env, "KPI_BUCKET", _duration, base.bucket_seconds),
        "windows_seconds": _read(env, "KPI_WINDOWS", _durations, base.windows_seconds),
        "grace_seconds": _read(env, "KPI_GRACE", _duration, base.grace_seconds),
        "future_tolerance_seconds": _read(
            env, "KPI_FUTURE_TOLERANCE", _duration, base.future_tolerance_seconds
        ),
        "dedup_horizon_seconds": _read(
            env, "KPI_DEDUP_HORIZON", _duration, base.dedup_horizon_seconds
        ),
        "dedup_max_ids_per_partition": _read(
            env, "KPI_DEDUP_MAX_IDS", _int, base.dedup_max_ids_per_partition
        ),
        "lead_ttl_seconds": _read(env, "KPI_LEAD_TTL", _duration, base.lead_ttl_seconds),
        "long_bucket_seconds": _read(env, "KPI_LONG_BUCKET", _duration, base.long_bucket_seconds),
        "long_retention_seconds": _read(
            env, "KPI_LONG_RETENTION", _duration, base.long_retention_seconds
        ),
        "currency": env.get("KPI_CURRENCY") or base.currency,
        "timezone": env.get("KPI_TIMEZONE") or base.timezone,
        "max_cost": _read(env, "KPI_MAX_COST", float, base.max_cost),
        "max_sale_value": _read(env, "KPI_MAX_SALE_VALUE", float, base.max_sale_value),
        "max_events_per_message": _read(
            env, "KPI_MAX_EVENTS_PER_MESSAGE", _int, base.max_events_per_message
        ),
        "max_message_bytes": _read(env, "KPI_MAX_MESSAGE_BYTES", _int, base.max_message_bytes),
        "max_campaigns_per_partition": _read(
            env, "KPI_MAX_CAMPAIGNS_PER_PARTITION", _int, base.max_campaigns_per_partition
        ),
        "max_channels_per_partition": _read(
            env, "KPI_MAX_CHANNELS_PER_PARTITION", _int, base.max_channels_per_partition
        ),
        "export": env.get("KPI_EXPORT") or base.export,
        "ingest": env.get("KPI_INGEST") or base.ingest,
        "batch_size": _read(env, "KPI_BATCH_SIZE", _int, base.batch_size),
        "batch_within_seconds": _read(
            env, "KPI_BATCH_WITHIN", parse_duration, base.batch_within_seconds
        ),
        "session_timeout_seconds": _read(
            env, "KPI_SESSION_TIMEOUT", parse_duration, base.session_timeout_seconds
        ),
        "fetch_max_wait_seconds": _read(
            env, "KPI_FETCH_MAX_WAIT", parse_duration, base.fetch_max_wait_seconds
        ),
        "data_dir": env.get("KPI_DATA_DIR") or base.data_dir,
        "security_protocol": env.get("KPI_SECURITY_PROTOCOL") or base.security_protocol,
        "sasl_mechanism": env.get("KPI_SASL_MECHANISM") or base.sasl_mechanism,
        "sasl_username": env.get("KPI_SASL_USERNAME") or "",
        "sasl_password": env.get("KPI_SASL_PASSWORD") or "",
        "ssl_cafile": env.get("KPI_SSL_CAFILE") or "",
        "ssl_certfile": env.get("KPI_SSL_CERTFILE") or "",
        "ssl_keyfile": env.get("KPI_SSL_KEYFILE") or "",
        "rules_path": env.get("KPI_RULES") or "",
        "decisions": _read(env, "KPI_DECISIONS", _switch, base.decisions),
        "local_store": _read(env, "KPI_LOCAL_STORE", _switch, base.local_store),
        "gc_freeze": _read(env, "KPI_GC_FREEZE", _switch, base.gc_freeze),
        "instance_id": env.get("KPI_INSTANCE_ID") or base.instance_id,
        "decision_interval_seconds": _read(
            env, "KPI_DECISION_INTERVAL", parse_duration, base.decision_interval_seconds
        ),
        "decision_ttl_seconds": _read(
            env, "KPI_DECISION_TTL", _duration, base.decision_ttl_seconds
        ),
        "decision_mode": env.get("KPI_DECISION_MODE") or base.decision_mode,
        "decision_max_lag": _read(env, "KPI_DECISION_MAX_LAG", _int, base.decision_max_lag),
        "decision_max_stall_seconds": _read(
            env, "KPI_DECISION_MAX_STALL", _duration, base.decision_max_stall_seconds
        ),
        "decision_max_late_share": _read(
            env, "KPI_DECISION_MAX_LATE_SHARE", float, base.decision_max_late_share
        ),
        "breaker_share": _read(env, "KPI_BREAKER_SHARE", float, base.breaker_share),
        "breaker_min_campaigns": _read(
            env, "KPI_BREAKER_MIN_CAMPAIGNS", _int, base.breaker_min_campaigns
        ),
        "breaker_window_seconds": _read(
            env, "KPI_BREAKER_WINDOW", _duration, base.breaker_window_seconds
        ),
    }
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**values)
