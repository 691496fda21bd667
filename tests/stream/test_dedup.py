"""The dedup index against a plain model: ids -> (position, watermark, chunk), chunks evicted whole."""

from array import array

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stream import dedup
from stream.codec import decode_chunk, encode_chunk
from stream.dedup import DedupIndex, id_hash

HORIZON = 100

steps = st.lists(
    st.one_of(
        st.tuples(st.just("event"), st.integers(0, 30), st.integers(0, 400)),  # id, watermark step
        st.tuples(st.just("seal"), st.just(0), st.just(0)),
        st.tuples(st.just("evict_oldest"), st.just(0), st.just(0)),
        st.tuples(st.just("evict_expired"), st.just(0), st.just(0)),
    ),
    max_size=120,
)


class Model:
    def __init__(self) -> None:
        self.seen: dict[int, tuple[int, int, int]] = {}  # hash -> (pos, watermark, chunk number)
        self.chunks: list[tuple[int, int]] = []  # (number, max watermark), oldest first
        self.pending: list[tuple[int, int]] = []  # (chunk number, watermark) of this batch's ids
        self.number = 0

    def is_duplicate(self, hashed: int, pos: int, watermark: int) -> bool:
        held = self.seen.get(hashed)
        if held is not None:
            if held[0] == pos:
                return False
            if watermark - held[1] <= HORIZON:
                return True
        if len(self.pending) % dedup.MAX_CHUNK_ENTRIES == 0:
            self.number += 1
        self.pending.append((self.number, watermark))
        self.seen[hashed] = (pos, watermark, self.number)
        return False

    def seal(self) -> None:
        numbers: dict[int, int] = {}
        for number, watermark in self.pending:
            numbers[number] = max(numbers.get(number, -1), watermark)
        self.chunks.extend(sorted(numbers.items()))
        self.pending = []

    def forget(self, number: int) -> None:
        self.seen = {h: v for h, v in self.seen.items() if v[2] != number}


@settings(max_examples=200)
@given(steps)
def test_index_behaves_as_the_plain_model(script):
    index, model = DedupIndex(HORIZON), Model()
    pos = watermark = 0
    for op, event, step in script:
        if op == "event":
            pos += 1
            watermark += step
            hashed = id_hash(f"e{event}")
            assert index.is_duplicate(f"e{event}", pos, watermark) == model.is_duplicate(
                hashed, pos, watermark
            )
        elif op == "seal":
            index.seal_batch()
            model.seal()
        elif op == "evict_oldest" and index.chunks:
            chunk = index.evict_oldest()
            number, _ = model.chunks.pop(0)
            model.forget(number)
            assert chunk is not None
        elif op == "evict_expired":
            for chunk in index.evict_expired(watermark):
                number, max_watermark = model.chunks.pop(0)
                assert chunk.max_watermark == max_watermark
                model.forget(number)
        assert {h: index.seen_at(h) for h in index.ids()} == {
            h: v[:2] for h, v in model.seen.items()
        }


@given(steps)
def test_a_restore_from_the_persisted_chunks_remembers_the_same(script):
    index = DedupIndex(HORIZON)
    persisted = {}
    pos = watermark = 0
    for op, event, step in script:
        if op == "event":
            pos += 1
            watermark += step
            index.is_duplicate(f"e{event}", pos, watermark)
        elif op in ("seal", "evict_oldest"):
            for chunk in index.seal_batch():  # as the changelog holds them
                persisted[chunk.first_pos] = encode_chunk(chunk.max_watermark, chunk.data)
            if op == "evict_oldest" and index.chunks:
                del persisted[index.evict_oldest().first_pos]
    for chunk in index.seal_batch():
        persisted[chunk.first_pos] = encode_chunk(chunk.max_watermark, chunk.data)
    restored = DedupIndex(HORIZON)
    for raw in reversed(list(persisted.values())):  # any order
        restored.load_chunk(*decode_chunk(raw))
    restored.sort_chunks()
    assert {h: restored.seen_at(h) for h in restored.ids()} == {
        h: index.seen_at(h) for h in index.ids()
    }
    assert [c.first_pos for c in restored.chunks] == [c.first_pos for c in index.chunks]


def test_a_batch_over_the_chunk_size_is_split(monkeypatch):
    monkeypatch.setattr(dedup, "MAX_CHUNK_ENTRIES", 3)
    index = DedupIndex(HORIZON)
    for pos in range(7):
        index.is_duplicate(f"id{pos}", pos, 0)
    sealed = index.seal_batch()
    assert [len(c.entries()) for c in sealed] == [3, 3, 1]
    assert [c.first_pos for c in sealed] == [0, 3, 6]


@given(
    st.integers(-1, 2**62),
    st.lists(st.tuples(st.integers(0, 2**64 - 1), st.integers(0, 2**62), st.integers(0, 2**62))),
)
def test_a_chunk_record_round_trips(max_watermark, entries):
    data = array("Q", [v for entry in entries for v in entry])
    raw = encode_chunk(max_watermark, data)
    assert len(raw) == 9 + 24 * len(entries)  # the JSON form took ~47 bytes an entry
    assert decode_chunk(raw) == (max_watermark, entries)


def test_chunks_written_as_json_before_are_still_read():
    entries = [[12345678901234567890, 17, 1_790_000_000_000], ["e-7", 18, 0]]  # and the first
    max_watermark, read = decode_chunk(orjson.dumps([1_790_000_000_000, entries]))
    assert (max_watermark, read) == (1_790_000_000_000, entries)
    index = DedupIndex(HORIZON)
    index.load_chunk(max_watermark, read)
    index.sort_chunks()
    assert index.seen_at(12345678901234567890) is not None


@pytest.mark.parametrize("raw", [b"\x02" + bytes(8), b"\x01" + bytes(8) + bytes(5)])
def test_a_malformed_chunk_is_refused(raw):
    with pytest.raises(ValueError, match="not a dedup chunk"):
        decode_chunk(raw)
