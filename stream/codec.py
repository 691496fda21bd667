"""Changelog record codec: keys and values of the per-partition state records.

Keys are JSON lists that start with the source partition (``[p, tag, ...]``), so the partition of
a record is known without a full parse. Values are compact JSON lists, readable with Kafka tools,
but for dedup chunks: flat binary (``encode_chunk``), where JSON doubled the changelog's bytes.
The state logic (``stream.state``) never sees bytes; this module never sees state logic.

Tags: ``b`` bucket (campaign, bucket start; it may carry its hour bucket's row), ``h`` hour bucket
(campaign, start), ``t`` campaign totals, ``l`` lead join record
(campaign, lead id), ``d`` dedup chunk (kind, first position), ``m`` the partition's Meta, ``a`` a
campaign's auto-pause state (campaign; see ``autopause.records``), ``p`` a plan in force (its
plans-topic key; the value is the plan's JSON, ``stream.plans``).
"""

from __future__ import annotations

import struct
import sys
from array import array
from typing import Any

import orjson

BUCKET, TOTALS, LEAD, DEDUP, META, AUTOPAUSE, PLAN = "b", "t", "l", "d", "m", "a", "p"
HOUR = "h"  # an hour bucket of the long horizons: same key and value shape as a bucket

Record = tuple[bytes, bytes | None]  # (key, value); None deletes


def _dumps(value: Any) -> bytes:
    """orjson's output, copied to its own size: orjson 3.13 returns bytes that keep a 4 KiB
    allocation however short they are (measured with tracemalloc), and a batch writes tens of
    thousands of records."""
    return bytes(memoryview(orjson.dumps(value)))


def dumps(value: Any) -> bytes:
    return _dumps(value)


def key(*parts: object) -> bytes:
    return _dumps(parts)


def decode_key(raw: bytes) -> list:
    return orjson.loads(raw)


def partition_of_key(raw: bytes) -> int:
    """The partition a record key belongs to, without a full JSON parse (keys start ``[p,``)."""
    return int(raw[1 : raw.index(b",")])


# -- values ------------------------------------------------------------------------------------
# Each is a plain JSON list; the formats are those of the first release, so existing changelogs
# restore unchanged.


def encode_row(row: list[int], hw: list[int], hour: list[int] | None = None) -> bytes:
    """A bucket record's value from its row's values (five counts, revenue, spend) and ``hw``;
    a minute bucket's record may carry its hour bucket's row too (same ``hw``: see
    ``stream.changelog``)."""
    return _dumps(
        [row[:5], row[5], row[6], hw] if hour is None else [row[:5], row[5], row[6], hw, hour]
    )


def decode_bucket(raw: bytes) -> tuple[list[int], int, int, list[int], list[int] | None]:
    """(counts, revenue, spend, hw, the hour row it carries or None)."""
    counts, revenue, spend, hw, *hour = orjson.loads(raw)
    return counts, revenue, spend, hw, hour[0] if hour else None


def encode_totals(
    by_channel: dict[str, list[int]],
    archived_histogram: list[int],
    archived_sum_ms: int,
    archived_leads: list[str],
    hw: list[int],
) -> bytes:
    return _dumps([by_channel, archived_histogram, archived_sum_ms, archived_leads, hw])


def decode_totals(raw: bytes) -> tuple[dict[str, list[int]], list[int], int, list[str], list[int]]:
    by_channel, histogram, sum_ms, leads, hw = orjson.loads(raw)
    return by_channel, histogram, sum_ms, leads, hw


def encode_lead(lead_ms: int | None, contact_ms: int | None, hw: list[int]) -> bytes:
    return _dumps([lead_ms, contact_ms, hw])


def decode_lead(raw: bytes) -> tuple[int | None, int | None, list[int]]:
    lead_ms, contact_ms, hw = orjson.loads(raw)
    return lead_ms, contact_ms, hw


# A dedup chunk in binary: this byte, its newest watermark (int64), then its entries as
# little-endian uint64 triples (id hash, position, watermark): 24 bytes an entry where JSON took
# ~47, and the chunks are nine tenths of the changelog's bytes (bench/changelog_bytes.py).
CHUNK_BINARY = 1
_CHUNK_HEAD = struct.Struct("<Bq")


def encode_chunk(max_watermark: int, data: array) -> bytes:
    """A dedup chunk: its newest watermark and its flat ``array('Q')`` of (id hash, position,
    watermark) triples."""
    if sys.byteorder != "little":
        data = array("Q", data)
        data.byteswap()
    return _CHUNK_HEAD.pack(CHUNK_BINARY, max_watermark) + data.tobytes()


def decode_chunk(raw: bytes) -> tuple[int, list]:
    """(newest watermark, [(id, position, watermark), ...]); reads the JSON chunks written
    before the binary form too (``[max_watermark, entries]``)."""
    if raw[:1] == b"[":
        max_watermark, entries = orjson.loads(raw)
        return max_watermark, entries
    max_watermark, data = decode_chunk_data(raw)
    return max_watermark, list(zip(data[0::3], data[1::3], data[2::3]))


def decode_chunk_data(raw: bytes) -> tuple[int, array]:
    """A binary dedup chunk as its newest watermark and its flat ``array('Q')`` of triples, as
    ``stream.dedup.Chunk`` holds it: a restore takes a million ids without a loop per id."""
    marker, max_watermark = _CHUNK_HEAD.unpack_from(raw)
    if marker != CHUNK_BINARY or (len(raw) - _CHUNK_HEAD.size) % 24:
        raise ValueError(f"not a dedup chunk: marker {marker}, {len(raw)} bytes")
    data = array("Q", raw[_CHUNK_HEAD.size :])
    if sys.byteorder != "little":
        data.byteswap()
    return max_watermark, data


def encode_meta(
    checkpoint: list[int],
    watermark: list[int],
    rejected: dict[str, int],
    late: list[int],
    duplicate: list[int],
    folded: list[int],
    arrival: list[int],
) -> bytes:
    return _dumps(
        {
            "ckpt": checkpoint,
            "wm": watermark,
            "rej": rejected,
            "late": late,
            "dup": duplicate,
            "fold": folded,
            "arr": arrival,
        }
    )


def decode_meta(raw: bytes) -> dict:
    meta = orjson.loads(raw)
    meta.setdefault("fold", [0, 0])
    if len(meta["ckpt"]) == len(meta["wm"]):  # from before the plans topic: none folded yet
        meta["ckpt"].append(-1)
    # Before the arrival clock, dedup ran on the event-time watermark: both follow the wall
    # clock closely, so the old chunks keep about their age.
    meta.setdefault("arr", list(meta["wm"]))
    return meta
