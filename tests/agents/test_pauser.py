"""The pauser's handling of one decision with a real command: exactly once, retries, give-up,
undo, history."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import os
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from agents import pauser, pauser_audit
from agents.command import run_command
from agents.pauser_metrics import HOLD_REASONS, PauserMetrics
from autopause.ledger import Ledger
from autopause.policy import Limits
from stream.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def decision(campaign="c1", seq=1, verdict="pause"):
    now = int(time.time() * 1000)
    return {
        "decision_id": f"{campaign}-{seq}",
        "campaign_id": campaign,
        "rule": "ctr_collapse",
        "verdict": verdict,
        "seq": seq,
        "issued_at_ms": now,
        "issued_at": "now",
        "valid_until_ms": now + 600_000,
        "mode": "live",
        "partition": 0,
        "campaigns_judged": 10,
        "evidence": {"kpi": "ctr", "value": 0.001, "op": "<", "threshold": 0.005, "window": "15m"},
    }


def command(tmp_path, exit_codes="0"):
    """A command that logs each call and exits with the next of ``exit_codes``."""
    script = tmp_path / "cmd.sh"
    script.write_text(f"""#!/bin/sh
n=$(cat {tmp_path}/calls 2>/dev/null | wc -l)
echo "$KPI_ACTION $KPI_CAMPAIGN $KPI_DECISION_ID $KPI_UNDO_OF $(cat | head -c 40)" >> {tmp_path}/calls
set -- {exit_codes}
shift $(( n < $# ? n : $# - 1 ))
exit $1
""")
    script.chmod(0o755)
    return str(script)


def calls(tmp_path):
    path = tmp_path / "calls"
    return path.read_text().splitlines() if path.exists() else []


def config(tmp_path, cmd, **limits):
    return pauser.PauserConfig(
        command=cmd,
        ledger=str(tmp_path / "ledger.sqlite"),
        limits=Limits("live", **limits),
        kill_switch=str(tmp_path / "stop"),
        max_errors=3,
        retry_seconds=0.01,
    )


def test_acts_once_per_decision_even_when_handed_it_twice(tmp_path):
    cfg = config(tmp_path, command(tmp_path))
    ledger = Ledger(cfg.ledger)
    d = decision()
    assert asyncio.run(pauser.handle(cfg, ledger, d)) == "done"
    assert asyncio.run(pauser.handle(cfg, ledger, d)) == "skipped"
    assert len(calls(tmp_path)) == 1
    action, campaign, decision_id, undo_of, stdin = calls(tmp_path)[0].split(" ", 4)
    assert (action, campaign, decision_id, undo_of) == ("pause", "c1", "c1-1", "")
    assert stdin.startswith('{"decision_id":"c1-1"')  # the decision JSON came on stdin


def test_a_started_action_is_run_again_after_a_crash(tmp_path):
    cfg = config(tmp_path, command(tmp_path, "3"))
    ledger = Ledger(cfg.ledger)
    d = decision()
    ledger.record(d, 0, "started", action="pause", attempts=1)  # killed while the command ran
    # The command says "already": the killed attempt had paused it, so the pause is this
    # pauser's own, and its resume will act.
    assert asyncio.run(pauser.handle(cfg, ledger, d)) == "done"
    entry = ledger.get(d["decision_id"])
    assert entry.reason == "already: an earlier attempt had run it"
    assert entry.prior_state == "running"  # undo resumes it
    assert ledger.pausing_rules(d["campaign_id"]) == {d["rule"]}


def test_already_without_an_earlier_attempt_is_not_this_pausers_pause(tmp_path):
    cfg = config(tmp_path, command(tmp_path, "3"))  # a human paused it first
    ledger = Ledger(cfg.ledger)
    d = decision()
    assert asyncio.run(pauser.handle(cfg, ledger, d)) == "already"
    assert ledger.pausing_rules(d["campaign_id"]) == frozenset()


@pytest.mark.parametrize("cause", ["expiry", "kill switch"])
def test_no_retry_after_the_decision_expires_or_the_kill_switch_appears(tmp_path, cause):
    cfg = config(tmp_path, command(tmp_path, "1"))
    ledger = Ledger(cfg.ledger)
    late = decision("c3")
    if cause == "expiry":
        late["valid_until_ms"] = int(time.time() * 1000) + 300  # passes during the back-off
        cfg = dataclasses.replace(cfg, retry_seconds=0.5)
    else:  # the operator stops the pauser while the first attempt fails
        cfg = dataclasses.replace(cfg, command=f"touch {cfg.kill_switch}; exit 1")
    assert asyncio.run(pauser.handle(cfg, ledger, late)) == "given_up"
    entry = ledger.get("c3-1")
    assert entry.outcome == "given_up" and "no more attempts" in entry.reason
    assert entry.attempts == 1  # one run of the command, not max_errors


def test_failures_are_retried_with_the_same_id_then_given_up(tmp_path):
    cfg = config(tmp_path, command(tmp_path, "1 1 0"))
    ledger = Ledger(cfg.ledger)
    assert asyncio.run(pauser.handle(cfg, ledger, decision())) == "done"
    assert [c.split()[2] for c in calls(tmp_path)] == ["c1-1"] * 3
    cfg = config(tmp_path, command(tmp_path, "1"))
    assert asyncio.run(pauser.handle(cfg, ledger, decision("c2"))) == "given_up"
    assert ledger.get("c2-1").outcome == "given_up"


def test_waits_while_the_kill_switch_exists(tmp_path):
    cfg = config(tmp_path, command(tmp_path))
    ledger = Ledger(cfg.ledger)
    (tmp_path / "stop").write_text("")

    async def scenario():
        task = asyncio.create_task(pauser.handle(cfg, ledger, decision()))
        await asyncio.sleep(1.5)
        assert not task.done() and calls(tmp_path) == []
        (tmp_path / "stop").unlink()
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(scenario()) == "done"


def test_undo_restores_the_prior_state_and_history_tells_why(tmp_path):
    cfg = config(tmp_path, command(tmp_path))
    ledger = Ledger(cfg.ledger)
    asyncio.run(pauser.handle(cfg, ledger, decision()))
    asyncio.run(pauser.handle(cfg, ledger, decision("c2", verdict="unknown")))
    ledger.close()
    assert asyncio.run(pauser_audit.undo(cfg, "c1-1")) == 0
    assert calls(tmp_path)[-1].split()[:4] == ["resume", "c1", "c1-1", "c1-1"]
    assert asyncio.run(pauser_audit.undo(cfg, "c1-1")) == 1  # undone already
    out = io.StringIO()
    pauser_audit.history(cfg.ledger, None, 10, out)
    lines = out.getvalue().splitlines()
    assert any(
        "c1-1" in line and "undone" in line and "ctr=0.001 < 0.005 on 15m" in line for line in lines
    )
    assert any("c2-1" in line and "unknown -> noted" in line for line in lines)


def test_history_and_undo_understand_notify_and_rest_of_day_pauses(tmp_path):
    cfg = config(tmp_path, command(tmp_path))
    ledger = Ledger(cfg.ledger)
    stop_loss = decision("burner")
    stop_loss["resume_at"] = "2026-12-04T00:00:00.000Z"
    stop_loss["evidence"] = {
        "kpi": "spend",
        "combine": "all",
        "conditions": [
            {
                "kpi": "spend",
                "value": 90.0,
                "op": ">",
                "threshold": 80.0,
                "target": "cpa",
                "factor": 2.0,
                "window": "today",
            },
            {"kpi": "sales", "value": 0, "op": "<", "threshold": 1.0, "window": "today"},
        ],
    }
    notice = decision("quiet", verdict="notify")
    asyncio.run(pauser.handle(cfg, ledger, stop_loss))
    asyncio.run(pauser.handle(cfg, ledger, notice))
    ledger.close()
    out = io.StringIO()
    pauser_audit.history(cfg.ledger, None, 10, out)
    text = out.getvalue()
    assert "until 2026-12-04T00:00:00.000Z" in text
    assert "spend=90.0 > 80.0 (2.0 x target cpa) on today and sales=0 < 1.0 on today" in text
    assert "quiet-1" in text and "notify -> noted" in text
    assert [c.split()[:2] for c in calls(tmp_path)] == [["pause", "burner"]]  # notify: nothing
    assert asyncio.run(pauser_audit.undo(cfg, "quiet-1")) == 1
    assert asyncio.run(pauser_audit.undo(cfg, "burner-1")) == 0
    assert calls(tmp_path)[-1].split()[:2] == ["resume", "burner"]


def test_command_line(tmp_path, capsys):
    from agents.cli import main

    assert main(["pauser", "--ledger", str(tmp_path / "l.sqlite")]) == 2  # no --exec
    assert "--exec CMD is required" in capsys.readouterr().err
    assert main(["pauser", "--exec", "true", "--max-share", "2"]) == 2
    assert main(["pauser", "--exec", "true", "--min-campaigns", "0"]) == 2
    assert main(["pauser", "--exec", "true", "--timeout", "0"]) == 2
    assert main(["pauser", "--exec", "true", "--max-poll-interval", "soon"]) == 2
    assert main(["pauser", "undo", "--exec", "true", "--ledger", str(tmp_path / "l.sqlite")]) == 2
    assert main(["pauser", "history", "--ledger", str(tmp_path / "l.sqlite")]) == 0


# -- issue 14: poison and malformed messages, timeouts, two pausers, small accounts -------------


def message(value, offset=7):
    """A record as the consumer hands it over."""
    body = value if value is None or isinstance(value, bytes) else orjson.dumps(value)
    return ConsumerRecord(
        "marketing.kpi-decisions", 2, offset, 0, 0, None, body, None, 0, len(body or b""), ()
    )


def without(name):
    d = decision("bad")
    del d[name]
    return d


def having(**fields):
    return {**decision("bad"), **fields}


BAD_MESSAGES = [
    ("not JSON", b"{not json", "not JSON"),
    ("empty (tombstone)", None, "empty message"),
    ("a JSON array", [1, 2], "not a JSON object"),
    ("no campaign_id", without("campaign_id"), "campaign_id not a string"),
    ("no valid_until_ms", without("valid_until_ms"), "valid_until_ms is not an integer"),
    ("no verdict", without("verdict"), "verdict is not a string"),
    ("a string seq", having(seq="3"), "seq is not an integer"),
    ("a boolean seq", having(seq=True), "seq is not an integer"),
    ("a seq SQLite cannot hold", having(seq=2**63), "seq is not an integer"),
    ("an integer decision_id", having(decision_id=42), "decision_id not a string"),
    ("a NUL in campaign_id", having(campaign_id="camp\x00-1"), "campaign_id holds U+0000"),
    ("a newline in decision_id", having(decision_id="d\n1"), "decision_id holds U+000A"),
    ("a DEL in rule", having(rule="ctr\x7f"), "rule holds U+007F"),
    ("an empty campaign_id", having(campaign_id=""), "campaign_id length 0"),
    ("a 257-character campaign_id", having(campaign_id="c" * 257), "campaign_id length 257"),
    ("a string campaigns_judged", having(campaigns_judged="10"), "campaigns_judged is not"),
    ("a negative partition", having(partition=-1), "partition is not"),
    ("a numeric mode", having(mode=1), "mode is not a string"),
    ("evidence that is not an object", having(evidence=[1], seq="x"), "seq is not an integer"),
]


@pytest.mark.parametrize("name, value, reason", BAD_MESSAGES, ids=[r[0] for r in BAD_MESSAGES])
def test_a_bad_message_is_refused_and_the_next_good_one_acted_on(tmp_path, name, value, reason):
    cfg = config(tmp_path, command(tmp_path))
    ledger = Ledger(cfg.ledger)
    assert asyncio.run(pauser.handle_message(cfg, ledger, message(value, 7))) == "refused"
    entry = ledger.get("marketing.kpi-decisions:2:7")
    assert entry is not None and entry.outcome == "refused" and reason in entry.reason, entry
    raw = message(value).value
    assert entry.body == (raw or b"").decode("utf-8", "backslashreplace")  # kept as it came
    assert calls(tmp_path) == []
    # redelivered (no commit before a crash): recorded once, still refused
    assert asyncio.run(pauser.handle_message(cfg, ledger, message(value, 7))) == "refused"
    assert asyncio.run(pauser.handle_message(cfg, ledger, message(decision(), 8))) == "done"
    assert [c.split()[:3] for c in calls(tmp_path)] == [["pause", "c1", "c1-1"]]
    assert len(ledger.history()) == 2
    out = io.StringIO()
    assert pauser_audit.history(cfg.ledger, None, 10, out) == 0
    assert any(
        "marketing.kpi-decisions:2:7 " in line and f"-> refused ({entry.reason})" in line
        for line in out.getvalue().splitlines()
    )


def test_an_unexpected_failure_is_recorded_and_the_command_not_run_twice(tmp_path, monkeypatch):
    cfg = config(tmp_path, command(tmp_path))
    ledger = Ledger(cfg.ledger)
    real = pauser.run_command

    async def acts_then_breaks(*args, **kwargs):
        await real(*args, **kwargs)
        raise RuntimeError("the pauser broke after the command ran")

    monkeypatch.setattr(pauser, "run_command", acts_then_breaks)
    metrics = PauserMetrics()
    assert asyncio.run(
        pauser.handle_message(cfg, ledger, message(decision()), metrics=metrics)
    ) == ("error")
    entry = ledger.get("c1-1")
    assert entry.outcome == "error" and "RuntimeError: the pauser broke" in entry.reason
    monkeypatch.setattr(pauser, "run_command", real)
    assert asyncio.run(pauser.handle_message(cfg, ledger, message(decision()))) == "skipped"
    assert asyncio.run(pauser.handle_message(cfg, ledger, message(decision("c2")))) == "done"
    assert len(calls(tmp_path)) == 2  # c1 once, c2 once
    assert (
        metrics.registry.get_sample_value("kpi_pauser_decisions_total", {"outcome": "error"}) == 1
    )


def gone(pid: int) -> bool:
    """Ended: no such process, or a zombie nobody reaped yet (it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


def spawning_command(tmp_path, trap_term=False):
    """A shell that starts a long child (ignoring SIGTERM if asked) and waits for it."""
    child = "sh -c 'trap \"\" TERM; exec sleep 30'" if trap_term else "sleep 30"
    return f"{child} & echo $! > {tmp_path}/child; wait"


def child_pid(tmp_path) -> int:
    path = tmp_path / "child"
    for _ in range(100):
        if path.exists() and path.read_text().strip():
            return int(path.read_text())
        time.sleep(0.02)
    raise AssertionError("the command never started its child")


@pytest.mark.parametrize("trap_term", [False, True], ids=["child ends on TERM", "child needs KILL"])
def test_a_timeout_ends_the_commands_whole_process_group(tmp_path, trap_term):
    start = time.monotonic()
    code = asyncio.run(
        run_command(spawning_command(tmp_path, trap_term), decision(), "pause", 0.5, kill_grace=0.5)
    )
    assert code == -1 and time.monotonic() - start < 5
    assert gone(child_pid(tmp_path))


def test_a_cancelled_pauser_ends_the_commands_process_group(tmp_path):
    async def scenario():
        task = asyncio.create_task(
            run_command(spawning_command(tmp_path), decision(), "pause", 60, kill_grace=0.5)
        )
        await asyncio.sleep(0.5)
        pid = child_pid(tmp_path)
        assert not gone(pid)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        return pid

    assert gone(asyncio.run(scenario()))


RACER = """
import asyncio, sys, time
from agents import pauser
from autopause.ledger import Ledger
from autopause.policy import Limits
cfg = pauser.PauserConfig(command=sys.argv[1], ledger=sys.argv[2], limits=Limits("live"),
                          kill_switch=sys.argv[2] + ".stop", max_errors=1)
decision = {"decision_id": "d-1", "campaign_id": "c1", "rule": "r", "verdict": "pause", "seq": 1,
            "valid_until_ms": int(time.time() * 1000) + 600_000, "mode": "live",
            "partition": 0, "campaigns_judged": 100}
while time.time() < float(sys.argv[3]):  # start together
    time.sleep(0.001)
print(asyncio.run(pauser.handle(cfg, Ledger(cfg.ledger), decision)))
"""


def test_two_pausers_on_one_ledger_run_the_command_once(tmp_path):
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\necho $$ >> {tmp_path}/calls\nsleep 1\n")
    script.chmod(0o755)
    Ledger(tmp_path / "ledger.sqlite").close()  # the schema, before the race
    go = str(time.time() + 1.5)
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(script), str(tmp_path / "ledger.sqlite"), go],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = sorted(r.communicate(timeout=60)[0].strip() for r in racers)
    assert outcomes == ["done", "skipped"]
    assert len(calls(tmp_path)) == 1


DAY_MS = 86_400_000


def two_pausers(tmp_path, cmd):
    """Two pauser processes' configurations on one ledger: each its own owner token."""
    first = dataclasses.replace(config(tmp_path, cmd), owner=pauser.default_owner())
    return first, dataclasses.replace(first, owner=pauser.default_owner())


def lasting(d):
    """Valid for days: a wall clock stepped a day ahead still finds it current."""
    return {**d, "valid_until_ms": d["valid_until_ms"] + 10 * DAY_MS}


async def briefly(seconds):
    await asyncio.sleep(0.05)


async def until_called(tmp_path):
    for _ in range(1000):
        if calls(tmp_path):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the command never ran")


def test_a_renewed_claim_is_never_taken_over_however_the_wall_clock_moves(tmp_path, monkeypatch):
    """B waits on A's claim while the wall clock jumps a day ahead: A renews it (every third of the
    lease), so B never takes it over; CMD runs once and the row keeps A's outcome."""
    monkeypatch.setattr(pauser.PauserConfig, "lease_ms", property(lambda self: 1200))
    a, b = two_pausers(tmp_path, f"echo $KPI_DECISION_ID >> {tmp_path}/calls; sleep 2.5")
    wall, step = pauser.now_ms, [0]
    monkeypatch.setattr(pauser, "now_ms", lambda: wall() + step[0])
    d = lasting(decision())

    async def scenario():
        first = asyncio.create_task(pauser.handle(a, Ledger(a.ledger), d))
        await until_called(tmp_path)
        step[0] = DAY_MS  # while A's command runs
        second = await pauser.handle(b, Ledger(b.ledger), d, keep_alive=briefly)
        return await first, second

    assert asyncio.run(scenario()) == ("done", "skipped")
    assert calls(tmp_path) == ["c1-1"]
    entry = Ledger(a.ledger).get("c1-1")
    assert (entry.outcome, entry.prior_state, entry.exit_code) == ("done", "running", 0)
    owner, beat = Ledger(a.ledger).db.execute("SELECT owner, beat FROM claims").fetchone()
    assert owner == a.owner and beat >= 3  # renewed every 400 ms while CMD ran


def test_a_pauser_whose_claim_was_taken_over_records_nothing_over_the_new_holder(
    tmp_path, monkeypatch, caplog
):
    """A's renewals stall (a suspended pauser) while its slow CMD runs: B takes the claim over
    after a lease, runs CMD again (it answers "already"), and records done. A's CMD then ends
    with exit 0: A must not replace B's outcome with its own."""
    monkeypatch.setattr(pauser.PauserConfig, "lease_ms", property(lambda self: 300))
    a, b = two_pausers(
        tmp_path,
        f"n=$(cat {tmp_path}/calls 2>/dev/null | wc -l); echo $KPI_DECISION_ID >> {tmp_path}/calls;"
        ' if [ "$n" -eq 0 ]; then sleep 2.5; exit 0; fi; exit 3',
    )
    stalled = Ledger(a.ledger)
    monkeypatch.setattr(stalled, "renew", lambda *args: True, raising=False)
    d = decision()

    async def scenario():
        first = asyncio.create_task(pauser.handle(a, stalled, d, keep_alive=briefly))
        await until_called(tmp_path)
        second = await pauser.handle(b, Ledger(b.ledger), d, keep_alive=briefly)
        return await first, second

    assert asyncio.run(scenario()) == ("skipped", "done")
    assert calls(tmp_path) == ["c1-1", "c1-1"]  # B ran it again, with the same decision id
    entry = Ledger(a.ledger).get("c1-1")
    assert (entry.outcome, entry.exit_code, entry.prior_state, entry.reason) == (
        "done",
        3,
        "running",
        "already: an earlier attempt had run it",
    )
    assert f"claim lost to {b.owner}: outcome done not recorded" in caplog.text


def test_an_unrenewed_claim_is_taken_over_after_a_lease_of_the_waiters_own_clock(
    tmp_path, monkeypatch
):
    """The crash case: the claim of a pauser that ended mid-command (another token; same host
    and pid, as a restarted container's pid 1 would have) is taken over once this pauser has
    watched it unrenewed for a lease of its own monotonic clock, not sooner, while the wall clock
    stands still; CMD runs again with the same decision id and its "already" is this pause."""
    cfg = config(tmp_path, command(tmp_path, "3"))
    ledger = Ledger(cfg.ledger)
    d = decision()
    wall = pauser.now_ms()
    monkeypatch.setattr(pauser, "now_ms", lambda: wall)
    ledger.db.execute(
        "INSERT INTO claims (decision_id, owner, claimed_at_ms) VALUES (?, ?, ?)",
        (d["decision_id"], pauser.default_owner(), wall),
    )
    ledger.record(d, wall, "started", action="pause", attempts=1)
    clock, looks = [10**6], []
    monkeypatch.setattr(pauser, "monotonic_ms", lambda: clock[0], raising=False)

    async def keep_alive(seconds):
        looks.append(len(calls(tmp_path)))
        assert len(looks) < 5, "the unrenewed claim was never taken over"
        clock[0] += cfg.lease_ms // 2

    assert asyncio.run(pauser.handle(cfg, ledger, d, keep_alive=keep_alive)) == "done"
    assert looks == [0, 0]  # first look: the watch starts; half a lease later: still held
    assert [line.split()[2] for line in calls(tmp_path)] == ["c1-1"]
    entry = ledger.get("c1-1")
    assert (entry.outcome, entry.prior_state, entry.exit_code) == ("done", "running", 3)


def test_only_an_owner_of_this_pid_namespace_is_ever_declared_gone():
    """Another pid namespace (a container sharing the hostname) may reuse or hide any pid: its
    owners are never declared gone, only their leases run out."""
    ended = subprocess.Popen(["true"])
    ended.wait()
    host, _pid, space, _token = pauser.default_owner().split(":")
    assert space
    assert pauser.owner_gone(f"{host}:{ended.pid}:{space}:token")
    assert not pauser.owner_gone(f"{host}:{ended.pid}:0123456789ab:token")  # another namespace
    assert not pauser.owner_gone(f"{host}:{ended.pid}:token")  # an owner of an older ledger
    assert not pauser.owner_gone(f"other-{host}:{ended.pid}:{space}:token")
    assert not pauser.owner_gone(f"{host}:{os.getpid()}:{space}:token")  # alive


def test_a_small_account_is_paused_below_min_campaigns(tmp_path):
    """Three campaigns, one collapsed: 1 of 3 is over --max-share 0.2, but a share of fewer than
    --min-campaigns says nothing (the workers' breaker ignores it too)."""
    cfg = config(tmp_path, command(tmp_path), max_share=0.2)
    assert cfg.limits.min_campaigns == Settings().breaker_min_campaigns == 5
    ledger = Ledger(cfg.ledger)
    d = {**decision("c1"), "campaigns_judged": 3}
    outcome = asyncio.run(asyncio.wait_for(pauser.handle(cfg, ledger, d), 10))
    assert outcome == "done" and len(calls(tmp_path)) == 1


def test_a_hold_is_reported_and_ends_when_the_decision_expires(tmp_path):
    cfg = config(tmp_path, command(tmp_path), max_share=0.2, min_campaigns=1)
    ledger = Ledger(cfg.ledger)
    metrics = PauserMetrics()
    d = {**decision("c1"), "campaigns_judged": 3, "valid_until_ms": pauser.now_ms() + 1500}
    seen = []

    async def look(seconds):
        seen.append(
            (
                metrics.registry.get_sample_value("kpi_pauser_held", {"reason": "share_limit"}),
                metrics.registry.get_sample_value("kpi_pauser_held_seconds"),
            )
        )
        await asyncio.sleep(seconds)

    outcome = asyncio.run(
        asyncio.wait_for(pauser.handle(cfg, ledger, d, metrics=metrics, keep_alive=look), 10)
    )
    assert outcome == "dropped" and "expired" in ledger.get("c1-1").reason
    assert seen and all(held == 1 for held, _ in seen) and seen[-1][1] >= 1
    assert metrics.registry.get_sample_value("kpi_pauser_held", {"reason": "share_limit"}) == 0
    assert calls(tmp_path) == []


def test_the_pauser_exports_only_catalogued_families():
    from stream.catalogue import CATALOGUE

    families = list(PauserMetrics().registry.collect())
    assert {f.name for f in families} == {
        "kpi_pauser_held",
        "kpi_pauser_held_seconds",
        "kpi_pauser_decisions",
    }
    for family in families:
        spec = CATALOGUE[family.name]
        assert family.type == spec.kind and family.documentation == spec.doc
        assert all(set(s.labels) <= set(spec.labels) for s in family.samples)
    held = {s.labels["reason"] for f in families if f.name == "kpi_pauser_held" for s in f.samples}
    assert held == set(HOLD_REASONS)  # every reason exported (0) before any hold
