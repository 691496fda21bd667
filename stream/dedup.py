"""Drop producer-side duplicates by ``event_id`` within a bounded horizon.

One index per (partition, event type), so its behaviour depends only on the order of one Kafka
partition and is the same in a replay. An id is remembered with the position of the message
that first carried it (a replay of that same message is not a duplicate) and with the partition's
arrival clock when it was seen (the newest Kafka record timestamp folded, see ``stream.state``);
it stops counting as a duplicate once that clock has moved ``horizon`` past that. (The
"watermark" of this module is that arrival clock.) Ids are persisted in chunks, one per batch, and evicted a whole
chunk at a time, oldest first, when the horizon passes or the memory cap is reached.

Ids are held as 64-bit BLAKE2b hashes in flat arrays (``stream.idtable``), so an index costs
~40-60 bytes per id whatever the ids' length (a hostile producer may send 256-character ids). Two distinct ids collide with
probability ~n^2 / 2^65: about 1e-8 for the 500,000 ids of a full index.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import deque
from collections.abc import Iterator

from .idtable import IdTable

MAX_CHUNK_ENTRIES = 4096  # ~130 KB as JSON: well under the producer's 1 MB request limit


_INDEX_BITS = 16  # locator of an entry: chunk sequence << 16 | index in chunk
_INDEX_MASK = (1 << _INDEX_BITS) - 1


def id_hash(event_id: str, _blake2b=hashlib.blake2b, _from_bytes=int.from_bytes) -> int:
    """Never 0 (the id table's empty slot)."""
    return _from_bytes(_blake2b(event_id.encode(), digest_size=8).digest(), "little") or 1


class Chunk:
    """The ids one batch remembered (at most ``MAX_CHUNK_ENTRIES``), in arrival order, with the
    position and watermark each was seen at. Persisted and evicted as a unit.

    Entries are (id hash, position, watermark) triples in one flat array: a busy worker holds
    tens of thousands of small chunks, and every object they are made of costs memory and the
    cyclic garbage collector's time.
    """

    __slots__ = ("data", "max_watermark", "seq")

    def __init__(self, seq: int = -1) -> None:
        self.seq = seq  # the index's chunk number, increasing in position order
        self.data = array("Q")
        self.max_watermark = -1

    def __len__(self) -> int:
        return len(self.data) // 3

    @property
    def first_pos(self) -> int:
        return self.data[1]

    @property
    def last_pos(self) -> int:
        return self.data[-2]

    def ids(self) -> array:
        return self.data[0::3]

    def entry(self, index: int) -> tuple[int, int]:
        """(position, watermark) of entry ``index``."""
        return self.data[3 * index + 1], self.data[3 * index + 2]

    def append(self, hashed: int, pos: int, watermark: int) -> int:
        """Add an entry; its locator in the id table."""
        self.data.extend((hashed, pos, watermark))
        if watermark > self.max_watermark:
            self.max_watermark = watermark
        return (self.seq << _INDEX_BITS) | (len(self.data) // 3 - 1)

    def entries(self) -> list[tuple[int, int, int]]:
        data = self.data
        return list(zip(data[0::3], data[1::3], data[2::3]))


class DedupIndex:
    def __init__(self, horizon_ms: int) -> None:
        self.horizon_ms = horizon_ms
        self._table = IdTable()  # id hash -> locator of its latest entry
        self._by_seq: dict[int, Chunk] = {}
        self._next_seq = 0
        self.chunks: deque[Chunk] = deque()  # sealed, oldest first
        self._open: list[Chunk] = []  # this batch's chunks, not sealed yet

    def __len__(self) -> int:
        return len(self._table)

    def ids(self) -> Iterator[int]:
        """The hashes of the ids remembered."""
        return self._table.keys()

    def seen_at(self, hashed: int) -> tuple[int, int] | None:
        """(position, watermark) where the id was remembered, or None."""
        locator = self._table.get(hashed)
        if locator is None:
            return None
        return self._by_seq[locator >> _INDEX_BITS].entry(locator & _INDEX_MASK)

    def is_duplicate(
        self,
        event_id: str,
        pos: int,
        watermark: int,
        _blake2b=hashlib.blake2b,
        _from_bytes=int.from_bytes,
    ) -> bool:
        """True if ``event_id`` was seen at another position within the horizon; else remember it."""
        # ``id_hash`` inlined: this runs once per event.
        hashed = _from_bytes(_blake2b(event_id.encode(), digest_size=8).digest(), "little") or 1
        table = self._table
        slot = table.find(hashed)
        locator = table.value_at(slot)
        if locator is not None:
            data = self._by_seq[locator >> _INDEX_BITS].data
            entry = 3 * (locator & _INDEX_MASK)
            if data[entry + 1] == pos:
                return False
            if watermark - data[entry + 2] <= self.horizon_ms:
                return True
        opened = self._open
        if not opened or len(opened[-1].data) >= 3 * MAX_CHUNK_ENTRIES:
            opened.append(self._new_chunk())
        table.put_at(slot, hashed, opened[-1].append(hashed, pos, max(0, watermark)))
        return False

    def _new_chunk(self) -> Chunk:
        chunk = self._by_seq[self._next_seq] = Chunk(self._next_seq)
        self._next_seq += 1
        return chunk

    def seal_batch(self) -> list[Chunk]:
        """Close the ids of this batch into chunks, to persist."""
        sealed = self._open
        self.close_batch()
        return sealed

    def close_batch(self) -> None:
        """``seal_batch`` for a reader that persists nothing."""
        self.chunks.extend(self._open)
        self._open = []

    def load_chunk(self, max_watermark: int, entries: list) -> None:
        """Take one restored chunk; call ``sort_chunks`` when all are in."""
        if not entries:
            return
        chunk = Chunk()
        for event_id, pos, watermark in entries:
            hashed = (
                id_hash(event_id) if isinstance(event_id, str) else event_id or 1
            )  # first format
            chunk.append(hashed, pos, max(0, watermark))
        chunk.max_watermark = max_watermark
        self.chunks.append(chunk)

    def load_chunk_data(self, max_watermark: int, data: array) -> None:
        """``load_chunk`` for a chunk's flat triples as written (``codec.decode_chunk_data``)."""
        if not data:
            return
        chunk = Chunk()
        chunk.data = data
        chunk.max_watermark = max_watermark
        self.chunks.append(chunk)

    def sort_chunks(self) -> None:
        """After loading: chunks in position order (restored records come in any order), and
        each id at its latest entry, as in the run that wrote them."""
        self.chunks = deque(sorted(self.chunks, key=lambda c: c.first_pos))
        self._table = IdTable(sum(len(c) for c in self.chunks))
        self._by_seq = {}
        put_run = self._table.put_run
        for seq, chunk in enumerate(self.chunks):  # positions only grow: later is latest
            chunk.seq = seq
            self._by_seq[seq] = chunk
            put_run(chunk.ids(), seq << _INDEX_BITS)
        self._next_seq = len(self.chunks)

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
        del self._by_seq[chunk.seq]
        table = self._table
        base = chunk.seq << _INDEX_BITS
        for entry, hashed in enumerate(chunk.ids()):
            if table.get(hashed) == base | entry:  # not remembered again by a later entry
                table.delete(hashed)
        return chunk
