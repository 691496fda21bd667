"""Wilson score interval for a proportion: how sure a rate is, given its volume."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054


def wilson_bounds(successes: int, trials: int, z: float = Z_95) -> tuple[float, float] | None:
    """(lower, upper) 95% bounds of successes/trials, or None with no trials.

    A count above the trials (e.g. sales without tracked clicks) is clamped to a rate of 1.
    """
    if trials <= 0:
        return None
    p = min(1.0, max(0.0, successes / trials))
    z2 = z * z
    denominator = 1 + z2 / trials
    centre = p + z2 / (2 * trials)
    spread = z * math.sqrt(p * (1 - p) / trials + z2 / (4 * trials * trials))
    # At p = 0 and p = 1 the interval touches 0 and 1 exactly; float rounding would miss by an ulp.
    lower = 0.0 if p == 0 else max(0.0, (centre - spread) / denominator)
    upper = 1.0 if p == 1 else min(1.0, (centre + spread) / denominator)
    return lower, upper
