"""How long from a campaign's CTR collapse to the pauser's command: the whole auto-pause path.

    python bench/incident_to_action.py [--rules FILE] [--bucket 1m] [--windows 5m,15m,1h]
                                       [--scale 1] [--timeout 2400]

Starts the embedded broker, a worker judging the rules file (default: the shipped
ops/kpi-rules.yaml), the demo traffic (camp-03's CTR collapses after --incident-after seconds) and
a live pauser whose command records the time it ran; prints incident -> decision issued ->
command run. With the shipped rules (15-minute window, ``for: 5m``) this takes ~20 minutes; a
short test rule (``--rules`` with a 1-minute window and ``--bucket 10s``) shows the plumbing's own
delay.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from agents.broker import EmbeddedBroker, free_port


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", default=str(ROOT / "ops" / "kpi-rules.yaml"))
    parser.add_argument("--bucket", default="1m")
    parser.add_argument("--windows", default="5m,15m,1h")
    parser.add_argument("--scale", default="1")
    parser.add_argument("--incident-after", default="120")
    parser.add_argument("--timeout", type=float, default=2400)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="kpi-incident-"))
    command = work / "pause.sh"
    command.write_text(
        f'#!/bin/sh\necho "$(date +%s%3N) $KPI_ACTION $KPI_CAMPAIGN $KPI_DECISION_ID"'
        f" >> {work}/actions\n"
    )
    command.chmod(0o755)
    env = dict(
        os.environ,
        KPI_RULES=args.rules,
        KPI_BUCKET=args.bucket,
        KPI_WINDOWS=args.windows,
        KPI_SESSION_TIMEOUT="6s",
        PYTHONUNBUFFERED="1",
    )
    processes = []
    with EmbeddedBroker() as broker:

        def start(name: str, *cli: str) -> None:
            log = open(work / f"{name}.log", "w")
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "agents.cli", *cli],
                    cwd=ROOT,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

        try:
            start("worker", "run", "--broker", broker.url, "--web-port", str(free_port()))
            start(
                "pauser",
                "pauser",
                "--mode",
                "live",
                "--exec",
                str(command),
                "--ledger",
                str(work / "ledger.sqlite"),
                "--broker",
                broker.url,
            )
            start(
                "traffic",
                "demo-traffic",
                "--broker",
                broker.url,
                "--scale",
                args.scale,
                "--incident-after",
                args.incident_after,
            )
            deadline = time.monotonic() + args.timeout
            incident = action = None
            while time.monotonic() < deadline and action is None:
                time.sleep(1)
                if incident is None:
                    match = re.search(r"incident_at_ms=(\d+)", (work / "traffic.log").read_text())
                    incident = int(match.group(1)) if match else None
                actions = work / "actions"
                if actions.exists() and actions.read_text().strip():
                    action = actions.read_text().splitlines()[0].split()
            if incident is None or action is None:
                print(f"no action within {args.timeout:.0f}s; logs in {work}")
                return 1
            acted_ms, verb, campaign, decision_id = int(action[0]), action[1], action[2], action[3]
            issued = re.search(
                rf"decision {decision_id}: campaign {campaign}", (work / "worker.log").read_text()
            )
            print(f"rules {args.rules}, bucket {args.bucket}, windows {args.windows}")
            print(
                f"incident (camp-03 CTR collapses) -> pauser ran `{verb} {campaign}`: "
                f"{(acted_ms - incident) / 1000:.1f} s (decision {decision_id}"
                f"{', logged by the worker' if issued else ''})"
            )
            return 0
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()


if __name__ == "__main__":
    sys.exit(main())
