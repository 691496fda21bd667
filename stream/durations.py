"""Parse human durations such as ``90s``, ``5m``, ``1h``, ``7d`` into seconds."""

from __future__ import annotations

import re
from functools import lru_cache

_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")


@lru_cache(maxsize=1024)  # rules name a few durations and read them every round
def parse_duration(text: str) -> float:
    """Seconds in ``text``; a bare number means seconds. Raises ValueError on anything else."""
    match = _PATTERN.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (use e.g. 30s, 5m, 1h, 7d)")
    number, unit = match.groups()
    return float(number) * _UNITS[unit or "s"]


def format_duration(seconds: float) -> str:
    """The shortest exact label for a duration, as used in the ``window`` metric label."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"
