import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stream import sketch
from stream.campaign import Bucket, CampaignState
from stream.kpis import compute_kpis
from stream.windows import bucket_start, is_expired

MIN = 60_000


@pytest.mark.parametrize("t, start", [(0, 0), (59_999, 0), (60_000, 60_000), (125_000, 120_000)])
def test_bucket_start(t, start):
    assert bucket_start(t, MIN) == start


def test_expiry_is_end_of_bucket_past_retention():
    assert not is_expired(0, MIN, now_ms=10 * MIN - 1, retention_ms=9 * MIN)
    assert is_expired(0, MIN, now_ms=10 * MIN, retention_ms=9 * MIN)


def _campaign(buckets: dict[int, tuple[list[int], int, int]]) -> CampaignState:
    state = CampaignState(13)
    for start, (counts, revenue, spend) in buckets.items():
        state.put_bucket(start, Bucket(counts, revenue, spend), MIN)
    return state


def _reference_sums(buckets, now, windows):
    """The definition: a window of length W sums the buckets in (current - W, current]."""
    current = bucket_start(now, MIN)
    out = []
    for w in windows:
        inside = [b for start, b in buckets.items() if current - w < start <= current]
        out.append(
            (
                [sum(b[0][k] for b in inside) for k in range(5)],
                sum(b[1] for b in inside),
                sum(b[2] for b in inside),
            )
        )
    return out


def test_trailing_windows_sum_the_last_buckets_and_move_with_the_clock():
    now = 100 * MIN + 30_000
    buckets = {(100 - age) * MIN: ([age + 1, 0, 0, 0, 0], 0, 1_000_000) for age in range(0, 20)}
    buckets[101 * MIN] = ([1000, 0, 0, 0, 0], 0, 0)  # future: not yet in any window
    state = _campaign(buckets)
    five, fifteen = state.window_totals(bucket_start(now, MIN), (5 * MIN, 15 * MIN), MIN)
    assert five.counts[0] == sum(range(1, 6))
    assert fifteen.counts[0] == sum(range(1, 16))
    assert five.spend_micros == 5_000_000
    # With no new events the window slides on: 4 minutes later it holds buckets 100..104.
    later = bucket_start(now + 4 * MIN, MIN)
    assert state.window_totals(later, (5 * MIN,), MIN)[0].counts[0] == 1 + 1000
    assert state.window_totals(bucket_start(now + 6 * MIN, MIN), (5 * MIN,), MIN)[0].counts[0] == 0


@given(
    st.dictionaries(
        st.integers(0, 120).map(lambda i: i * MIN),
        st.tuples(
            st.lists(st.integers(0, 50), min_size=5, max_size=5),
            st.integers(0, 10**9),
            st.integers(0, 10**9),
        ),
        max_size=40,
    ),
    st.integers(0, 130 * MIN),
    st.lists(st.integers(1, 90).map(lambda i: i * MIN), min_size=1, max_size=4, unique=True),
)
def test_packed_rows_sum_like_the_definition(buckets, now, windows):
    windows = tuple(windows)  # any order: the sums are nested by size inside
    got = _campaign(buckets).window_totals(bucket_start(now, MIN), windows, MIN)
    assert [(w.counts, w.revenue_micros, w.spend_micros) for w in got] == _reference_sums(
        buckets, now, windows
    )


@given(
    st.lists(st.tuples(st.integers(0, 4), st.integers(0, 200), st.integers(0, 10**6)), max_size=60),
    st.integers(0, 200),
)
def test_dropping_old_rows_keeps_the_rest(events, cutoff):
    state = CampaignState(13)
    expected: dict[int, list[int]] = {}
    for k, minute, amount in events:
        state.add(k, minute * MIN, amount, 6, MIN)
        expected.setdefault(minute * MIN, [0] * 5)[k] += 1
    dropped = state.drop_buckets_before(cutoff * MIN, MIN)
    assert sorted(dropped) == sorted(s for s in expected if s < cutoff * MIN)
    kept = {s: b.counts for s, b in state.buckets(MIN)}
    assert kept == {s: c for s, c in expected.items() if s >= cutoff * MIN}


@pytest.mark.parametrize(
    "counts, revenue, spend, expected",
    [
        (
            [1000, 50, 10, 5, 0],
            500_000_000,
            100_000_000,
            {
                "ctr": 0.05,
                "conversion": 0.1,
                "lead_rate": 0.2,
                "lead_to_sale": 0.5,
                "cpc": 2.0,
                "cpl": 10.0,
                "cpa": 20.0,
                "roas": 5.0,
                "aov": 100.0,
            },
        ),
        (
            [0, 0, 0, 0, 0],
            0,
            0,
            {
                "ctr": None,
                "conversion": None,
                "lead_rate": None,
                "lead_to_sale": None,
                "cpc": None,
                "cpl": None,
                "cpa": None,
                "roas": None,
                "aov": None,
            },
        ),
        (
            [10, 0, 0, 0, 0],
            0,
            2_000_000,
            {
                "ctr": 0.0,
                "conversion": None,
                "lead_rate": None,
                "lead_to_sale": None,
                "cpc": None,
                "cpl": None,
                "cpa": None,
                "roas": 0.0,
                "aov": None,
            },
        ),
    ],
)
def test_kpi_formulas(counts, revenue, spend, expected):
    assert compute_kpis(counts, revenue, spend)._asdict() == pytest.approx(expected)


@given(
    st.lists(st.integers(0, 10 * 86_400_000), min_size=1, max_size=300),
    st.sampled_from([0.5, 0.95]),
)
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


@pytest.mark.parametrize(
    "successes, trials, lower, upper",
    [
        (0, 10, 0.0, 0.2775),  # reference values of the Wilson score interval, z = 1.96
        (5, 10, 0.2366, 0.7634),
        (10, 10, 0.7225, 1.0),
        (20, 1000, 0.01302, 0.03067),
    ],
)
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


@given(st.integers(0, 10**12), st.integers(1, 10**6), st.integers(0, 10**8), st.integers(-5, 5))
def test_first_kept_start_is_the_expiry_boundary(now, bucket, retention, offset):
    from stream.windows import first_kept_start

    kept = first_kept_start(now, bucket, retention)
    assert kept % bucket == 0
    assert not is_expired(kept, bucket, now, retention)
    assert is_expired(kept - bucket, bucket, now, retention)
    start = kept + offset * bucket
    assert is_expired(start, bucket, now, retention) == (start < kept)


@given(st.lists(st.integers(0, 10**8), max_size=200))
def test_quantiles_in_one_pass_equal_quantile_each(values):
    s: dict[int, int] = {}
    for v in values:
        sketch.add(s, v)
    qs = (0.01, 0.5, 0.95, 1.0)
    assert sketch.quantiles(s, qs) == [sketch.quantile(s, q) for q in qs]


@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**8), st.booleans()), max_size=80))
def test_bucket_sketches_hold_what_one_dict_per_bucket_holds(ops):
    """Adds and retractions in any order: the compact form equals a plain dict per bucket."""
    compact = sketch.BucketSketches()
    model: dict[int, dict[int, int]] = {}
    live: list[tuple[int, int]] = []
    for bucket, value, retract in ops:
        start = bucket * 60_000
        if retract and live:
            start, value = live.pop(bucket % len(live))
            compact.add(start, value, -1)
            sketch.add(model[start], value, -1)
            if not model[start]:
                del model[start]
        else:
            live.append((start, value))
            compact.add(start, value, 1)
            sketch.add(model.setdefault(start, {}), value, 1)
        assert compact.as_dict() == model
    compact.drop_before(3 * 60_000)
    assert compact.as_dict() == {s: v for s, v in model.items() if s >= 3 * 60_000}
    assert sorted(compact.starts()) == sorted(s for s in model if s >= 3 * 60_000)
