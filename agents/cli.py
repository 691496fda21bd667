"""``kpi-monitor``: run the worker, run the embedded broker, publish events, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import subprocess
import sys
import time

from stream.settings import Settings, SettingsError, settings_from_env

from .broker import EmbeddedBroker
from .topics import TopicLayoutError, ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kpi-monitor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run a worker (starts the embedded broker if none is set)")
    run.add_argument("--broker", help="kafka://host:port (env KPI_BROKER); default: embedded broker")
    run.add_argument("--web-port", type=int, help="port of /metrics and /kpis (env KPI_WEB_PORT)")
    run.add_argument("--web-host", help="bind address (env KPI_WEB_HOST, default 127.0.0.1)")
    run.add_argument("--demo", action="store_true",
                     help="also publish realistic synthetic traffic with scripted incidents")
    run.add_argument("--loglevel", default=os.environ.get("KPI_LOGLEVEL", "warning"))

    broker = commands.add_parser("broker", help="run the embedded broker alone and print its URL")
    broker.add_argument("--port", type=int, default=0)

    send = commands.add_parser("send", help="publish events from a JSON-lines file to their topics")
    send.add_argument("file", help="JSON lines: one event object (or array of events) per line")
    send.add_argument("--broker", help="kafka://host:port (env KPI_BROKER)")

    rules = commands.add_parser("rules", help="generate (or check) the Prometheus rules, Grafana "
                                              "alerting and dashboards from ops/kpi-rules.yaml")
    rules.add_argument("action", choices=["generate", "check"])
    rules.add_argument("--root", default=".", help="project root holding ops/ and grafana/")

    sink = commands.add_parser("alert-sink", help="print alerts POSTed to /alerts (webhook receiver)")
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=8080)

    demo = commands.add_parser("demo-traffic", help="publish demo traffic to a running broker")
    demo.add_argument("--broker", help="kafka://host:port (env KPI_BROKER)")
    demo.add_argument("--seconds", type=float, default=0, help="stop after this long (0: run forever)")
    demo.add_argument("--scale", type=float, default=1.0, help="multiply every campaign's traffic")
    demo.add_argument("--incident-after", type=float, default=120, help="seconds until the incidents")

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            settings = settings_from_env(broker=args.broker, web_port=args.web_port, web_host=args.web_host)
            return run_worker(settings, demo=args.demo, loglevel=args.loglevel)
        if args.command == "broker":
            return run_broker(args.port)
        if args.command == "send":
            from .send import send_file

            settings = settings_from_env(broker=args.broker)
            return asyncio.run(send_file(settings, args.file))
        if args.command == "alert-sink":
            from .alert_sink import run as run_sink

            return run_sink(args.host, args.port)
        if args.command == "rules":
            from rulebook.generate import main as generate

            return generate(args.action, args.root)
        if args.command == "demo-traffic":
            from .demo import run_traffic

            settings = settings_from_env(broker=args.broker)
            asyncio.run(run_traffic(settings, seconds=args.seconds, scale=args.scale,
                                    incident_after_s=args.incident_after))
            return 0
    except SettingsError as exc:
        print(f"kpi-monitor: bad setting: {exc}", file=sys.stderr)
        return 2
    except TopicLayoutError as exc:
        print(f"kpi-monitor: refusing to start: {exc}", file=sys.stderr)
        return 2
    return 1


def run_broker(port: int) -> int:
    broker = EmbeddedBroker(port=port).start()
    print(f"embedded broker listening: {broker.url}  (memory storage; Ctrl-C stops it)", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop()
    return 0


def run_worker(settings: Settings, *, demo: bool = False, loglevel: str = "info") -> int:
    from . import worker
    from .app import create_app

    logging.basicConfig(level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    embedded = None
    traffic = None
    if settings.broker is None:
        embedded = EmbeddedBroker().start()
        settings = settings.replace(broker=embedded.url)
        print(f"kpi-monitor: no broker configured (KPI_BROKER / --broker): started the embedded "
              f"broker at {embedded.url} (memory only: its data is gone when it stops)", flush=True)
    try:
        partitions = asyncio.run(ensure_topics(settings))
        settings = settings.replace(partitions=partitions)
        monitor = create_app(settings)
        if demo:
            traffic = subprocess.Popen(
                [sys.executable, "-m", "agents.cli", "demo-traffic", "--broker", settings.broker or ""],
                start_new_session=True,
            )
        print(f"kpi-monitor: metrics at http://{settings.web_host}:{settings.web_port}/metrics, "
              f"JSON at /kpis", flush=True)
        worker.run(monitor.app, loglevel=loglevel)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        if traffic is not None and traffic.poll() is None:
            traffic.terminate()
            traffic.wait(timeout=10)
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
