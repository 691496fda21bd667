"""The pauser's handling of one decision with a real command: exactly once, retries, give-up,
undo, history."""

from __future__ import annotations

import asyncio
import io
import time

from agents import pauser
from autopause.ledger import Ledger
from autopause.policy import Limits


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
    assert asyncio.run(pauser.handle(cfg, ledger, d)) == "already"  # the command says so


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
    assert asyncio.run(pauser.undo(cfg, "c1-1")) == 0
    assert calls(tmp_path)[-1].split()[:4] == ["resume", "c1", "c1-1", "c1-1"]
    assert asyncio.run(pauser.undo(cfg, "c1-1")) == 1  # undone already
    out = io.StringIO()
    pauser.history(cfg.ledger, None, 10, out)
    lines = out.getvalue().splitlines()
    assert any(
        "c1-1" in line and "undone" in line and "ctr=0.001 < 0.005 on 15m" in line for line in lines
    )
    assert any("c2-1" in line and "unknown -> noted" in line for line in lines)


def test_command_line(tmp_path, capsys):
    from agents.cli import main

    assert main(["pauser", "--ledger", str(tmp_path / "l.sqlite")]) == 2  # no --exec
    assert "--exec CMD is required" in capsys.readouterr().err
    assert main(["pauser", "--exec", "true", "--max-share", "2"]) == 2
    assert main(["pauser", "undo", "--exec", "true", "--ledger", str(tmp_path / "l.sqlite")]) == 2
    assert main(["pauser", "history", "--ledger", str(tmp_path / "l.sqlite")]) == 0
