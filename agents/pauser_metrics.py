"""The reference pauser's own metrics, in a registry of its own: what holds it, for how long,
and what it did with each decision (served with ``--metrics-port``)."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from autopause.policy import KILL_SWITCH, POPULATION_UNKNOWN, RATE_LIMIT, SHARE_LIMIT
from stream import catalogue

CLAIMED = "claimed_elsewhere"  # another pauser on the same ledger is running the command
HOLD_REASONS = (KILL_SWITCH, RATE_LIMIT, SHARE_LIMIT, POPULATION_UNKNOWN, CLAIMED)


class PauserMetrics:
    """The pauser's own registry: what holds it, for how long, and what it did."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        held, seconds, decisions = (
            catalogue.PAUSER_HELD,
            catalogue.PAUSER_HELD_SECONDS,
            catalogue.PAUSER_DECISIONS,
        )
        self.held = Gauge(held.name, held.doc, held.labels, registry=self.registry)
        self.held_seconds = Gauge(seconds.name, seconds.doc, registry=self.registry)
        self.decisions = Counter(
            decisions.name, decisions.doc, decisions.labels, registry=self.registry
        )
        self.release()

    def hold(self, reason: str, seconds: float) -> None:
        for each in HOLD_REASONS:
            self.held.labels(each).set(1 if each == reason else 0)
        self.held_seconds.set(seconds)

    def release(self) -> None:
        self.hold("", 0.0)

    def count(self, outcome: str) -> None:
        self.decisions.labels(outcome).inc()

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Expose the registry over HTTP; the function that stops it."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return stop
