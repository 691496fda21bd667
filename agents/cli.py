"""``kpi-monitor``: run the worker, run the embedded broker, publish events, run the demo, run
the reference auto-pauser."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

from stream.durations import parse_duration
from stream.settings import Settings, SettingsError, settings_from_env

from .broker import EmbeddedBroker
from .topics import TopicLayoutError, ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kpi-monitor", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run", help="run a worker (starts the embedded broker if none is set)"
    )
    run.add_argument(
        "--broker", help="kafka://host:port (env KPI_BROKER); default: embedded broker"
    )
    run.add_argument("--web-port", type=int, help="port of /metrics and /kpis (env KPI_WEB_PORT)")
    run.add_argument("--web-host", help="bind address (env KPI_WEB_HOST, default 127.0.0.1)")
    run.add_argument(
        "--demo",
        action="store_true",
        help="also publish realistic synthetic traffic with scripted incidents",
    )
    run.add_argument("--loglevel", default=os.environ.get("KPI_LOGLEVEL", "warning"))

    broker = commands.add_parser("broker", help="run the embedded broker alone and print its URL")
    broker.add_argument("--port", type=int, default=0)

    send = commands.add_parser("send", help="publish events from a JSON-lines file to their topics")
    send.add_argument("file", help="JSON lines: one event object (or array of events) per line")
    send.add_argument("--broker", help="kafka://host:port (env KPI_BROKER)")

    plans = commands.add_parser(
        "plans",
        help="campaign plans (targets, budgets, flight, time zone, owner): load a CSV, JSON-lines "
        "or YAML file onto the plans topic, show the plans in force, remove one",
    )
    plans.add_argument("action", choices=["load", "show", "remove"])
    plans.add_argument(
        "target",
        nargs="?",
        help="load: the plan file; show: a campaign (default: all); remove: a campaign",
    )
    plans.add_argument("--channel", help="remove: the channel default to remove")
    plans.add_argument(
        "--dry-run", action="store_true", help="load: check the file, publish nothing"
    )
    plans.add_argument("--json", action="store_true", help="show: one JSON plan per line")
    plans.add_argument("--broker", help="kafka://host:port (env KPI_BROKER)")

    rules = commands.add_parser(
        "rules",
        help="generate (or check) the Prometheus rules, Grafana "
        "alerting and dashboards from ops/kpi-rules.yaml",
    )
    rules.add_argument("action", choices=["generate", "check"])
    rules.add_argument("--root", default=".", help="project root holding ops/ and grafana/")

    backtest = commands.add_parser(
        "backtest",
        help="what a rules file would have decided over the events on the topics (nothing "
        "is written); with --compare, only what differs from another rules file",
    )
    backtest.add_argument("--rules", required=True, help="the rules file to judge by")
    backtest.add_argument("--compare", help="an older rules file: print only the differences")
    backtest.add_argument(
        "--plans", help="a plan file (CSV, JSON lines, YAML) instead of the plans topic"
    )
    backtest.add_argument(
        "--since", default="7d", help="judge the events of this last period (default 7d)"
    )
    backtest.add_argument(
        "--tick",
        help="judge every this long of event time (default: the bucket, or "
        "KPI_DECISION_INTERVAL if longer)",
    )
    backtest.add_argument("--json", action="store_true", help="one decision per line, as JSON")
    backtest.add_argument("--broker", help="kafka://host:port (env KPI_BROKER)")

    sink = commands.add_parser(
        "alert-sink", help="print alerts POSTed to /alerts (webhook receiver)"
    )
    sink.add_argument("--host", default="127.0.0.1")
    sink.add_argument("--port", type=int, default=8080)

    demo = commands.add_parser("demo-traffic", help="publish demo traffic to a running broker")
    demo.add_argument("--broker", help="kafka://host:port (env KPI_BROKER)")
    demo.add_argument(
        "--seconds", type=float, default=0, help="stop after this long (0: run forever)"
    )
    demo.add_argument("--scale", type=float, default=1.0, help="multiply every campaign's traffic")
    demo.add_argument(
        "--incident-after", type=float, default=120, help="seconds until the incidents"
    )

    pauser = commands.add_parser(
        "pauser",
        help="the reference auto-pauser: act on the decisions topic, exactly once each",
        description="run (default): act on decisions; history: the audit trail; undo ID: restore "
        "what a decision changed; replay: what the last --since of decisions would do",
    )
    pauser.add_argument(
        "action", nargs="?", default="run", choices=["run", "history", "undo", "replay"]
    )
    pauser.add_argument("decision_id", nargs="?", help="for undo: the decision to undo")
    pauser.add_argument(
        "--exec",
        dest="exec_command",
        help="command run per decision (env KPI_DECISION_ID, KPI_CAMPAIGN, "
        "KPI_ACTION; decision JSON on stdin; exit 0 done, 3 already, else failed)",
    )
    pauser.add_argument(
        "--mode",
        choices=["shadow", "live"],
        default="shadow",
        help="shadow (default) logs what it would do; live runs the command",
    )
    pauser.add_argument("--ledger", default="kpi-pauser.sqlite", help="SQLite audit ledger")
    pauser.add_argument("--max-pauses-per-hour", type=int, default=20)
    pauser.add_argument(
        "--max-share",
        type=float,
        default=0.2,
        help="most of the campaigns seen that this pauser may hold paused",
    )
    pauser.add_argument(
        "--min-campaigns",
        type=int,
        help="--max-share applies only from this many paused campaigns on "
        "(default: KPI_BREAKER_MIN_CAMPAIGNS, as the workers' breaker)",
    )
    pauser.add_argument("--allow", help="act only on campaigns matching this regular expression")
    pauser.add_argument(
        "--metrics-port", type=int, help="serve Prometheus metrics (/metrics) on this port"
    )
    pauser.add_argument(
        "--metrics-host", default="127.0.0.1", help="address for --metrics-port (default loopback)"
    )
    pauser.add_argument(
        "--max-poll-interval",
        default="5m",
        help="the consumer's max.poll.interval.ms (a held pauser keeps polling within it)",
    )
    pauser.add_argument(
        "--kill-switch",
        default="kpi-pauser.stop",
        help="while this file exists, act on nothing (and consume nothing)",
    )
    pauser.add_argument(
        "--max-errors", type=int, default=5, help="failures in a row before a decision is given up"
    )
    pauser.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        help="seconds CMD may run per attempt; then its whole process group is ended",
    )
    pauser.add_argument("--group", default="kpi-pauser", help="consumer group")
    pauser.add_argument("--broker", help="kafka://host:port (env KPI_BROKER)")
    pauser.add_argument("--since", default="7d", help="for replay: how far back")
    pauser.add_argument("--campaign", help="for history: one campaign only")
    pauser.add_argument("--limit", type=int, default=100, help="for history: newest entries shown")
    pauser.add_argument("--seconds", type=float, help="stop after this long (default: run forever)")

    autopause = commands.add_parser(
        "autopause", help="operator commands for the auto-pause decisions: release a hold"
    )
    autopause.add_argument("action", choices=["release"])
    autopause.add_argument("campaign", help="the campaign whose held rules run again")
    autopause.add_argument("--rule", help="release this rule only (default: every held rule)")
    autopause.add_argument(
        "--worker",
        action="append",
        default=[],
        help="a worker's base URL, e.g. http://10.0.0.5:6066; repeat for each worker "
        "(default: KPI_WEB_HOST:KPI_WEB_PORT)",
    )

    args = parser.parse_args(argv)
    try:
        if args.command == "run":
            settings = settings_from_env(
                broker=args.broker, web_port=args.web_port, web_host=args.web_host
            )
            return run_worker(settings, demo=args.demo, loglevel=args.loglevel)
        if args.command == "broker":
            return run_broker(args.port)
        if args.command == "send":
            from .send import send_file

            settings = settings_from_env(broker=args.broker)
            return asyncio.run(send_file(settings, args.file))
        if args.command == "plans":
            return run_plans(args)
        if args.command == "backtest":
            return run_backtest(args)
        if args.command == "alert-sink":
            from .alert_sink import run as run_sink

            return run_sink(args.host, args.port)
        if args.command == "rules":
            from rulebook.generate import main as generate

            return generate(args.action, args.root)
        if args.command == "pauser":
            return run_pauser(args)
        if args.command == "autopause":
            from .release_cli import release

            settings = settings_from_env()
            return asyncio.run(release(settings, args.campaign, args.rule, args.worker))
        if args.command == "demo-traffic":
            from .demo import run_traffic

            settings = settings_from_env(broker=args.broker)
            asyncio.run(
                run_traffic(
                    settings,
                    seconds=args.seconds,
                    scale=args.scale,
                    incident_after_s=args.incident_after,
                )
            )
            return 0
    except SettingsError as exc:
        print(f"kpi-monitor: bad setting: {exc}", file=sys.stderr)
        return 2
    except TopicLayoutError as exc:
        print(f"kpi-monitor: refusing to start: {exc}", file=sys.stderr)
        return 2
    return 1


def run_plans(args: argparse.Namespace) -> int:
    from . import plans_cli

    settings = settings_from_env(broker=args.broker)
    if args.action == "load":
        if not args.target:
            print("kpi-monitor plans load: which FILE?", file=sys.stderr)
            return 2
        return asyncio.run(plans_cli.load(settings, args.target, dry_run=args.dry_run))
    if args.action == "show":
        return asyncio.run(plans_cli.show(settings, args.target, as_json=args.json))
    if bool(args.target) == bool(args.channel):
        print("kpi-monitor plans remove: a CAMPAIGN or --channel NAME", file=sys.stderr)
        return 2
    return asyncio.run(plans_cli.remove(settings, args.target, args.channel))


def run_backtest(args: argparse.Namespace) -> int:
    from . import backtest_cli

    settings = settings_from_env(broker=args.broker)
    if settings.broker is None:
        print("kpi-monitor backtest: set KPI_BROKER or --broker", file=sys.stderr)
        return 2
    return asyncio.run(
        backtest_cli.run(
            settings,
            args.rules,
            since=args.since,
            compare=args.compare,
            plans=args.plans,
            tick=args.tick,
            as_json=args.json,
        )
    )


def run_pauser(args: argparse.Namespace) -> int:
    from autopause.policy import Limits

    from . import pauser, pauser_audit

    logging.basicConfig(level="WARNING", format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.action == "history":
        return pauser_audit.history(args.ledger, args.campaign, args.limit)
    if args.action in ("run", "undo") and not args.exec_command:
        print(f"kpi-monitor pauser {args.action}: --exec CMD is required", file=sys.stderr)
        return 2
    try:
        max_poll_interval_ms = int(parse_duration(args.max_poll_interval) * 1000)
    except ValueError as exc:
        print(f"kpi-monitor pauser: --max-poll-interval: {exc}", file=sys.stderr)
        return 2
    settings = settings_from_env(broker=args.broker)
    min_campaigns = (
        settings.breaker_min_campaigns if args.min_campaigns is None else args.min_campaigns
    )
    if (
        not 0 < args.max_share <= 1
        or args.max_pauses_per_hour < 0
        or args.max_errors < 1
        or min_campaigns < 1
        or args.timeout <= 0
        or not 0 < (args.metrics_port or 1) < 65536
    ):
        print(
            "kpi-monitor pauser: --max-share must be within (0, 1], --max-pauses-per-hour >= 0, "
            "--max-errors >= 1, --min-campaigns >= 1, --timeout > 0, --metrics-port 1-65535",
            file=sys.stderr,
        )
        return 2
    if args.allow:
        try:
            re.compile(args.allow)
        except re.error as exc:
            print(
                f"kpi-monitor pauser: --allow is not a regular expression: {exc}", file=sys.stderr
            )
            return 2
    config = pauser.PauserConfig(
        command=args.exec_command or "",
        ledger=args.ledger,
        group=args.group,
        limits=Limits(
            args.mode, args.allow, args.max_pauses_per_hour, args.max_share, min_campaigns
        ),
        kill_switch=args.kill_switch,
        max_errors=args.max_errors,
        timeout_seconds=args.timeout,
        metrics_port=args.metrics_port,
        metrics_host=args.metrics_host,
        max_poll_interval_ms=max_poll_interval_ms,
    )
    if args.action == "undo":
        if not args.decision_id:
            print("kpi-monitor pauser undo: which DECISION_ID?", file=sys.stderr)
            return 2
        return asyncio.run(pauser_audit.undo(config, args.decision_id))
    if settings.broker is None:
        print(
            "kpi-monitor pauser: set KPI_BROKER or --broker (the broker the workers use)",
            file=sys.stderr,
        )
        return 2
    if args.action == "replay":
        return asyncio.run(pauser_audit.replay(settings, config, args.since))
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):  # Ctrl-C, SIGTERM
        asyncio.run(pauser.run(settings, config, stop_after=args.seconds))
    return 0


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

    logging.basicConfig(
        level=loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    embedded = None
    traffic = None
    helpers: list[subprocess.Popen] = []
    if settings.broker is None:
        embedded = EmbeddedBroker().start()
        settings = settings.replace(broker=embedded.url)
        print(
            f"kpi-monitor: no broker configured (KPI_BROKER / --broker): started the embedded "
            f"broker at {embedded.url} (memory only: its data is gone when it stops)",
            flush=True,
        )
    try:
        began = time.time()
        partitions = asyncio.run(ensure_topics(settings))
        settings = settings.replace(partitions=partitions)
        topics_done = time.time()
        if settings.local_store:
            from .app import STATE_TABLE, data_dir, state_identity
            from .local_store import local_path, verify

            verified = verify(
                settings, state_identity(settings), local_path(data_dir(settings), STATE_TABLE)
            )
        checked = time.time()
        monitor = create_app(settings)
        if settings.local_store and verified.set_aside is not None:
            from .local_store import LocalStore

            if isinstance(monitor.table.data, LocalStore):  # counted with the store's own
                monitor.table.data.count_fallback(verified.set_aside)
        if monitor.prewarm is not None:  # while Faust starts and joins the group
            monitor.prewarm.start()
        monitor.startup = {
            "began_at_ms": round(began * 1000),
            "topics_seconds": round(topics_done - began, 3),
            "store_check_seconds": round(checked - topics_done, 3),
            "app_created_at_ms": round(time.time() * 1000),
        }
        if demo:
            traffic = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "agents.cli",
                    "demo-traffic",
                    "--broker",
                    settings.broker or "",
                ],
                start_new_session=True,
            )
            if settings.decisions:
                # A shadow pauser beside the demo: it prints what it would pause, runs nothing.
                ledger = os.path.join(tempfile.mkdtemp(prefix="kpi-demo-pauser-"), "ledger.sqlite")
                helpers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "agents.cli",
                            "pauser",
                            "--mode",
                            "shadow",
                            "--exec",
                            "true",
                            "--ledger",
                            ledger,
                            "--broker",
                            settings.broker or "",
                        ],
                        start_new_session=True,
                    )
                )
        print(
            f"kpi-monitor: live page at http://{settings.web_host}:{settings.web_port}/ "
            f"(metrics at /metrics, JSON at /kpis and /decisions)",
            flush=True,
        )
        worker.run(monitor.app, loglevel=loglevel)
    except SystemExit as exc:
        return int(exc.code or 0)
    finally:
        for helper in [traffic, *helpers]:
            if helper is not None and helper.poll() is None:
                helper.terminate()
                helper.wait(timeout=10)
        if embedded is not None:
            embedded.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
