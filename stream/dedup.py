"""Drop producer-side duplicates by ``event_id`` within a bounded horizon.

One index per (partition, event type), so its behaviour depends only on the order of one Kafka
partition and is the same in a replay. An id is remembered with the position of the message
that first carried it (a replay of that same message is not a duplicate) and with the stream's
event-time watermark when it was seen; it stops counting as a duplicate once the watermark has
moved ``horizon`` past that. Ids are persisted in chunks, one per batch, and evicted a whole
chunk at a time, oldest first, when the horizon passes or the memory cap is reached.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple


MAX_CHUNK_ENTRIES = 4096  # ~300 KB as JSON: well under the producer's 1 MB request limit


class Chunk(NamedTuple):
    first_pos: int
    max_watermark: int
    entries: list  # (event_id, pos, watermark)


class DedupIndex:
    def __init__(self, horizon_ms: int, max_ids: int) -> None:
        self.horizon_ms = horizon_ms
        self.max_ids = max_ids
        self.seen: dict[str, tuple[int, int]] = {}
        self.chunks: deque[Chunk] = deque()
        self.pending: list[list] = []

    def is_duplicate(self, event_id: str, pos: int, watermark: int) -> bool:
        """True if ``event_id`` was seen at another position within the horizon; else remember it."""
        hit = self.seen.get(event_id)
        if hit is not None:
            if hit[0] == pos:
                return False
            if watermark - hit[1] <= self.horizon_ms:
                return True
        self.seen[event_id] = (pos, watermark)
        self.pending.append((event_id, pos, watermark))
        return False

    def seal_batch(self) -> list[Chunk]:
        """Close the ids of this batch into chunks to persist."""
        pending = self.pending
        self.pending = []
        sealed = []
        for start in range(0, len(pending), MAX_CHUNK_ENTRIES):
            entries = pending[start:start + MAX_CHUNK_ENTRIES]
            chunk = Chunk(entries[0][1], max(e[2] for e in entries), entries)
            self.chunks.append(chunk)
            sealed.append(chunk)
        return sealed

    def load_chunk(self, chunk: Chunk) -> None:
        for event_id, pos, watermark in chunk.entries:
            self.seen[event_id] = (pos, watermark)
        self.chunks.append(chunk)

    def sort_chunks(self) -> None:
        self.chunks = deque(sorted(self.chunks, key=lambda c: c.first_pos))

    def evict(self, watermark: int) -> list[Chunk]:
        """Chunks to forget: past the horizon, or oldest beyond the memory cap."""
        evicted = []
        while self.chunks and (
            self.chunks[0].max_watermark < watermark - self.horizon_ms
            or len(self.seen) > self.max_ids
        ):
            chunk = self.chunks.popleft()
            for event_id, pos, _ in chunk.entries:
                hit = self.seen.get(event_id)
                if hit is not None and hit[0] == pos:
                    del self.seen[event_id]
            evicted.append(chunk)
        return evicted
