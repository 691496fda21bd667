"""The reference pauser on the real broker: SIGKILLed and restarted mid-stream, its command still
takes effect exactly once per decision, and resent decisions (same id) are skipped."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter

import orjson
import pytest

from agents.broker import EmbeddedBroker
from tests.e2e.harness import ROOT, produce, wait_for

pytestmark = pytest.mark.e2e
TOPIC = "marketing.kpi-decisions"


def decisions(count: int) -> list[dict]:
    now = int(time.time() * 1000)
    return [
        {
            "decision_id": f"d{i:04d}",
            "campaign_id": f"camp-{i:04d}",
            "rule": "ctr_collapse",
            "verdict": "pause",
            "seq": 1,
            "issued_at_ms": now,
            "issued_at": "now",
            "valid_until_ms": now + 3_600_000,
            "mode": "live",
            "partition": i % 4,
            "campaigns_judged": 1000,
            "evidence": {},
        }
        for i in range(count)
    ]


def start_pauser(broker_url: str, tmp_path, script: str) -> subprocess.Popen:
    log = open(tmp_path / "pauser.log", "ab")
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agents.cli",
            "pauser",
            "--mode",
            "live",
            "--exec",
            script,
            "--ledger",
            str(tmp_path / "ledger.sqlite"),
            "--broker",
            broker_url,
            "--max-pauses-per-hour",
            "100000",
            "--max-share",
            "1",
        ],
        cwd=ROOT,
        env=dict(os.environ, KPI_SESSION_TIMEOUT="6s"),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def done_lines(tmp_path) -> list[str]:
    path = tmp_path / "calls"
    return path.read_text().split() if path.exists() else []


def test_the_command_takes_effect_once_per_decision_across_a_crash(tmp_path):
    (tmp_path / "state").mkdir()
    script = tmp_path / "pause.sh"
    script.write_text(f"""#!/bin/sh
state={tmp_path}/state/$KPI_CAMPAIGN
if [ -f "$state" ]; then exit 3; fi
sleep 0.02
touch "$state"
echo "$KPI_DECISION_ID" >> {tmp_path}/calls
""")
    script.chmod(0o755)
    batch = decisions(300)
    with EmbeddedBroker() as broker:

        def send(items):
            asyncio.run(
                produce(
                    broker.bootstrap,
                    [(TOPIC, d["campaign_id"].encode(), orjson.dumps(d)) for d in items],
                )
            )

        send(batch[:200])
        pauser = start_pauser(broker.url, tmp_path, str(script))
        try:
            wait_for(
                lambda: len(done_lines(tmp_path)) >= 60, 90, "the pauser to act on 60 decisions"
            )
            os.killpg(pauser.pid, signal.SIGKILL)
            pauser.wait()
            send(batch[200:] + batch[:50])  # the rest, and a replay of the first 50 (same ids)
            pauser = start_pauser(broker.url, tmp_path, str(script))
            wait_for(lambda: len(set(done_lines(tmp_path))) >= 300, 120, "every decision acted on")
            time.sleep(2)  # the replayed 50 come after: they must change nothing
        finally:
            os.killpg(pauser.pid, signal.SIGTERM)
            pauser.wait(timeout=20)
        # The backtest reads the same 350 records and acts on nothing.
        replay = subprocess.run(
            [
                sys.executable,
                "-m",
                "agents.cli",
                "pauser",
                "replay",
                "--since",
                "1h",
                "--broker",
                broker.url,
                "--max-pauses-per-hour",
                "100000",
                "--max-share",
                "1",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert replay.returncode == 0, replay.stderr
        assert replay.stdout.splitlines()[-1] == "replay of the last 1h: skip: 50, would pause: 300"
    effects = Counter(done_lines(tmp_path))
    assert set(effects) == {d["decision_id"] for d in batch}
    assert max(effects.values()) == 1, [k for k, v in effects.items() if v > 1]
    outcomes = Counter(
        row[0]
        for row in sqlite3.connect(tmp_path / "ledger.sqlite").execute(
            "SELECT outcome FROM entries"
        )
    )
    assert outcomes["done"] + outcomes["already"] == 300 and outcomes["already"] <= 1
