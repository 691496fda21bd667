"""Failover (tests/failover.py) in its short form: of two workers sharing the partitions, one is
SIGKILLed mid-stream and the survivor takes its partitions from its standby copy in the local
store: the survivor's figures are exact, and the hand-over read the taken partitions' state from
its own file, not the changelog. The full form: ``python -m tests.failover`` (1,000,000 events)."""

from __future__ import annotations

import re

import pytest

from tests.failover import failover

pytestmark = pytest.mark.e2e


def test_a_survivor_takes_a_killed_workers_partitions_exactly(tmp_path, capsys):
    code = failover(events=20_000, seconds=30, kill_at=0.5, seed=5, log_dir=str(tmp_path))
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    assert "exact: 20,000 events on the survivor" in out
    taken = re.search(r"\(([\d,]+) records restored, (\w+) read from the changelog\)", out)
    assert taken, out
    restored, from_changelog = int(taken[1].replace(",", "")), taken[2]
    assert restored > 0
    assert from_changelog != "None" and int(from_changelog) < restored / 2, out
