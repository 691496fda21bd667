"""The reference pauser on the real broker: SIGKILLed and restarted mid-stream, its command still
takes effect exactly once per decision, and resent decisions (same id) are skipped."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections import Counter

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.broker import EmbeddedBroker, free_port
from autopause.ledger import Ledger
from tests.agents.test_pauser import RACER, gone
from tests.e2e.harness import ROOT, produce, samples_of, total, wait_for

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


def start_pauser(broker_url: str, tmp_path, script: str, *extra: str) -> subprocess.Popen:
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
            *extra,
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


async def committed_total(bootstrap: str, group: str) -> int:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    await consumer.start()
    try:
        offsets = [await consumer.committed(TopicPartition(TOPIC, p)) for p in range(4)]
    finally:
        await consumer.stop()
    return sum(o or 0 for o in offsets)


def test_a_held_pauser_stays_in_its_group_says_why_and_refuses_poison(tmp_path):
    """Poison first (not JSON, a NUL in the campaign id): refused, and the pauser goes on. Then a
    good decision held by the kill switch for well past max.poll.interval.ms (3 s): the pauser
    reports the hold, stays in its group, and acts and commits once the switch is gone."""
    script = tmp_path / "pause.sh"
    script.write_text(f'#!/bin/sh\necho "$KPI_DECISION_ID" >> {tmp_path}/calls\n')
    script.chmod(0o755)
    stop = tmp_path / "stop"
    stop.write_text("")
    good = decisions(1)[0]
    poison = {**decisions(2)[1], "campaign_id": "camp\x00-1"}
    port = free_port()
    with EmbeddedBroker() as broker:
        asyncio.run(
            produce(
                broker.bootstrap,
                [(TOPIC, b"k", value) for value in (b"{oops", orjson.dumps(poison))]
                + [(TOPIC, b"k", orjson.dumps(good))],
            )
        )
        pauser = start_pauser(
            broker.url,
            tmp_path,
            str(script),
            "--kill-switch",
            str(stop),
            "--metrics-port",
            str(port),
            "--max-poll-interval",
            "3s",
        )

        def metrics():
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    return samples_of(r.read().decode())
            except OSError:
                return {}

        try:
            wait_for(
                lambda: total(metrics(), "kpi_pauser_held", reason="kill_switch") == 1,
                60,
                "the pauser to report the kill switch hold",
            )
            wait_for(
                lambda: total(metrics(), "kpi_pauser_held_seconds") >= 9,
                30,
                "a hold three times max.poll.interval.ms",
            )
            assert done_lines(tmp_path) == []
            assert total(metrics(), "kpi_pauser_decisions_total", outcome="refused") == 2
            stop.unlink()
            wait_for(lambda: done_lines(tmp_path) == [good["decision_id"]], 30, "the pause")
            wait_for(
                lambda: asyncio.run(committed_total(broker.bootstrap, "kpi-pauser")) == 3,
                30,
                "all three committed",
            )
            after = metrics()
            assert total(after, "kpi_pauser_held") == 0
            assert total(after, "kpi_pauser_decisions_total", outcome="done") == 1
        finally:
            os.killpg(pauser.pid, signal.SIGTERM)
            pauser.wait(timeout=20)
    log = (tmp_path / "pauser.log").read_text()
    assert "could not commit" not in log, log  # never left the group while held
    rows = sqlite3.connect(tmp_path / "ledger.sqlite").execute(
        "SELECT outcome, reason FROM entries ORDER BY received_at_ms"
    )
    assert [(o, r.split(":")[0]) for o, r in rows] == [
        ("refused", "not JSON"),
        ("refused", "campaign_id holds U+0000 (a control character)"),
        ("done", ""),
    ]


def test_a_stopped_pauser_ends_its_running_commands_process_group(tmp_path):
    """SIGTERM while CMD runs: the pauser cancels and ends CMD's whole group (CMD runs in a
    session of its own, so nothing else would reach its children)."""
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\nsleep 120 &\necho $! > {tmp_path}/child\nwait\n")
    script.chmod(0o755)
    with EmbeddedBroker() as broker:
        d = decisions(1)[0]
        asyncio.run(produce(broker.bootstrap, [(TOPIC, b"k", orjson.dumps(d))]))
        pauser = start_pauser(broker.url, tmp_path, str(script))
        try:
            child = tmp_path / "child"
            wait_for(lambda: child.exists() and child.read_text().strip(), 60, "CMD's child")
            pid = int(child.read_text())
            os.kill(pauser.pid, signal.SIGTERM)
            assert pauser.wait(timeout=20) == 0
        finally:
            if pauser.poll() is None:
                os.killpg(pauser.pid, signal.SIGKILL)
        wait_for(lambda: gone(pid), 5, "the child to end")


def unshare_pid() -> list[str] | str:
    """The prefix that runs a command in a pid namespace of its own, or why it cannot."""
    if shutil.which("unshare") is None:
        return "unshare is not installed"
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, text=True
    )
    if probe.returncode != 0:
        return f"unshare --pid not permitted here: {probe.stderr.strip()}"
    return ["unshare", "--pid", "--fork", "--mount-proc"]


def faketime_ahead() -> list[str] | str:
    """The prefix that runs a command with its wall clock 200 s ahead, or why it cannot."""
    if shutil.which("faketime") is None:
        return "faketime is not installed (scripts/install-ops-tools.sh installs it)"
    probe = subprocess.run(
        ["faketime", "-f", "+200s", sys.executable, "-c", "import time; print(time.time())"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0 or float(probe.stdout or 0) - time.time() < 150:
        return f"faketime does not move the clock here: {probe.stderr.strip()}"
    return ["faketime", "-f", "+200s"]


@pytest.mark.parametrize(
    "prefix",
    [unshare_pid, faketime_ahead],
    ids=["B in its own pid namespace", "B's wall clock 200 s ahead"],
)
def test_a_second_pauser_with_the_same_hostname_never_runs_a_running_command_again(
    tmp_path, prefix
):
    """Pauser A claims a decision and runs a slow CMD; pauser B, same hostname, reaches the same
    decision meanwhile from another pid namespace (where A's pid does not exist) or with its
    wall clock past A's lease. CMD runs once; the row keeps A's outcome."""
    wrap = prefix()
    if isinstance(wrap, str):
        pytest.skip(wrap)
    script = tmp_path / "slow.sh"
    script.write_text(
        f"#!/bin/sh\necho $$ >> {tmp_path}/calls\n"
        f"if [ -e {tmp_path}/paused ]; then exit 3; fi\ntouch {tmp_path}/paused\nsleep 3\n"
    )
    script.chmod(0o755)
    ledger = tmp_path / "ledger.sqlite"
    Ledger(ledger).close()  # the schema, before the race

    def racer(*wrapper: str, go: float) -> subprocess.Popen:
        return subprocess.Popen(
            [*wrapper, sys.executable, "-c", RACER, str(script), str(ledger), str(go)],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )

    a = racer(go=0)
    try:
        wait_for(lambda: done_lines(tmp_path), 30, "A's command to start")
        b = racer(*wrap, go=0)  # while A's command runs
        outcomes = (a.communicate(timeout=60)[0].strip(), b.communicate(timeout=60)[0].strip())
    finally:
        for process in (a, locals().get("b")):
            if process is not None and process.poll() is None:
                process.kill()
    assert outcomes == ("done", "skipped")
    assert len(done_lines(tmp_path)) == 1
    row = sqlite3.connect(ledger).execute("SELECT outcome, prior_state, exit_code FROM entries")
    assert row.fetchall() == [("done", "running", 0)]
