"""Event-time buckets and their expiry.

A bucket ``[start, start + size)`` holds additive counters. The trailing window of length W at
time ``now`` is the sum of the W/size buckets ending with the bucket that contains ``now``
(``stream.campaign.CampaignState.window_totals``); it moves with the clock passed in, so a quiet
campaign's windows drain to zero.
"""

from __future__ import annotations


def bucket_start(occurred_ms: int, bucket_ms: int) -> int:
    return occurred_ms - occurred_ms % bucket_ms


def is_expired(start_ms: int, bucket_ms: int, now_ms: int, retention_ms: int) -> bool:
    """A bucket is gone once its end is older than the retention (longest window + grace)."""
    return start_ms + bucket_ms <= now_ms - retention_ms


def first_kept_start(now_ms: int, bucket_ms: int, retention_ms: int) -> int:
    """The oldest bucket start that is not expired at ``now_ms``."""
    return bucket_start(now_ms - retention_ms - bucket_ms, bucket_ms) + bucket_ms
