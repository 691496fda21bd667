"""Drop producer-side duplicates by ``event_id`` within a bounded horizon.

One index per (partition, event type), so its behaviour depends only on the order of one Kafka
partition and is the same in a replay. An id is remembered with the position of the message
that first carried it (a replay of that same message is not a duplicate) and with the stream's
event-time watermark when it was seen; it stops counting as a duplicate once the watermark has
moved ``horizon`` past that. Ids are persisted in chunks, one per batch, and evicted a whole
chunk at a time, oldest first, when the horizon passes or the memory cap is reached.

Ids are held as a 64-bit BLAKE2b hash, so an index costs ~120 bytes per id whatever the ids'
length (a hostile producer may send 256-character ids). Two distinct ids collide with
probability ~n^2 / 2^65: about 1e-8 for the 500,000 ids of a full index.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import NamedTuple

MAX_CHUNK_ENTRIES = 4096  # ~130 KB as JSON: well under the producer's 1 MB request limit
_WATERMARK_BITS = 44  # event time in ms until the year 2527
_WATERMARK_MASK = (1 << _WATERMARK_BITS) - 1


def id_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=8).digest(), "little")


class Chunk(NamedTuple):
    first_pos: int
    last_pos: int
    max_watermark: int
    ids: list[int]


class DedupIndex:
    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self.seen: dict[int, int] = {}  # id hash -> position << 44 | watermark
        self.chunks: deque[Chunk] = deque()
        self._pending: list[tuple[int, int]] = []  # (id hash, packed) in arrival order

    def __len__(self) -> int:
        return len(self.seen)

    def seen_at(self, hashed: int) -> tuple[int, int] | None:
        """(position, watermark) where the id was remembered, or None."""
        packed = self.seen.get(hashed)
        if packed is None:
            return None
        return packed >> _WATERMARK_BITS, packed & _WATERMARK_MASK

    def is_duplicate(self, event_id: str, pos: int, watermark: int) -> bool:
        """True if ``event_id`` was seen at another position within the horizon; else remember it."""
        hashed = id_hash(event_id)
        packed = self.seen.get(hashed)
        if packed is not None:
            if packed >> _WATERMARK_BITS == pos:
                return False
            if watermark - (packed & _WATERMARK_MASK) <= self.horizon_ms:
                return True
        packed = (pos << _WATERMARK_BITS) | max(0, watermark)
        self.seen[hashed] = packed
        self._pending.append((hashed, packed))
        return False

    def seal_batch(self) -> list[tuple[Chunk, list[tuple[int, int, int]]]]:
        """Close the ids of this batch into chunks; each with its entries, to persist."""
        pending = self._pending
        self._pending = []
        sealed = []
        for start in range(0, len(pending), MAX_CHUNK_ENTRIES):
            part = pending[start:start + MAX_CHUNK_ENTRIES]
            entries = [(h, packed >> _WATERMARK_BITS, packed & _WATERMARK_MASK) for h, packed in part]
            chunk = Chunk(entries[0][1], entries[-1][1], max(e[2] for e in entries),
                          [h for h, _ in part])
            self.chunks.append(chunk)
            sealed.append((chunk, entries))
        return sealed

    def load_chunk(self, max_watermark: int, entries: list) -> None:
        ids = []
        for event_id, pos, watermark in entries:
            hashed = id_hash(event_id) if isinstance(event_id, str) else event_id  # first format
            self.seen[hashed] = (pos << _WATERMARK_BITS) | max(0, watermark)
            ids.append(hashed)
        if entries:
            self.chunks.append(Chunk(entries[0][1], entries[-1][1], max_watermark, ids))

    def sort_chunks(self) -> None:
        self.chunks = deque(sorted(self.chunks, key=lambda c: c.first_pos))

    def evict_expired(self, watermark: int) -> list[Chunk]:
        """Chunks whose every id is past the horizon."""
        evicted = []
        while self.chunks and self.chunks[0].max_watermark < watermark - self.horizon_ms:
            evicted.append(self._forget_oldest())
        return evicted

    def evict_oldest(self) -> Chunk | None:
        return self._forget_oldest() if self.chunks else None

    def _forget_oldest(self) -> Chunk:
        chunk = self.chunks.popleft()
        for hashed in chunk.ids:
            packed = self.seen.get(hashed)
            if packed is not None and chunk.first_pos <= packed >> _WATERMARK_BITS <= chunk.last_pos:
                del self.seen[hashed]
        return chunk
