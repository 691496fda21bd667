"""The crash soak (tests/soak.py) in its short form: SIGKILLs and a worker joining and leaving
while late (up to 40 days), duplicate, malformed and contact-before-lead events and changing plans
stream in; every figure exact, the long horizons and the plans' budgets included.
The full form: ``python -m tests.soak`` (1,000,000 events, 10 SIGKILLs, 2 joins)."""

from __future__ import annotations

import pytest

from tests.soak import soak

pytestmark = pytest.mark.e2e


def test_short_soak_is_exact(tmp_path, capsys):
    code = soak(events=30_000, kills=2, joins=1, seconds=30, seed=3, log_dir=str(tmp_path))
    out = capsys.readouterr().out
    print(out)
    assert code == 0, out
    assert "exact: 30,000 events" in out
    assert "today / 7d / 30d and" in out and " 0 plans in force" not in out
