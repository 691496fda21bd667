import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import sketch
from stream.kpis import compute_kpis
from stream.state import Bucket
from stream.windows import bucket_start, is_expired, trailing_window_sums

MIN = 60_000


@pytest.mark.parametrize("t, start", [(0, 0), (59_999, 0), (60_000, 60_000), (125_000, 120_000)])
def test_bucket_start(t, start):
    assert bucket_start(t, MIN) == start


def test_expiry_is_end_of_bucket_past_retention():
    assert not is_expired(0, MIN, now_ms=10 * MIN - 1, retention_ms=9 * MIN)
    assert is_expired(0, MIN, now_ms=10 * MIN, retention_ms=9 * MIN)


def test_trailing_windows_sum_the_last_buckets_and_move_with_the_clock():
    now = 100 * MIN + 30_000
    buckets = {(100 - age) * MIN: Bucket(counts=[age + 1, 0, 0, 0, 0], spend=1_000_000)
               for age in range(0, 20)}
    buckets[101 * MIN] = Bucket(counts=[1000, 0, 0, 0, 0])  # future: not yet in any window
    sums = trailing_window_sums(buckets, {}, now, MIN, [5 * MIN, 15 * MIN])
    assert sums[5 * MIN].counts[0] == sum(range(1, 6))
    assert sums[15 * MIN].counts[0] == sum(range(1, 16))
    assert sums[5 * MIN].spend_micros == 5_000_000
    # With no new events the window slides on: 4 minutes later it holds buckets 100..104.
    quiet_later = trailing_window_sums(buckets, {}, now + 4 * MIN, MIN, [5 * MIN])
    assert quiet_later[5 * MIN].counts[0] == 1 + 1000
    assert trailing_window_sums(buckets, {}, now + 6 * MIN, MIN, [5 * MIN])[5 * MIN].counts[0] == 0


@pytest.mark.parametrize("counts, revenue, spend, expected", [
    ([1000, 50, 10, 5, 0], 500_000_000, 100_000_000,
     dict(ctr=0.05, conversion=0.1, lead_rate=0.2, lead_to_sale=0.5, cpc=2.0, cpl=10.0, cpa=20.0,
          roas=5.0, aov=100.0)),
    ([0, 0, 0, 0, 0], 0, 0,
     dict(ctr=None, conversion=None, lead_rate=None, lead_to_sale=None, cpc=None, cpl=None,
          cpa=None, roas=None, aov=None)),
    ([10, 0, 0, 0, 0], 0, 2_000_000,
     dict(ctr=0.0, conversion=None, lead_rate=None, lead_to_sale=None, cpc=None, cpl=None,
          cpa=None, roas=0.0, aov=None)),
])
def test_kpi_formulas(counts, revenue, spend, expected):
    assert compute_kpis(counts, revenue, spend)._asdict() == pytest.approx(expected)


@given(st.lists(st.integers(0, 10 * 86_400_000), min_size=1, max_size=300), st.sampled_from([0.5, 0.95]))
def test_sketch_quantile_within_relative_accuracy_of_nearest_rank(values, q):
    s: dict[int, int] = {}
    for v in values:
        sketch.add(s, v)
    exact = sorted(values)[max(1, math.ceil(q * len(values))) - 1]
    estimate = sketch.quantile(s, q)
    assert estimate == pytest.approx(exact, rel=sketch.RELATIVE_ACCURACY, abs=1)


@given(st.lists(st.integers(0, 10**8), max_size=50))
def test_sketch_retraction_leaves_nothing(values):
    s: dict[int, int] = {}
    for v in values:
        sketch.add(s, v)
    for v in values:
        sketch.add(s, v, -1)
    assert s == {} and sketch.quantile(s, 0.5) is None


@pytest.mark.parametrize("successes, trials, lower, upper", [
    (0, 10, 0.0, 0.2775),       # reference values of the Wilson score interval, z = 1.96
    (5, 10, 0.2366, 0.7634),
    (10, 10, 0.7225, 1.0),
    (20, 1000, 0.01302, 0.03067),
])
def test_wilson_bounds_match_reference_values(successes, trials, lower, upper):
    from stream.wilson import wilson_bounds

    got = wilson_bounds(successes, trials)
    assert got == pytest.approx((lower, upper), abs=2e-4)


@given(st.integers(0, 10_000), st.integers(1, 10_000))
def test_wilson_bounds_contain_the_rate_and_narrow_with_volume(successes, trials):
    from stream.wilson import wilson_bounds

    successes = min(successes, trials)
    lower, upper = wilson_bounds(successes, trials)
    assert 0 <= lower <= successes / trials <= upper <= 1
    wide = wilson_bounds(successes, trials)
    narrow = wilson_bounds(successes * 10, trials * 10)
    assert narrow[1] - narrow[0] <= wide[1] - wide[0] + 1e-12
    assert wilson_bounds(0, 0) is None
